"""DAN's training quirks against the plain-torch reference: loss gradients (CE + affinity + partition) and
SGD steps of rafdb.py's recipe. Forward parity (eval and train mode, every output, running statistics, full
size) is in test_parity_models.py.

Random weights with calibrated-then-perturbed BatchNorm statistics (torch_helpers.randomize). Every check
runs in float64 on both sides (bound FP64_TOL: rounding cannot hide a semantic difference) and in float32,
where each group of tensors (parameter gradients, updated parameters and statistics) is held to 4x torch's
own worst float32 error in that group (tests/parity.py): DAN's fp32 training numerics are
rounding-dominated at random init (the BN'd logits amplify rounding, dan.md note 7). Our float32 values are
judged against float64 arithmetic on the ReLU pattern our float32 run took (parity.ReluBranches): an input
rounded across 0 is a coin toss of the summation order, not an error a bound can describe.
"""

from __future__ import annotations

import functools

import flax.linen
import jax
import jax.numpy as jnp
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


def class_centers(dtype):
    """The affinity loss's class centers, K = 8 as in rafdb.py."""
    return np.random.default_rng(5).standard_normal((8, 512)).astype(dtype)


@functools.cache
def converted64():
    """The float64 Flax side of `setup` (module, variables, kinds, x, y), for the replaying runs: built once."""
    with jax.enable_x64(True):
        return setup(np.float64)[1:]


def flax_loss_fn(module, kinds):
    """The loss and the updated BatchNorm statistics, and the ReLU inputs of this run; with `recorded` (float32
    ReLU inputs of the same computation), a float64 run takes float32's branch at ties (parity.ReluBranches)."""
    def loss_fn(params, centers, x, batch_stats, y, recorded=None):
        with parity.ReluBranches(recorded).patched() as relus:
            outs, upd = module.apply({"params": params, "batch_stats": batch_stats}, x, train=True,
                                     mutable=["batch_stats"])
        loss, _ = losses.dan_loss(outs, y, centers)
        return loss, (upd["batch_stats"], relus.inputs)
    return loss_fn


def torch_loss(tmodel, criterion_af, x, y):
    out, feat, heads = tmodel(x)
    return (torch.nn.functional.cross_entropy(out, y) + criterion_af(feat, y)
            + reference.PartitionLoss()(heads))


def _our_gradients(module, kinds, variables, centers, x, y, recorded=None):
    grad_fn = xla.jit(jax.value_and_grad(flax_loss_fn(module, kinds), argnums=(0, 1, 2), has_aux=True), "train")
    (loss, (_, relus)), (g_params, g_centers, g_x) = grad_fn(
        variables["params"], centers, np.ascontiguousarray(parity.to_nhwc(x)), variables["batch_stats"], y, recorded)
    ours = {"loss": float(loss), "params": parity.flax_to_torch_names(g_params, kinds),
            "centers": np.asarray(g_centers), "x": np.asarray(g_x)}
    return ours, [np.asarray(r) for r in relus]


@functools.cache  # the float32 tests reuse the float64 run of the float64 tests (one worker runs a file)
def gradients(dtype):
    """(ours, torch's, our ReLU inputs) for the loss gradients in `dtype`."""
    tmodel, module, variables, kinds, x, y = setup(dtype)
    tdtype = torch.float64 if dtype == np.float64 else torch.float32
    centers = class_centers(dtype)
    aff = reference.AffinityLoss(8, 512).to(tdtype)
    with torch.no_grad():
        aff.centers.copy_(torch.from_numpy(centers))
    xt = torch.from_numpy(x).requires_grad_(True)
    tmodel.train()
    tloss = torch_loss(tmodel, aff, xt, torch.from_numpy(y))
    tloss.backward()
    ref = {"loss": tloss.item(), "params": parity.torch_param_grads(tmodel),
           "centers": aff.centers.grad.numpy().copy(), "x": parity.to_nhwc(xt.grad.numpy().copy())}
    ours, relus = _our_gradients(module, kinds, variables, centers, x, y)
    return ours, ref, relus


def gradients_on_branches(recorded):
    """Our float64 loss gradients on the ReLU pattern of a float32 run (its ReLU inputs `recorded`), and how
    many inputs took float32's branch against their own."""
    module, variables, kinds, x, y = converted64()
    with jax.enable_x64(True):
        ours, relus = _our_gradients(module, kinds, variables, class_centers(np.float64), x, y, recorded)
    return ours, parity.ties(recorded, relus)


def test_relu_replay_takes_the_recorded_branch():
    """parity.ReluBranches: recording returns every ReLU input; replaying keeps an input where the recorded one is
    positive (value and derivative), and is relu itself where the two agree."""
    def f(x, recorded=None):
        with parity.ReluBranches(recorded).patched() as relus:
            y = jnp.sum(flax.linen.relu(x) * jnp.arange(1.0, 5.0, dtype=x.dtype))
        return y, relus.inputs

    with jax.enable_x64(True):
        x = jnp.array([-1e-9, 0.5, -0.3, 2e-9])
        (y, (seen,)), g = jax.value_and_grad(f, has_aux=True)(x)
        assert float(y) == 1.0 + 8e-9 and g.tolist() == [0, 2, 0, 4] and np.array_equal(seen, x)
        float32 = [np.array([1e-9, 0.5, -0.3, -2e-9], np.float32)]  # the first and last rounded across 0
        (y, (seen,)), g = jax.value_and_grad(f, has_aux=True)(x, float32)
        assert float(y) == -1e-9 + 1.0 and g.tolist() == [1, 2, 0, 0]
        assert parity.ties(float32, [seen]) == 2


