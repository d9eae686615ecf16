"""Exact resumption: a run killed at any step and restarted with the same command ends with the same
parameters, batch statistics and optimizer state as an uninterrupted run."""

from __future__ import annotations

import os
import pathlib
import signal
import subprocess
import sys
import time

import jax
import numpy as np
import orbax.checkpoint as ocp
import pytest

from conftest import ROOT, load_recipe
from fer_jax.train.loop import train_and_evaluate


def final_state(workdir: pathlib.Path, step: int):
    with ocp.StandardCheckpointer() as c:
        return c.restore(str(workdir / "checkpoints" / str(step) / "state"))


def assert_identical(a, b):
    la, lb = jax.tree.leaves(a), jax.tree.leaves(b)
    assert len(la) == len(lb) > 0
    for x, y in zip(la, lb):
        np.testing.assert_array_equal(np.asarray(x), np.asarray(y))  # bitwise: same program, same inputs


def test_interrupted_in_process_equals_uninterrupted(synthetic, tmp_path):
    def config(steps):
        c = load_recipe("dan_rafdb", "smoke")
        c.data.root = synthetic["rafdb"]
        c.num_train_steps = steps
        return c

    quiet = dict(log=lambda *a: None)
    train_and_evaluate(config(6), str(tmp_path / "a"), **quiet)
    train_and_evaluate(config(4), str(tmp_path / "b"), **quiet)  # stops after step 4 ...
    train_and_evaluate(config(6), str(tmp_path / "b"), **quiet)  # ... and continues from checkpoint 4
    assert_identical(final_state(tmp_path / "a", 6), final_state(tmp_path / "b", 6))


@pytest.mark.slow
def test_killed_process_resumes_exactly(synthetic, tmp_path):
    cmd = [sys.executable, str(ROOT / "scripts" / "train.py"), "--config", str(ROOT / "configs" / "dan_rafdb.py:smoke"),
           f"--config.data.root={synthetic['rafdb']}", "--config.num_train_steps=10",
           "--config.checkpoint_every_steps=2", "--config.log_every_steps=1"]
    subprocess.run(cmd + ["--workdir", str(tmp_path / "a")], check=True, capture_output=True, timeout=600)

    b = tmp_path / "b"
    proc = subprocess.Popen(cmd + ["--workdir", str(b)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 300
    while not (b / "checkpoints" / "4").is_dir() and time.time() < deadline and proc.poll() is None:
        time.sleep(0.05)
    os.kill(proc.pid, signal.SIGKILL)  # mid-run, possibly mid-save
    proc.wait()
    assert (b / "checkpoints" / "4").is_dir() and not (b / "checkpoints" / "10").exists()
    r = subprocess.run(cmd + ["--workdir", str(b)], capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-2000:]
    assert "resuming:" in r.stdout
    assert_identical(final_state(tmp_path / "a", 10), final_state(b, 10))
