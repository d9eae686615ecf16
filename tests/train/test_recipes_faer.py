"""FAER's recipes: every file and variant resolves to upstream's (or the paper's) values and builds its task
and optimizer; the smoke variants of the three kinds (CelebA with FAER's parameter groups, the ConvNeXt
baseline, expressions with the center loss) train and evaluate on synthetic data; the CPU variant learns
synthetic CelebA (slow tier)."""

from __future__ import annotations

import json

import jax
import numpy as np
import pytest

from conftest import load_recipe
from fer_jax import load_pretrained, tasks
from fer_jax.data import create_source, make_synthetic, synthetic as synthetic_data
from fer_jax.train import config as config_lib
from fer_jax.train import optim
from fer_jax.train.loop import train_and_evaluate

RECIPES = ("faer_celeba", "faer_baseline_celeba", "faer_rafdb", "faer_affectnet", "faer_baseline_rafdb",
           "faer_baseline_affectnet")


@pytest.mark.parametrize("name, variant", [(n, v) for n in RECIPES for v in (None, "paper", "cpu", "smoke")
                                           if v != "paper" or "celeba" in n])  # expressions: the paper's already
def test_recipe_resolves(name, variant):
    c = load_recipe(name, variant)
    config_lib.validate(c)
    task = tasks.create(c.task)
    tx, schedules = optim.build(c, steps_per_epoch=10)
    assert c.optimizer.name == "adamw" and c.optimizer.weight_decay == 0.01
    faer = c.model.name == "faer"
    assert isinstance(schedules, dict) == faer  # FAER: backbone and new-layer groups, the final norm in neither
    if variant is None:
        assert c.model.variant == "base" and c.model.drop_path_rate == 0.25 and c.data.image_size == 224
        expected = {"faer_celeba": (2.5e-4, 35, 128, "bce_clamp"), "faer_baseline_celeba": (1e-3, 25, 256, "focal")}
        if name in expected:
            assert (c.optimizer.lr, c.num_epochs, c.batch_size, task.loss_name) == expected[name]
            assert c.schedule.name == "cosine" and c.schedule.min_lr_ratio == 1e-6
        else:  # the paper's expression recipe
            assert (c.optimizer.lr, c.schedule.name, c.schedule.gamma, c.batch_size) == (2.5e-4, "exponential", 0.95,
                                                                                          256)
            assert c.num_epochs == (120 if "rafdb" in name else 60) and c.data.class_order == "alphabetical"
            assert (task.weight, task.feat_dim) == (0.01, 1024) if faer else c.task.name == "classification"
    if variant == "paper":
        assert (c.optimizer.lr, c.schedule.gamma, c.num_epochs, task.loss_name) == (1e-3, 0.95, 60, "focal_paper")


@pytest.fixture(scope="module")
def roots(tmp_path_factory):
    base = tmp_path_factory.mktemp("faer")
    return {"celeba": make_synthetic("celeba", str(base / "celeba"), num_train=16, num_test=8, seed=2),
            "rafdb": make_synthetic("rafdb", str(base / "rafdb"), num_train=24, num_test=10, seed=2, image_size=32)}


@pytest.mark.parametrize("name, dataset", [("faer_celeba", "celeba"), ("faer_baseline_celeba", "celeba"),
                                           ("faer_rafdb", "rafdb")])
def test_smoke_recipes_train_and_evaluate(name, dataset, roots, tmp_path):
    c = load_recipe(name, "smoke")
    c.data.root = roots[dataset]
    result = train_and_evaluate(c, str(tmp_path), log=lambda *a: None)
    final = result["final"]
    assert final["count"] == (8 if dataset == "celeba" else 10) and np.isfinite(final["loss"])
    train = [json.loads(l) for l in (tmp_path / "metrics.jsonl").read_text().splitlines() if '"train"' in l]
    last = train[-1]
    if c.model.name == "faer":
        # the learning rate of each group logged (equal: upstream's schedule sets every group to one rate)
        assert last["lr/backbone"] == last["lr/new"] > 0 and "lr" not in last
    if name == "faer_rafdb":
        assert {"ce", "center"} <= set(last)
    module, variables = load_pretrained(str(tmp_path / "best"))
    # the final LayerNorm is in neither of FAER's groups: never updated (upstream's AdamW never sees it)
    init = jax.tree.map(np.asarray, variables["params"]["norm"])
    if c.model.name == "faer":
        np.testing.assert_array_equal(init["scale"], np.ones_like(init["scale"]))
        np.testing.assert_array_equal(init["bias"], np.zeros_like(init["bias"]))
    if dataset == "celeba":
        assert (tmp_path / "best" / "per_attribute_accuracy.png").is_file()


@pytest.mark.slow
def test_faer_cpu_recipe_learns_synthetic_celeba(tmp_path):
    """The attributes the generator draws (hair, glasses, beard, ...) are learnt beyond what predicting each
    one's majority value gives; the undrawn ones are coin flips. Measured: after 3 epochs of 640 images
    (~40 s) drawn 0.72 against a majority baseline of 0.61, Male 1.00 (majority 0.51); over training seeds 0-3
    drawn 0.711-0.723 and undrawn 0.497-0.519 (2026-12-05). After 4 epochs of 1000 images drawn 0.77, undrawn
    0.50."""
    root = make_synthetic("celeba", str(tmp_path / "celeba"), num_train=640, num_test=160, seed=5)
    c = load_recipe("faer_celeba", "cpu")
    c.data.root = root
    c.num_epochs = 3
    result = train_and_evaluate(c, str(tmp_path / "run"), log=lambda *a: None)
    per = result["final"]["per_attribute_accuracy"]
    train, test = (np.asarray(create_source("celeba", root, split).labels) for split in ("train", "test"))
    majority = dict(zip(per, (test == (train.mean(0) > 0.5)).mean(0)))
    drawn = list(synthetic_data.CELEBA_DRAWN)
    ours = np.mean([per[k] for k in drawn])
    baseline = np.mean([majority[k] for k in drawn])
    assert ours >= baseline + 0.08 and per["Male"] >= 0.9 and per["Male"] >= majority["Male"] + 0.3, (ours, baseline, per)
    assert abs(np.mean([v for k, v in per.items() if k not in drawn]) - 0.5) < 0.08
