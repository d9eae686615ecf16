"""scripts/train.py as users meet it: overrides, refusals, init_from, bf16, a diverging run."""

from __future__ import annotations

import json
import re
import subprocess
import sys

import jax
import numpy as np
import pytest

from conftest import ROOT, load_recipe
from fer_jax import load_pretrained
from fer_jax.errors import ConfigError, DatasetError
from fer_jax.train.loop import TrainingError, train_and_evaluate

QUIET = {"log": lambda *a: None}


def cli(*args, cwd=None):
    return subprocess.run([sys.executable, str(ROOT / "scripts" / "train.py"), *map(str, args)], cwd=cwd,
                          capture_output=True, text=True, timeout=600)


def one_line_error(r: subprocess.CompletedProcess) -> str:
    assert r.returncode != 0
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), r.stderr
    return lines[0]


def test_unknown_config_key_and_missing_dataset_are_one_line(tmp_path):
    line = one_line_error(cli("--config", ROOT / "configs" / "dan_rafdb.py:smoke", "--workdir", tmp_path / "w",
                              "--config.bath_size=8"))
    assert "bath_size" in line
    line = one_line_error(cli("--config", ROOT / "configs" / "dan_rafdb.py:smoke", "--workdir", tmp_path / "w",
                              f"--config.data.root={tmp_path / 'nowhere'}"))
    assert "RAF-DB" in line and "EmoLabel/list_patition_label.txt" in line
    assert not (tmp_path / "w").exists()  # nothing written for a run that cannot start
    line = one_line_error(cli("--config", ROOT / "configs" / "dan_rafdb.py:fast", "--workdir", tmp_path / "w"))
    assert "unknown recipe variant 'fast'" in line


@pytest.mark.parametrize("key, value, message", [
    ("parallel", "pmapp", "parallel='pmapp': use one of jit, pmap"),
    ("optimizer.name", "lamb", "unknown optimizer.name 'lamb'"),
    ("best_metric", "top5", "best_metric='top5' is not an evaluation metric"),
    ("data.device_prefetch", -1, "data.device_prefetch=-1 must be a non-negative integer"),
])
def test_bad_values_are_config_errors(synthetic, tmp_path, key, value, message):
    c = load_recipe("dan_rafdb", "smoke")
    c.data.root = synthetic["rafdb"]
    section, _, name = key.rpartition(".")
    (c[section] if section else c)[name] = value
    with pytest.raises(ConfigError, match=message):
        train_and_evaluate(c, str(tmp_path), **QUIET)


def test_model_hyperparameters_are_checked(synthetic, tmp_path):
    c = load_recipe("dan_rafdb", "smoke")
    c.data.root = synthetic["rafdb"]
    c.model.num_class = 8
    with pytest.raises(ConfigError, match="model.num_class=8 but the rafdb train split has 7 classes"):
        train_and_evaluate(c, str(tmp_path / "w"), **QUIET)
    assert not (tmp_path / "w").exists()  # refused before anything was written
    c.data.root = str(tmp_path / "missing")
    with pytest.raises(DatasetError):
        train_and_evaluate(c, str(tmp_path), **QUIET)


def finite_checkpoints(workdir) -> list[int]:
    """Steps of the checkpoints in `workdir`, asserting that every value they hold is finite."""
    import orbax.checkpoint as ocp

    steps = sorted(int(p.name) for p in (workdir / "checkpoints").iterdir() if p.name.isdigit())
    for step in steps:
        with ocp.StandardCheckpointer() as ckptr:
            state = ckptr.restore(str(workdir / "checkpoints" / str(step) / "state"))
        leaves = [np.asarray(a) for a in jax.tree.leaves(state)]
        assert all(np.isfinite(a).all() for a in leaves if np.issubdtype(a.dtype, np.floating)), step
    return steps


