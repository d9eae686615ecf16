"""fer_jax BatchNorm == torch BatchNorm{1,2}d: eval, train, and the running-statistics update."""

from __future__ import annotations

import functools

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


def _plain_batch_norm(x, scale, bias, epsilon, axis_name):
    """The train-mode forward of `batch_norm_train` without its own gradient: what autodiff differentiates."""
    from fer_jax.models import layers

    return layers._batch_norm_fwd(x, scale, bias, epsilon, axis_name)[0]


def _weighted(outputs, weights):
    return sum(jax.numpy.sum(o * w) for o, w in zip(outputs, weights))


@pytest.mark.parametrize("shape", [(6, 5, 7, 3), (9, 4)])
def test_batchnorm_gradient_equals_autodiff_and_torch_in_float64(shape):
    """`batch_norm_train`'s own backward equals autodiff of its forward to ~1e-15 (cotangents on the output and on
    both statistics), and torch's BatchNorm backward (the output's) to 1e-12."""
    from fer_jax.models.layers import batch_norm_train

    rng = np.random.default_rng(1)
    c = shape[-1]
    x, scale, bias = rng.standard_normal(shape) * 3 + 1.5, rng.uniform(0.5, 1.5, c), rng.standard_normal(c)
    weights = (rng.standard_normal(shape), rng.standard_normal(c), rng.standard_normal(c))
    with jax.enable_x64(True):
        grads = [jax.grad(lambda *a, f=f: _weighted(f(*a, 1e-5, None), weights), (0, 1, 2))(x, scale, bias)
                 for f in (batch_norm_train, _plain_batch_norm)]
        out = jax.grad(lambda *a: _weighted(batch_norm_train(*a, 1e-5, None)[:1], weights), (0, 1, 2))(x, scale, bias)
    for ours, ref in zip(*grads):
        np.testing.assert_allclose(ours, ref, rtol=0, atol=1e-13 * np.max(np.abs(ref)))
    tbn = (torch.nn.BatchNorm2d if len(shape) == 4 else torch.nn.BatchNorm1d)(c).double().train()
    with torch.no_grad():
        tbn.weight.copy_(torch.from_numpy(scale))
        tbn.bias.copy_(torch.from_numpy(bias))
    xt = torch.from_numpy(np.moveaxis(x, -1, 1).copy()).requires_grad_(True)
    tbn(xt).backward(torch.from_numpy(np.moveaxis(weights[0], -1, 1).copy()))
    for ours, ref in zip(out, (np.moveaxis(xt.grad.numpy(), 1, -1), tbn.weight.grad.numpy(), tbn.bias.grad.numpy())):
        np.testing.assert_allclose(ours, ref, rtol=0, atol=1e-12)


def test_batchnorm_gradient_across_replicas_is_the_global_batchs():
    """With statistics over an axis of replicas (`vmap` with an axis name stands for `pmap`; each replica takes
    the gradient of its own loss, as a pmap train step does), the gradient equals autodiff's of the same forward,
    and the input's equals that of one replica holding the whole batch and every replica's loss (float64)."""
    from fer_jax.models.layers import batch_norm_train

    rng = np.random.default_rng(2)
    replicas, c = 3, 4
    x = rng.standard_normal((replicas, 5, 2, 3, c)) * 2 - 1
    scale, bias = rng.uniform(0.5, 1.5, c), rng.standard_normal(c)
    weights = (rng.standard_normal(x.shape), rng.standard_normal((replicas, c)), rng.standard_normal((replicas, c)))

    def replica_grads(f, outputs, x, scale, bias, *w):
        loss = lambda *a: _weighted(f(*a, 1e-5, "r")[:outputs], w)  # noqa: E731
        return jax.grad(loss, (0, 1, 2))(x, scale, bias)

    def grads(f, outputs=3):
        return jax.vmap(functools.partial(replica_grads, f, outputs), in_axes=(0, None, None, 0, 0, 0),
                        axis_name="r")(x, scale, bias, *weights)

    with jax.enable_x64(True):
        ours, ref = grads(batch_norm_train), grads(_plain_batch_norm)
        alone = grads(batch_norm_train, 1)[0]
        whole = jax.grad(lambda x: jax.numpy.sum(batch_norm_train(x, scale, bias, 1e-5, None)[0]
                                                 * weights[0].reshape(x.shape)))(x.reshape(-1, 2, 3, c))
    for a, b in zip(ours, ref):
        np.testing.assert_allclose(a, b, rtol=0, atol=1e-13 * np.max(np.abs(b)))
    np.testing.assert_allclose(alone.reshape(whole.shape), whole, rtol=0, atol=1e-13 * np.max(np.abs(whole)))
