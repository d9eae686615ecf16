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