def test_non_finite_state_is_never_saved_and_the_restart_continues(synthetic, tmp_path):
    c = load_recipe("dan_rafdb", "smoke")
    c.data.root = synthetic["rafdb"]
    c.num_train_steps, c.log_every_steps, c.checkpoint_every_steps = 12, 1, 2
    # A sane first epoch (6 steps of 8 images), then lr 1e-3 * 1e14: training blows up in epoch 2.
    c.optimizer.lr = 1e-3
    c.schedule.update(name="step", step_epochs=1, gamma=1e14)
    with pytest.raises(TrainingError) as info:
        train_and_evaluate(c, str(tmp_path), **QUIET)
    m = re.match(r"(the parameters or optimizer state|loss) became non-finite .*by step (\d+); stopped.*; the last "
                 r"finite checkpoint is step (\d+) in (.*): run the same command with a lower "
                 r"--config.optimizer.lr \(now 0.001\) to continue from it", str(info.value))
    assert m, str(info.value)
    bad, good = int(m[2]), int(m[3])
    assert m[4] == str(tmp_path / "checkpoints")
    assert 7 <= bad <= 12 and good == (bad - 1) // 2 * 2  # the last even (checkpointed) step before it
    assert finite_checkpoints(tmp_path) == [good - 2, good]  # keep_checkpoints=2, nothing non-finite saved

    # The restart the message describes: the same workdir, a changed learning rate, from checkpoint `good`.
    c.optimizer.lr = 1e-4
    c.schedule.update(name="constant")
    logs = []
    result = train_and_evaluate(c, str(tmp_path), log=logs.append)
    assert f"resuming: {tmp_path / 'checkpoints'}/{good} (epoch 1)" in logs
    assert result["start"] == good and np.isfinite(result["final"]["loss"])
    assert finite_checkpoints(tmp_path)[-1] == 12
    rows = [json.loads(l) for l in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    train_steps = [r["step"] for r in rows if r["split"] == "train"]
    assert train_steps == list(range(1, 13))  # the failed run's rows after `good` were dropped, none repeated
    assert all(np.isfinite(r["loss"]) for r in rows if r["split"] == "train" and r["step"] > good)


def test_init_from_converted_msceleb_backbone(synthetic, tmp_path):
    """The recipe's init_from path: a converted MS-Celeb ResNet18 starts DAN (fc dropped, heads at init)."""
    import torch_helpers
    from porting import convert

    ckpt = tmp_path / "resnet18_msceleb.pth"
    torch_helpers.save_msceleb(torch_helpers.random_resnet18(1000, seed=5), ckpt)
    convert.convert(str(ckpt), str(tmp_path / "r18"), verify_outputs=False, log=lambda *a: None)
    c = load_recipe("dan_rafdb", "smoke")
    c.data.root = synthetic["rafdb"]
    c.init_from = str(tmp_path / "r18")
    c.num_train_steps = 2
    logs = []
    train_and_evaluate(c, str(tmp_path / "w"), log=logs.append)
    line = next(l for l in logs if l.startswith("init_from"))
    assert "60 params, 40 batch stats" in line and "2 source entries dropped on request (params/fc/bias" in line
    assert "134 variables left at init" in line
    c.init_from = str(tmp_path / "nowhere")
    with pytest.raises(Exception, match="no converted model at"):
        train_and_evaluate(c, str(tmp_path / "w2"), **QUIET)


def test_bfloat16_compute_keeps_float32_parameters(synthetic, tmp_path):
    c = load_recipe("dan_rafdb", "smoke")
    c.data.root = synthetic["rafdb"]
    c.compute_dtype = "bfloat16"
    result = train_and_evaluate(c, str(tmp_path), **QUIET)
    assert np.isfinite(result["final"]["loss"])
    _, variables = load_pretrained(str(tmp_path / "best"))
    assert {np.asarray(v).dtype for v in jax.tree.leaves(variables)} == {np.dtype("float32")}
    lines = [json.loads(l) for l in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert all(np.isfinite(l["loss"]) for l in lines if l["split"] == "train")
