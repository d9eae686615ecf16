"""fer_jax BatchNorm == torch BatchNorm{1,2}d: eval, train, and the running-statistics update."""

from __future__ import annotations

import jax
import numpy as np
import pytest
import torch

from fer_jax.models.layers import BatchNorm


@pytest.mark.parametrize("shape", [(6, 5, 7, 3), (9, 4)])  # NHWC BatchNorm2d, NC BatchNorm1d
def test_batchnorm_matches_torch_in_float64(shape):
    rng = np.random.default_rng(0)
    x = rng.standard_normal(shape) * 3 + 1.5
    c = shape[-1]
    tbn = (torch.nn.BatchNorm2d if len(shape) == 4 else torch.nn.BatchNorm1d)(c).double()
    with torch.no_grad():
        tbn.weight.copy_(torch.from_numpy(rng.uniform(0.5, 1.5, c)))
        tbn.bias.copy_(torch.from_numpy(rng.standard_normal(c)))
        tbn.running_mean.copy_(torch.from_numpy(rng.standard_normal(c)))
        tbn.running_var.copy_(torch.from_numpy(rng.uniform(0.5, 2.0, c)))
    variables = {"params": {"scale": tbn.weight.detach().numpy().copy(), "bias": tbn.bias.detach().numpy().copy()},
                 "batch_stats": {"mean": tbn.running_mean.numpy().copy(), "var": tbn.running_var.numpy().copy()}}
    xt = torch.from_numpy(np.moveaxis(x, -1, 1).copy())
    to_nhwc = (lambda a: np.moveaxis(a, 1, -1))
    with jax.enable_x64(True):
        bn = BatchNorm()
        y_eval = bn.apply(variables, x, train=False)
        y_train, upd = bn.apply(variables, x, train=True, mutable=["batch_stats"])
    tbn.eval()
    np.testing.assert_allclose(y_eval, to_nhwc(tbn(xt).detach().numpy()), rtol=0, atol=1e-12)
    tbn.train()
    np.testing.assert_allclose(y_train, to_nhwc(tbn(xt).detach().numpy()), rtol=0, atol=1e-12)
    # torch updates running_var with the *unbiased* batch variance (Flax's own BatchNorm does not).
    np.testing.assert_allclose(upd["batch_stats"]["mean"], tbn.running_mean.numpy(), rtol=0, atol=1e-12)
    np.testing.assert_allclose(upd["batch_stats"]["var"], tbn.running_var.numpy(), rtol=0, atol=1e-12)
