"""FERAtt's recipes: every file and variant resolves to upstream's values and builds its task and optimizer;
the smoke variants train and evaluate on synthetic CK+ / BU-3DFE composites through the training loop, the
trained model is evaluated on the real faces (eval.py's path); the baseline's CPU variant learns (slow tier).

Timing (2 shared cores): one FERAtt smoke run costs ~50-70 s (46M parameters: eager init ~20 s, train-step
compile ~20 s, finiteness check and checkpoint ~10 s), so the fast tier runs FERAtt+Cls on CK+ and the
baseline; BU-3DFE (another class count) and FERAtt+Rep (another network) are in the slow tier. No test shows
a CPU variant learning: measured here, the baseline's stays at chance for 256 steps (8 epochs of 1,024
composites, ~4.5 min), and PreActResNet18 from scratch needs ~100 steps to start fitting even 256 clean
faces, so no learning test fits the ~2 min a slow test may take."""

from __future__ import annotations

import json

import numpy as np
import pytest

from conftest import load_recipe
from fer_jax import data, load_pretrained, tasks
from fer_jax.data import make_synthetic
from fer_jax.evaluate.run import evaluate_model
from fer_jax.train import config as config_lib
from fer_jax.train import optim
from fer_jax.train.loop import train_and_evaluate

FERATT = ("feratt_ck", "feratt_bu3dfe", "feratt_rep_ck")
RECIPES = FERATT + ("feratt_baseline_ck",)
VARIANTS = (None, "smoke", "cpu", "eval_real", "eval_synthetic")


@pytest.mark.parametrize("name, variant", [(n, v) for n in RECIPES for v in VARIANTS
                                           if not (n == "feratt_baseline_ck" and v == "eval_synthetic")])
def test_recipe_resolves(name, variant):
    c = load_recipe(name, variant)
    config_lib.validate(c)
    task = tasks.create(c.task)
    optim.build(c, steps_per_epoch=10, frozen=("attention_map.encoder.fc",))
    assert c.optimizer.name == "adam" and c.optimizer.amsgrad and c.optimizer.weight_decay == 0.0
    assert c.optimizer.betas == (0.9, 0.999) and c.optimizer.eps == 1e-8 and c.seed == 1
    assert c.best_metric == "accuracy"
    assert c.data.options.kfold == 0 and c.data.options.nactor == 10
    if variant is None and name in FERATT:  # runs/train_ck.sh, train_bu3dfe.sh, train.sh
        assert (c.optimizer.lr, c.schedule.name, c.batch_size, c.num_epochs) == (1e-4, "constant", 32, 500)
        assert c.data.train_options.count == 288_000 and c.data.eval_options.count == 2_880
        assert c.data.train_options.count // c.batch_size == 9_000  # steps per "epoch"
        assert c.data.image_size == 64 and c.data.train_pp == c.data.eval_pp == "feratt_compose(64)|to_float"
        assert c.data.name == ("bu3dfe_synthetic" if "bu3dfe" in name else "ck_synthetic")
        assert c.data.options.backgrounds == "coco"
        assert c.model.num_classes == (7 if "bu3dfe" in name else 8)
        rep = name == "feratt_rep_ck"
        assert isinstance(task, tasks.FERAtt) and (task.dgmm, task.scale_by_batch, task.mixup) == (rep, not rep, True)
        assert c.model.name == ("feratt_rep" if rep else "feratt") and (not rep or c.model.dim == 32)
    if variant is None and name == "feratt_baseline_ck":  # pytorch-classification runs/train-fer-synthetic.sh
        assert (c.model.name, c.data.image_size, c.batch_size, c.num_epochs) == ("preactresnet18", 32, 128, 500)
        assert (c.schedule.name, c.schedule.step_epochs, c.schedule.gamma) == ("step", 100, 0.1)
        assert type(task) is tasks.Classification  # plain CE, no x batch size, no attention loss
        assert (c.data.options.angle, c.data.options.translation, c.data.options.warp) == (45.0, 0.3, 0.2)
        assert c.data.train_options.count == 100_000 and c.data.eval_options.count == 10_000
    if variant == "eval_real":  # eval.py: the stored faces, squashed, gray, [0, 1]
        assert c.data.name == ("bu3dfe" if "bu3dfe" in name else "ck") and c.data.options.crop == "none"
        assert c.data.eval_pp.startswith(f"cv_resize({c.data.image_size})|gray|to_float")
    if variant == "eval_synthetic":
        assert c.data.eval_options.to_dict() == {"count": 2_000, "sampling": "sequential", "angle": 45.0,
                                                 "translation": 0.3, "warp": 0.2, "factor": 0.2}