def test_loss_gradients_float64():
    with jax.enable_x64(True):
        ours, ref, _ = gradients(np.float64)
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
    ours, ref, relus = gradients(np.float32)
    with jax.enable_x64(True):
        ours64, ref64, _ = gradients(np.float64)
    exact, ties = gradients_on_branches(relus)
    # Each gradient depends on the BN'd logits through the CE term: one group, the derived bound; ours is
    # judged against float64 on the ReLU pattern our float32 run took (parity.ReluBranches). On an AMD Zen 5: one
    # tie of 1.57M inputs; ours 4.3e-5 (2.3e-2 against plain float64), torch 4.7e-5.
    flat = lambda g: {**g["params"], "centers": g["centers"], "x": g["x"]}  # noqa: E731
    parity.assert_group_fp32(flat(ours), flat(ref), flat(ref64), exact=flat(exact))
    inputs = sum(r.size for r in relus)
    assert ties <= 1e-5 * inputs, (ties, inputs)  # an input rounded across 0 is rare, unless the forward is wrong
    if ties == 0:  # nothing replayed: the replaying program computes the plain float64 gradients
        assert max(parity.rel_diff(v, flat(ours64)[k]) for k, v in flat(exact).items()) <= parity.FP64_TOL


LR = 0.1


def _batches(x, y, steps=3):
    return [(x * (1 + 0.1 * i), np.roll(y, i)) for i in range(steps)]


@functools.cache
def sgd_steps(dtype):
    """Three steps of rafdb.py's recipe: SGD(lr 0.1, momentum 0.9, weight_decay 1e-4) over the model
    parameters *and* the affinity centers; BatchNorm statistics update in train mode. Returns (ours, torch's,
    our ReLU inputs of each step)."""
    tmodel, module, variables, kinds, x, y = setup(dtype)
    tdtype = torch.float64 if dtype == np.float64 else torch.float32
    centers = class_centers(dtype)
    aff = reference.AffinityLoss(8, 512).to(tdtype)
    with torch.no_grad():
        aff.centers.copy_(torch.from_numpy(centers))
    opt = torch.optim.SGD(list(tmodel.parameters()) + [aff.centers], lr=LR, momentum=0.9, weight_decay=1e-4)
    tmodel.train()
    for xb, yb in _batches(x, y):
        opt.zero_grad()
        torch_loss(tmodel, aff, torch.from_numpy(np.ascontiguousarray(xb)), torch.from_numpy(yb)).backward()
        opt.step()
    ref = {**{n: p.detach().numpy().copy() for n, p in tmodel.named_parameters()},
           **parity.torch_buffers(tmodel), "centers": aff.centers.detach().numpy().copy()}
    ours, relus = _our_sgd_steps(module, kinds, variables, centers, _batches(x, y))
    return ours, ref, relus


def _our_sgd_steps(module, kinds, variables, centers, batches, recorded=None):
    tx = optim.torch_sgd(LR, momentum=0.9, weight_decay=1e-4)
    trainable = {"model": variables["params"], "centers": centers}
    opt_state = tx.init(trainable)
    loss_fn = flax_loss_fn(module, kinds)

    @functools.partial(xla.jit, kind="train")
    def step(trainable, opt_state, batch_stats, xb, yb, recorded):
        grad_fn = jax.grad(lambda t: loss_fn(t["model"], t["centers"], xb, batch_stats, yb, recorded), has_aux=True)
        grads, (batch_stats, relus) = grad_fn(trainable)
        updates, opt_state = tx.update(grads, opt_state, trainable)
        return optax.apply_updates(trainable, updates), opt_state, batch_stats, relus

    batch_stats, relus = variables["batch_stats"], []
    for i, (xb, yb) in enumerate(batches):
        trainable, opt_state, batch_stats, inputs = step(trainable, opt_state, batch_stats,
                                                         np.ascontiguousarray(parity.to_nhwc(xb)), yb,
                                                         None if recorded is None else recorded[i])
        relus.append([np.asarray(r) for r in inputs])
    ours = {**parity.flax_to_torch_names(trainable["model"], kinds),
            **parity.flax_to_torch_names(batch_stats, kinds, "batch_stats"), "centers": trainable["centers"]}
    return ours, relus


def sgd_steps_on_branches(recorded):
    """Our three float64 steps on the ReLU patterns of a float32 run's steps, and how many inputs took
    float32's branch against their own."""
    module, variables, kinds, x, y = converted64()
    with jax.enable_x64(True):
        ours, relus = _our_sgd_steps(module, kinds, variables, class_centers(np.float64), _batches(x, y), recorded)
    return ours, sum(parity.ties(r32, r64) for r32, r64 in zip(recorded, relus, strict=True))


def test_three_sgd_steps_float64():
    with jax.enable_x64(True):
        ours, ref, _ = sgd_steps(np.float64)
    assert set(ours) == set(ref)
    for k, v in ref.items():
        assert parity.rel_diff(ours[k], v) <= parity.FP64_TOL, k


def test_three_sgd_steps_float32():
    ours, ref, relus = sgd_steps(np.float32)
    with jax.enable_x64(True):
        ours64, ref64, _ = sgd_steps(np.float64)
    exact, ties = sgd_steps_on_branches(relus)
    # Judged on float32's ReLU patterns, as the gradients. After the first step the float32 trajectory departs
    # from float64 by torch's own ~1 % (the BN'd logits amplify rounding), and ~100 inputs of the later steps
    # fall on the other side of 0 (127 on an AMD Zen 5). Torch's float32 run, whose error sets the bound, is not
    # replayed. Measured there: ours 3.0e-3 against float64 on our pattern (0.45 against plain float64), torch 9.6e-3.
    parity.assert_group_fp32(ours, ref, ref64, exact=exact)
    if ties == 0:
        assert max(parity.rel_diff(exact[k], v) for k, v in ours64.items()) <= parity.FP64_TOL
