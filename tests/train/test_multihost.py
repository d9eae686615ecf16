"""Multi-host training through the real entry point: 2 processes on loopback (jax.distributed, 1 CPU
device each) train like 1 process with 2 devices on the same global batches.

Each process feeds rows [p*b, (p+1)*b) of every global batch, so the global array has the same rows in
the same order as in one process, and both runs execute the same 2-device program. Every cross-device
sum then has exactly two operands, and a + b == b + a in IEEE arithmetic, so the two runs agree bit for
bit whatever the collectives' implementation (measured: 0.0 for loss, BatchNorm statistics and parameters,
jit and pmap alike). The bound below leaves 1e-6 of relative room; a sharding bug (a process training on
the wrong rows, unsynchronised statistics) moves the forward quantities by >= 1e-2. Exact multi-step
equality of the parallel step is proven in float64 by test_parallel.py (~1e-13).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import jax
import numpy as np
import orbax.checkpoint as ocp
import portpicker
import pytest

from conftest import ROOT


def train(workdir, root, parallel, processes, devices=1):
    cmd = [sys.executable, str(ROOT / "scripts" / "train.py"), "--config", str(ROOT / "configs" / "dan_rafdb.py:smoke"),
           f"--config.data.root={root}", f"--config.parallel={parallel}", "--config.num_train_steps=1",
           "--workdir", str(workdir)]
    env = {**os.environ, "JAX_PLATFORMS": "cpu"}
    if processes == 1:
        env["XLA_FLAGS"] = f"--xla_force_host_platform_device_count={devices}"
        procs = [subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)]
    else:
        port = portpicker.pick_unused_port()
        procs = [subprocess.Popen(cmd + [f"--config.distributed.coordinator_address=127.0.0.1:{port}",
                                         f"--config.distributed.num_processes={processes}",
                                         f"--config.distributed.process_id={i}"],
                                  env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
                 for i in range(processes)]
    outputs = [p.communicate(timeout=600) for p in procs]
    for p, (_, err) in zip(procs, outputs):
        assert p.returncode == 0, err[-2000:]
    return outputs


def final(workdir):
    with ocp.StandardCheckpointer() as c:
        state = c.restore(str(workdir / "checkpoints" / "1" / "state"))
    first = json.loads((workdir / "metrics.jsonl").read_text().splitlines()[0])
    return {"loss": np.float64(first["loss"]), "batch_stats": state["batch_stats"], "params": state["params"]}


def rel_diff(a, b) -> float:
    def diff(x, y):
        x, y = np.asarray(x, np.float64), np.asarray(y, np.float64)
        return float(np.max(np.abs(x - y)) / max(1.0, np.max(np.abs(y)))) if x.size else 0.0

    return max(jax.tree.leaves(jax.tree.map(diff, a, b)))


@pytest.mark.slow
def test_two_processes_equal_one_process(synthetic, tmp_path):
    """The CLI's distributed path with the default `parallel="jit"`; pmap across processes is proven in
    float64 by test_parallel.py's 2 processes x 2 devices."""
    parallel, root = "jit", synthetic["rafdb"]
    ref = final(train(tmp_path / "two_devices", root, parallel, 1, devices=2) and tmp_path / "two_devices")
    outputs = train(tmp_path / "two_processes", root, parallel, 2)
    assert "done:" in outputs[0][0] and "epoch" not in outputs[1][0]  # process 1 leaves reporting to 0
    multi = final(tmp_path / "two_processes")
    for part in ("loss", "batch_stats", "params"):
        got = rel_diff(multi[part], ref[part])
        print(f"{parallel} {part}: two processes vs one process of two devices {got:.2e}")
        assert got <= 1e-6, (part, got)  # bit-equal by construction (module docstring)
