"""Every recipe file runs a few steps of its smoke variant on synthetic data in the official layout."""

from __future__ import annotations

import json

import numpy as np
import pytest

from conftest import load_recipe
from fer_jax import data, load_pretrained
from fer_jax.train.loop import train_and_evaluate

RECIPES = {"dan_rafdb": "rafdb", "dan_affectnet7": "affectnet", "dan_affectnet8": "affectnet"}


@pytest.mark.parametrize("recipe", list(RECIPES))
def test_recipe_smoke(recipe, synthetic, tmp_path):
    c = load_recipe(recipe, "smoke")
    c.data.root = synthetic[RECIPES[recipe]]
    result = train_and_evaluate(c, str(tmp_path), log=lambda *a: None)
    held_out = data.create_source(c.data.name, c.data.root, c.data.eval_split, **c.data.options.to_dict())
    assert result["final"]["count"] == len(held_out) > 0  # every held-out image evaluated exactly once
    lines = [json.loads(l) for l in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    train = [l for l in lines if l["split"] == "train"]
    assert [l["step"] for l in train] == [2, 4] and all(np.isfinite(l["loss"]) for l in train)
    assert {"ce", "affinity", "partition", "lr", "images_per_second"} <= set(train[-1])
    assert sorted(p.name for p in (tmp_path / "checkpoints").iterdir()) == ["2", "4"]
    assert list((tmp_path / "tensorboard").iterdir())
    config = json.loads((tmp_path / "config.json").read_text())
    assert config["model"]["num_class"] == c.model.num_class
    module, variables = load_pretrained(str(tmp_path / "best"))
    assert module.num_class == c.model.num_class


FAN_RECIPES = {"fan_afew_relation": "afew", "fan_afew_self": "afew", "fan_ckplus": "ckplus",
               "fan_afew_baseline": "afew", "fan_ckplus_baseline": "ckplus"}


@pytest.mark.parametrize("recipe", list(FAN_RECIPES))
def test_emotion_fan_recipe_smoke(recipe, synthetic, tmp_path):
    """Trains on frame groups (or frames, for the baselines) and evaluates every video at video level."""
    c = load_recipe(recipe, "smoke")
    c.data.root = synthetic[FAN_RECIPES[recipe]]
    result = train_and_evaluate(c, str(tmp_path), log=lambda *a: None)
    held_out = data.create_source(c.data.name, c.data.root, c.data.eval_split,
                                  **{**c.data.options.to_dict(), "unit": "frame"})
    final = result["final"]
    assert final["count"] == held_out.num_videos == 7 and final["frames"] == len(held_out)
    assert sum(map(sum, final["confusion"])) == 7 and np.isfinite(final["loss"])
    train = [json.loads(l) for l in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert [l["step"] for l in train if l["split"] == "train"] == [2, 4]
    meta = json.loads((tmp_path / "best" / "fer_jax.json").read_text())
    assert meta["arch"] == c.model.name and meta["trained"]["task"] == "multiclass"


def test_multilabel_celeba_trains_and_reports_mean_attribute_accuracy(tmp_path):
    """The CelebA path of the training system (FAER's recipes build on it): 40 binary attributes, BCE,
    mean attribute accuracy from per-attribute sums."""
    from fer_jax.data import make_synthetic
    from fer_jax.train import config as config_lib

    root = make_synthetic("celeba", str(tmp_path / "celeba"), num_train=24, num_test=10, seed=1)
    c = config_lib.base()
    c.model.name, c.model.num_classes = "resnet18", 40
    c.task.name = "multilabel"
    c.data.update(name="celeba", root=root, train_split="train", eval_split="test", image_size=32,
                  train_pp="resize(32,32)|hflip(0.5)|to_float|normalize('imagenet')",
                  eval_pp="resize(32,32)|to_float|normalize('imagenet')")
    c.optimizer.update(name="adamw", lr=1e-3, weight_decay=0.01)
    c.batch_size, c.num_train_steps, c.log_every_steps = 8, 3, 1
    c.best_metric = "mean_attribute_accuracy"
    result = train_and_evaluate(c, str(tmp_path / "run"), log=lambda *a: None)
    m = result["final"]
    assert m["count"] == 10 and len(m["per_attribute_accuracy"]) == 40
    assert 0.0 <= m["mean_attribute_accuracy"] <= 1.0 and "Smiling" in m["per_attribute_accuracy"]
    lines = [json.loads(l) for l in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert {l["split"] for l in lines} == {"train", "train_epoch", "test"}
    assert all(0.0 <= l["accuracy"] <= 1.0 for l in lines if l["split"] == "train")  # per decision
