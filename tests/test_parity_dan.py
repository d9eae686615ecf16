"""DAN's training quirks against the plain-torch reference: loss gradients (CE + affinity + partition) and
SGD steps of rafdb.py's recipe. Forward parity (eval and train mode, every output, running statistics, full
size) is in test_parity_models.py.

Random weights with calibrated-then-perturbed BatchNorm statistics (torch_helpers.randomize). Every check
runs in float64 on both sides (bound FP64_TOL: rounding cannot hide a semantic difference) and in float32,
where each group of tensors (parameter gradients, updated parameters and statistics) is held to 4x torch's
own worst float32 error in that group (tests/parity.py): DAN's fp32 training numerics are
rounding-dominated at random init (the BN'd logits amplify rounding, dan.md note 7).
"""

from __future__ import annotations

import functools

import jax
import numpy as np
import optax
import torch

import parity
import torch_helpers
from fer_jax import losses, xla
from fer_jax.train import optim
from porting import reference

B, SIZE = 8, 64  # fast tier: layer4 is 2x2
HP = {"num_class": 7, "num_head": 4}


def setup(dtype, size=SIZE, hp=HP, seed=0):
    with torch.random.fork_rng():  # the reference's own init, whose scale `randomize` keeps: the same weights
        torch.manual_seed(seed)  # every run (unseeded, a rare draw took the SGD-steps test to 1.6e-10)
        tmodel = reference.DAN(**hp)
    tmodel = torch_helpers.randomize(tmodel, seed=seed, image_size=size)
    tmodel = parity.torch_copy(tmodel, torch.float64 if dtype == np.float64 else torch.float32)
    module, variables, kinds = parity.convert(tmodel, "dan", hp, size, dtype)
    x = np.random.default_rng(seed + 1).standard_normal((B, 3, size, size)).astype(dtype)
    y = np.random.default_rng(seed + 2).integers(0, hp["num_class"], B)
    return tmodel, module, variables, kinds, x, y


def flax_loss_fn(module, kinds):
    def loss_fn(params, centers, x, batch_stats, y):
        outs, upd = module.apply({"params": params, "batch_stats": batch_stats}, x, train=True,
                                 mutable=["batch_stats"])
        loss, _ = losses.dan_loss(outs, y, centers)
        return loss, upd["batch_stats"]
    return loss_fn


def torch_loss(tmodel, criterion_af, x, y):
    out, feat, heads = tmodel(x)
    return (torch.nn.functional.cross_entropy(out, y) + criterion_af(feat, y)
            + reference.PartitionLoss()(heads))


@functools.cache  # the float32 tests reuse the float64 run of the float64 tests (one worker runs a file)
def gradients(dtype):
    tmodel, module, variables, kinds, x, y = setup(dtype)
    tdtype = torch.float64 if dtype == np.float64 else torch.float32
    centers = np.random.default_rng(5).standard_normal((8, 512)).astype(dtype)  # K = 8 as in rafdb.py
    aff = reference.AffinityLoss(8, 512).to(tdtype)
    with torch.no_grad():
        aff.centers.copy_(torch.from_numpy(centers))
    xt = torch.from_numpy(x).requires_grad_(True)
    tmodel.train()
    tloss = torch_loss(tmodel, aff, xt, torch.from_numpy(y))
    tloss.backward()
    ref = {"loss": tloss.item(), "params": parity.torch_param_grads(tmodel),
           "centers": aff.centers.grad.numpy().copy(), "x": parity.to_nhwc(xt.grad.numpy().copy())}
    grad_fn = xla.jit(jax.value_and_grad(flax_loss_fn(module, kinds), argnums=(0, 1, 2), has_aux=True), "train")
    (loss, _), (g_params, g_centers, g_x) = grad_fn(variables["params"], centers,
                                                      np.ascontiguousarray(parity.to_nhwc(x)),
                                                      variables["batch_stats"], y)
    ours = {"loss": float(loss), "params": parity.flax_to_torch_names(g_params, kinds),
            "centers": np.asarray(g_centers), "x": np.asarray(g_x)}
    return ours, ref


