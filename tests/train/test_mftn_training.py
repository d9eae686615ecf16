"""MFTN-FER's training objective: lam * LSCE(out1) + (1 - lam) * LSCE(out2) (utils.py, --lam 0.45, epsilon 0.1),
against torch's `F.cross_entropy(label_smoothing=...)` in float64; evaluation uses the declared prediction."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest
import torch

from fer_jax import models, tasks
from fer_jax.errors import ConfigError


def test_two_head_loss_matches_torch_in_float64():
    rng = np.random.default_rng(0)
    out1, out2 = rng.standard_normal((2, 6, 7)) * 3
    labels = rng.integers(0, 7, 6)
    task = tasks.create(ml_collections.ConfigDict({"name": "two_heads"}))
    assert (task.heads, task.lam, task.label_smoothing) == (("out1", "out2"), 0.45, 0.1)  # upstream's values
    with jax.enable_x64(True):
        outputs = {"out1": jnp.asarray(out1), "out2": jnp.asarray(out2)}
        prediction = models.spec("mftn").predict(outputs)
        total, terms = task.loss(outputs, prediction, {"label": jnp.asarray(labels)}, {})
        correct, count = task.train_counts(prediction, {"label": jnp.asarray(labels)})
    ce = [torch.nn.functional.cross_entropy(torch.from_numpy(o), torch.from_numpy(labels), label_smoothing=0.1).item()
          for o in (out1, out2)]
    np.testing.assert_allclose([float(terms["lsce_out1"]), float(terms["lsce_out2"])], ce, rtol=1e-14)
    np.testing.assert_allclose(float(total), 0.45 * ce[0] + 0.55 * ce[1], rtol=1e-14)
    np.testing.assert_array_equal(np.asarray(prediction), out1 + out2)  # accuracy: argmax(out1 + out2)
    assert int(count) == 6 and int(correct) == int(np.sum(np.argmax(out1 + out2, -1) == labels))


@pytest.mark.parametrize("options, message", [({"lam": 1.5}, "lam 1.5 in"), ({"heads": ("out1",)}, "two output"),
                                              ({"label_smoothing": 1.0}, "label_smoothing 1.0 in")])
def test_bad_options_are_one_line(options, message):
    with pytest.raises(ConfigError, match=message):
        tasks.create(ml_collections.ConfigDict({"name": "two_heads", **options}))


RECIPES = {  # name: (lr, gamma, epochs, classes, erase, sampler) as main.py / main8.py set them
    "mftn_rafdb": (2.5e-4, 0.95, 100, 7, "erase(0.5,(0.02,0.1))", "shuffle"),
    "mftn_affectnet7": (2.5e-4, 0.95, 100, 7, "erase(1.0,(0.05,0.07))", "balanced"),
    "mftn_affectnet8": (2.5e-5, 0.98, 60, 8, "erase(1.0,(0.05,0.07))", "balanced"),
    "mftn_expw": (2.5e-4, 0.95, 100, 7, "erase(1.0,(0.05,0.07))", "balanced"),
}


@pytest.mark.parametrize("name", sorted(RECIPES))
def test_recipes_hold_upstreams_values(name):
    from conftest import load_recipe

    lr, gamma, epochs, classes, erase, sampler = RECIPES[name]
    c = load_recipe(name)
    assert (c.optimizer.name, c.optimizer.lr, c.optimizer.weight_decay, c.optimizer.sam_rho) == ("adam", lr, 0.0, 0.05)
    assert (c.schedule.name, c.schedule.gamma, c.num_epochs, c.batch_size) == ("exponential", gamma, epochs, 128)
    model = (c.model.name, c.model.num_classes, c.model.variant, c.model.drop_path_rate)
    assert model == ("mftn", classes, "base", 0.25)
    assert c.data.train_pp.endswith(erase) and c.data.sampler == sampler and c.data.class_order == "mftn"
    assert (c.task.name, c.task.lam, c.task.label_smoothing) == ("two_heads", 0.45, 0.1)


@pytest.mark.parametrize("name, dataset", [("mftn_rafdb", "rafdb"), ("mftn_affectnet8", "affectnet")])
def test_smoke_recipes_train_with_sam_and_evaluate(name, dataset, synthetic, tmp_path):
    """The smoke recipes train (SAM: two passes a step) and evaluate; as upstream, the never-called
    `mstn.branch` and the first block of every MsTN branch (drop-path 1.0: zero gradient, Adam without weight
    decay) keep their initial values exactly, while the second block of branch 0 moves."""
    import json

    from conftest import load_recipe
    from fer_jax import load_pretrained
    from fer_jax.train import state as state_lib
    from fer_jax.train.loop import train_and_evaluate

    c = load_recipe(name, "smoke")
    c.data.root = synthetic[dataset]
    result = train_and_evaluate(c, str(tmp_path), log=lambda *a: None)
    assert result["final"]["count"] > 0 and np.isfinite(result["final"]["loss"])
    train = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines() if '"train"' in line]
    assert {"lsce_out1", "lsce_out2"} <= set(train[-1])
    _, trained = load_pretrained(str(tmp_path / "best"))
    module = models.create("mftn", **{k: v for k, v in c.model.items() if k != "name"})
    start = state_lib.create(module, models.spec("mftn"), tasks.create(c.task), optim_tx(c), c.data.image_size,
                             seed=c.seed).params["model"]["mstn"]
    got = trained["params"]["mstn"]
    same = lambda a, b: all(np.array_equal(np.asarray(x), np.asarray(y))  # noqa: E731
                            for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)))
    assert same(got["branch"], start["branch"])
    for s in ("0", "1", "2"):
        assert same(got["branches"][s]["0"], start["branches"][s]["0"]), s
    assert not same(got["branches"]["0"]["1"], start["branches"]["0"]["1"])


def optim_tx(c):
    from fer_jax.train import optim

    return optim.build(c, 1, frozen=models.spec("mftn").frozen({}))[0]