@pytest.fixture(scope="module")
def roots(tmp_path_factory):
    """Synthetic CK+ / BU-3DFE in the authors' .mat layout, with a background folder in each root."""
    base = tmp_path_factory.mktemp("feratt")
    out = {}
    for layout in ("ck", "bu3dfe"):
        out[layout] = make_synthetic(layout, str(base / layout), num_train=16, num_test=10, seed=2)
        make_synthetic("backgrounds", str(base / layout / "coco"), num_train=4, num_test=1, seed=2)
    return out


def train_smoke(name: str, roots: dict, workdir) -> tuple:
    c = load_recipe(name, "smoke")
    c.data.root = roots["bu3dfe" if "bu3dfe" in name else "ck"]
    result = train_and_evaluate(c, str(workdir), log=lambda *a: None)
    lines = [json.loads(l) for l in (workdir / "metrics.jsonl").read_text().splitlines()]
    return c, result, lines


def check_feratt_run(c, result, lines, workdir) -> None:
    final = result["final"]
    assert final["count"] == 8 and sum(map(sum, final["confusion"])) == 8  # every held-out composite once
    for key in ("accuracy", "precision", "recall", "f1"):  # the paper's table columns
        assert 0.0 <= final[key] <= 1.0
    # validation logs CE + attention loss against the composites' clean faces, as upstream's does
    assert final["loss"] == pytest.approx(final["ce"] + final["att"], rel=1e-6) and final["att"] > 0
    train = [l for l in lines if l["split"] == "train"]
    assert [l["step"] for l in train] == [1, 2]
    expected = {"loss", "ce", "att", "lr"} | ({"dgmm"} if c.task.dgmm else set())
    assert expected <= set(train[-1]) and all(np.isfinite(l["loss"]) for l in train)
    assert train[-1]["loss"] == pytest.approx(train[-1]["ce"] + train[-1]["att"] + train[-1].get("dgmm", 0.0),
                                              rel=1e-5)  # the logged loss is the plain one, not x batch
    assert {"precision", "recall", "f1"} <= set(next(l for l in lines if l["split"] == "test"))
    module, _ = load_pretrained(str(workdir / "best"))
    assert module.num_classes == c.model.num_classes


def test_feratt_ck_smoke_trains_and_evaluates_on_real_faces(roots, tmp_path):
    """FERAtt+Cls on CK+ composites through the training loop; then eval.py's path: the trained model on
    the real held-out faces (crop "none", cv_resize(64)|gray|to_float) through scripts/evaluate.py's call."""
    c, result, lines = train_smoke("feratt_ck", roots, tmp_path / "run")
    check_feratt_run(c, result, lines, tmp_path / "run")
    real = load_recipe("feratt_ck", "eval_real")
    real.data.root = roots["ck"]
    report = evaluate_model(str(tmp_path / "run" / "best"), real, out_dir=str(tmp_path / "report"),
                            log=lambda *a: None)
    held_out = data.create_source("ck", roots["ck"], "test", crop="none", kfold=0, nactor=10)
    assert report["count"] == len(held_out) == 10 and "att" not in report  # no clean face: CE only
    assert report["loss"] == pytest.approx(report["ce"]) and 0.0 <= report["f1"] <= 1.0
    saved = json.loads((tmp_path / "report" / "report.json").read_text())
    assert saved["dataset"] == "ck" and {"precision", "recall", "f1"} <= set(saved)


def test_baseline_smoke_trains_on_composites_at_32px(roots, tmp_path):
    c, result, lines = train_smoke("feratt_baseline_ck", roots, tmp_path)
    assert result["final"]["count"] == 8 and np.isfinite(result["final"]["loss"])
    train = [l for l in lines if l["split"] == "train"]
    assert [l["step"] for l in train] == [1, 2] and "att" not in train[-1]
    meta = json.loads((tmp_path / "best" / "fer_jax.json").read_text())
    assert meta["arch"] == "preactresnet18" and meta["trained"]["image_size"] == 32


@pytest.mark.slow
@pytest.mark.parametrize("name", ["feratt_bu3dfe", "feratt_rep_ck"])
def test_other_feratt_smoke_recipes(name, roots, tmp_path):
    c, result, lines = train_smoke(name, roots, tmp_path)
    check_feratt_run(c, result, lines, tmp_path)
    assert len(result["final"]["confusion"]) == c.model.num_classes