def test_loss_gradients_float64():
    with jax.enable_x64(True):
        ours, ref = gradients(np.float64)
    assert parity.rel_diff(ours["loss"], ref["loss"]) <= parity.FP64_TOL
    assert set(ours["params"]) == set(ref["params"])
    largest = max(np.max(np.abs(g)) for g in ref["params"].values())
    for k, g in ref["params"].items():
        # Relative to each tensor's own gradient scale, so small gradients are held as tightly as large
        # ones. Floor: conv biases feeding a train-mode BatchNorm have an exactly zero gradient (BN removes
        # the mean); both sides compute ~1e-18 rounding noise there, so scales stop at 1e-6 of the largest.
        scale = max(np.max(np.abs(g)), 1e-6 * largest)
        assert np.max(np.abs(ours["params"][k] - g)) <= parity.FP64_TOL * scale, k
    for k in ("centers", "x"):
        assert np.max(np.abs(ours[k] - ref[k])) <= parity.FP64_TOL * np.max(np.abs(ref[k])), k


def test_loss_gradients_float32():
    ours, ref = gradients(np.float32)
    with jax.enable_x64(True):
        _, ref64 = gradients(np.float64)
    # Each gradient depends on the BN'd logits through the CE term: one group, the derived bound.
    flat = lambda g: {**g["params"], "centers": g["centers"], "x": g["x"]}  # noqa: E731
    parity.assert_group_fp32(flat(ours), flat(ref), flat(ref64))


@functools.cache
def sgd_steps(dtype, steps=3, lr=0.1):
    """Three steps of rafdb.py's recipe: SGD(lr 0.1, momentum 0.9, weight_decay 1e-4) over the model
    parameters *and* the affinity centers; BatchNorm statistics update in train mode."""
    tmodel, module, variables, kinds, x, y = setup(dtype)
    tdtype = torch.float64 if dtype == np.float64 else torch.float32
    centers = np.random.default_rng(5).standard_normal((8, 512)).astype(dtype)
    aff = reference.AffinityLoss(8, 512).to(tdtype)
    with torch.no_grad():
        aff.centers.copy_(torch.from_numpy(centers))
    opt = torch.optim.SGD(list(tmodel.parameters()) + [aff.centers], lr=lr, momentum=0.9, weight_decay=1e-4)
    tmodel.train()
    batches = [(x * (1 + 0.1 * i), np.roll(y, i)) for i in range(steps)]
    for xb, yb in batches:
        opt.zero_grad()
        torch_loss(tmodel, aff, torch.from_numpy(np.ascontiguousarray(xb)), torch.from_numpy(yb)).backward()
        opt.step()

    tx = optim.torch_sgd(lr, momentum=0.9, weight_decay=1e-4)
    trainable = {"model": variables["params"], "centers": centers}
    opt_state = tx.init(trainable)
    loss_fn = flax_loss_fn(module, kinds)

    @functools.partial(xla.jit, kind="train")
    def step(trainable, opt_state, batch_stats, xb, yb):
        grad_fn = jax.grad(lambda t: loss_fn(t["model"], t["centers"], xb, batch_stats, yb), has_aux=True)
        grads, batch_stats = grad_fn(trainable)
        updates, opt_state = tx.update(grads, opt_state, trainable)
        return optax.apply_updates(trainable, updates), opt_state, batch_stats

    batch_stats = variables["batch_stats"]
    for xb, yb in batches:
        trainable, opt_state, batch_stats = step(trainable, opt_state, batch_stats,
                                                 np.ascontiguousarray(parity.to_nhwc(xb)), yb)
    ours = {**parity.flax_to_torch_names(trainable["model"], kinds),
            **parity.flax_to_torch_names(batch_stats, kinds, "batch_stats"), "centers": trainable["centers"]}
    ref = {**{n: p.detach().numpy().copy() for n, p in tmodel.named_parameters()},
           **parity.torch_buffers(tmodel), "centers": aff.centers.detach().numpy().copy()}
    return ours, ref


def test_three_sgd_steps_float64():
    with jax.enable_x64(True):
        ours, ref = sgd_steps(np.float64)
    assert set(ours) == set(ref)
    for k, v in ref.items():
        assert parity.rel_diff(ours[k], v) <= parity.FP64_TOL, k


def test_three_sgd_steps_float32():
    ours, ref = sgd_steps(np.float32)
    with jax.enable_x64(True):
        _, ref64 = sgd_steps(np.float64)
    parity.assert_group_fp32(ours, ref, ref64)
