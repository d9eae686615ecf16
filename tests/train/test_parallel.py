"""Data parallelism: 4 simulated devices == 1 device on the same global batch, for pmap and jit."""

from __future__ import annotations

import json
import os
import pathlib
import subprocess
import sys

import pytest

HERE = pathlib.Path(__file__).parent


@pytest.mark.slow
def test_four_devices_equal_one_device():
    env = {**os.environ, "XLA_FLAGS": "--xla_force_host_platform_device_count=4", "JAX_PLATFORMS": "cpu"}
    r = subprocess.run([sys.executable, str(HERE / "parallel_check.py")], env=env, capture_output=True, text=True,
                       timeout=900)
    assert r.returncode == 0, r.stderr[-3000:]
    results = json.loads(r.stdout.strip().splitlines()[-1])
    assert results["devices"] == 4
    for key, diffs in results.items():
        if key == "devices":
            continue
        # float64 on both sides: a semantic difference (missing pmean, per-device BatchNorm statistics,
        # double-counted gradients) shows at >= 1e-4; rounding stays near 1e-13 of the update scale.
        bound = 1e-10 * max(1.0, diffs["scale"])
        assert max(diffs["loss"], diffs["params"], diffs["batch_stats"], diffs["opt_state"]) <= bound, (key, diffs)
