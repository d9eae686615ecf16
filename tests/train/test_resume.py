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


STEPS = 10
FLAGS = [f"--config.num_train_steps={STEPS}", "--config.checkpoint_every_steps=2", "--config.log_every_steps=1"]


def train_cmd(root: str, workdir: pathlib.Path) -> list[str]:
    return [sys.executable, str(ROOT / "scripts" / "train.py"), "--config",
            str(ROOT / "configs" / "dan_rafdb.py:smoke"), f"--config.data.root={root}", *FLAGS,
            "--workdir", str(workdir)]


@pytest.fixture(scope="module")
def cli(tmp_path_factory):
    """Runs train.py like a user; the runs of this module share XLA's persistent compilation cache (the
    same program compiles once; a cached executable is the compiled program itself, so results are
    bit-identical)."""
    cache = tmp_path_factory.mktemp("xla_cache")
    env = {**os.environ, "JAX_COMPILATION_CACHE_DIR": str(cache), "JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS": "0"}

    def run(args: list[str], wait: bool = True):
        if not wait:
            return subprocess.Popen(args, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        return subprocess.run(args, env=env, capture_output=True, text=True, timeout=600)

    return run


@pytest.fixture(scope="module")
def uninterrupted(synthetic, tmp_path_factory, cli):
    """The reference: the CLI's uninterrupted run of STEPS steps, final state."""
    workdir = tmp_path_factory.mktemp("uninterrupted")
    r = cli(train_cmd(synthetic["rafdb"], workdir))
    assert r.returncode == 0, r.stderr[-2000:]
    return final_state(workdir, STEPS)


def test_interrupted_in_process_equals_uninterrupted(synthetic, uninterrupted, tmp_path):
    """The training loop called twice in one process (stopping after step 4, then continuing to the end)
    ends bit-identical to the CLI's uninterrupted run of the same config."""
    def config(steps):
        c = load_recipe("dan_rafdb", "smoke")
        c.data.root = synthetic["rafdb"]
        c.num_train_steps, c.checkpoint_every_steps, c.log_every_steps = steps, 2, 1
        return c

    quiet = dict(log=lambda *a: None)
    train_and_evaluate(config(4), str(tmp_path / "b"), **quiet)  # stops after step 4 ...
    train_and_evaluate(config(STEPS), str(tmp_path / "b"), **quiet)  # ... and continues from checkpoint 4
    assert_identical(uninterrupted, final_state(tmp_path / "b", STEPS))


@pytest.mark.slow
def test_killed_process_resumes_exactly(synthetic, uninterrupted, cli, tmp_path):
    b = tmp_path / "b"
    cmd = train_cmd(synthetic["rafdb"], b)
    proc = cli(cmd, wait=False)
    deadline = time.time() + 300
    while not (b / "checkpoints" / "4").is_dir() and time.time() < deadline and proc.poll() is None:
        time.sleep(0.05)
    os.kill(proc.pid, signal.SIGKILL)  # mid-run, possibly mid-save
    proc.wait()
    assert (b / "checkpoints" / "4").is_dir() and not (b / "checkpoints" / str(STEPS)).exists()
    r = cli(cmd)
    assert r.returncode == 0, r.stderr[-2000:]
    assert "resuming:" in r.stdout
    assert_identical(uninterrupted, final_state(b, STEPS))


def test_only_finite_states_are_saved_or_restored(tmp_path):
    """`all_finite` reads every floating-point leaf (integer leaves such as the step are not values to check);
    a checkpoint that holds a non-finite value (saved by an older version) is refused on restore."""
    import ml_dtypes

    from fer_jax.errors import CheckpointError
    from fer_jax.train import checkpoints

    state = {"step": np.int32(3), "params": {"w": np.ones((2, 3), np.float32)},
             "opt_state": (np.zeros(4, np.float32), {"nu": np.ones(2, ml_dtypes.bfloat16)})}
    assert checkpoints.all_finite(state)
    leaves, treedef = jax.tree.flatten(state)
    for bad in (np.nan, np.inf, -np.inf):
        for i in (i for i, leaf in enumerate(leaves) if leaf.dtype != np.int32):  # the three floating-point leaves
            changed = [np.array(leaf) for leaf in leaves]
            changed[i].flat[-1] = bad
            assert not checkpoints.all_finite(jax.tree.unflatten(treedef, changed)), (bad, i)
    ckpts = checkpoints.Checkpoints(str(tmp_path), keep=2)
    ckpts.save(1, state, {"epoch": 1})
    nan = jax.tree.map(np.array, state)
    nan["params"]["w"][1, 2] = np.nan
    ckpts.save(2, nan, {"epoch": 1})
    ckpts.close()
    reader = checkpoints.Checkpoints(str(tmp_path), keep=1, read_only=True)
    try:
        restored, record = reader.restore(1, state)
        assert record == {"epoch": 1} and np.array_equal(restored["params"]["w"], state["params"]["w"])
        with pytest.raises(CheckpointError, match=r"checkpoints/2 holds non-finite values"):
            reader.restore(2, state)
    finally:
        reader.close()
