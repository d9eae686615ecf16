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
