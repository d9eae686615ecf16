"""MFTN-FER parity against the plain-torch reference: upstream's key listing, the eval forward (both heads and
every MsTN block) in float64 and float32, and the drop-path-1.0 quirk of training.

Weights as in test_parity_convnext.py (`randomize`: activations O(1)); float64 on both sides within FP64_TOL,
float32 within 4x torch's own float32 error (floor 1e-5). The fast tier runs the network on ConvNeXt atto
widths at 64 px (stage maps 8x8, 4x4, 2x2: 64, 16 and 4 tokens); the slow tier runs upstream's size.
"""

from __future__ import annotations

import functools

import jax
import numpy as np
import pytest
import torch
from flax import linen as nn

import parity
from fer_jax.models import mftn
from fer_jax.models.mftn import MFTN
from porting import mapping, reference
from test_parity_convnext import images, randomize
from test_parity_convnext import one_torch_thread  # noqa: F401  (an autouse fixture: applies here too)
from test_reference_keys import read_listing

VARIANT, NUM_CLASSES, SIZE = "atto", 7, 64


@pytest.mark.parametrize("num_classes, listing, count", [(7, "keys_mftn_fer.txt", 143_318_670),
                                                         (8, "keys_mftn_fer_c8.txt", 143_320_208)])
def test_reference_keys_equal_upstream_listing(num_classes, listing, count):
    with torch.device("meta"):
        model = reference.MFTN(num_classes)
    got = [(k, list(v.shape), str(v.dtype).replace("torch.", "")) for k, v in model.state_dict().items()]
    assert got == read_listing(listing)
    assert sum(p.numel() for p in model.parameters()) == count  # the listing's header


def test_every_upstream_key_maps():
    """Upstream's 484 keys map onto the Flax tree (abstractly), `mstn.branch` included (created at init)."""
    spec_inputs = jax.ShapeDtypeStruct((1, 224, 224, 3), np.float32)
    kinds, abstract = mapping.module_kinds(MFTN(), spec_inputs, train=False, method="initialize")
    listing = {k: shape for k, shape, _ in read_listing("keys_mftn_fer.txt")}
    _, report = mapping.torch_to_flax({k: np.zeros(s, np.float32) for k, s in listing.items()}, abstract, kinds)
    assert not report.unused and not report.missing and len(report.loaded) == len(listing) == 484
    assert kinds[("mstn", "branches", "0", "0", "attn", "query", "2")] == "dense"
    assert kinds[("mstn", "branch", "2", "norm2")] == "layernorm"


def convert(tmodel: torch.nn.Module, module: nn.Module) -> tuple[dict, dict]:
    kinds, abstract = mapping.module_kinds(module, jax.ShapeDtypeStruct((1, SIZE, SIZE, 3), np.float32),
                                           train=False, method="initialize")
    sd = {k: v.detach().numpy().copy() for k, v in tmodel.state_dict().items()}
    variables, report = mapping.torch_to_flax(sd, abstract, kinds)
    assert not report.unused and not report.missing
    return jax.tree.map(lambda a: np.asarray(a, np.float64), variables), kinds


BLOCKS = [f"mstn.branches.{s}.{b}" for s, n in enumerate(mftn.MSTN_DEPTHS) for b in range(n)]


def torch_run(tmodel, x: np.ndarray, dtype) -> dict[str, np.ndarray]:
    model = parity.torch_copy(tmodel, dtype)
    taps = {}
    hooks = [model.get_submodule(n).register_forward_hook(
        lambda m, i, o, n=n: taps.__setitem__(n, o.detach().numpy().copy())) for n in BLOCKS]
    with torch.no_grad():
        out1, out2 = model(torch.from_numpy(x.transpose(0, 3, 1, 2).copy()).to(dtype))
    for h in hooks:
        h.remove()
    return {**taps, "out1": out1.numpy(), "out2": out2.numpy()}


def flax_run(module, variables, x: np.ndarray) -> dict[str, np.ndarray]:
    def run(v, x):
        (out1, out2), state = module.apply(
            v, x, train=False, mutable=["intermediates"],
            capture_intermediates=lambda mdl, method: method == "__call__" and isinstance(mdl, mftn.TransformerBlock))
        return out1, out2, state["intermediates"]

    out1, out2, inter = jax.jit(run)(variables, x)
    taps = {n: np.asarray(inter["mstn"]["branches"][n.split(".")[2]][n.split(".")[3]]["__call__"][0]) for n in BLOCKS}
    return {**taps, "out1": np.asarray(out1), "out2": np.asarray(out2)}


def compare(variant: str, num_classes: int, size: int, seed: int) -> dict[str, dict]:
    tmodel = randomize(reference.MFTN(num_classes, variant=variant), seed)
    module = MFTN(num_classes, variant=variant)
    variables, _ = convert(tmodel, module)
    x = images(seed + 1, size, 2)
    ref64, ref32 = torch_run(tmodel, x, torch.float64), torch_run(tmodel, x, torch.float32)
    ours32 = flax_run(module, jax.tree.map(lambda a: a.astype(np.float32), variables), x.astype(np.float32))
    with jax.enable_x64(True):
        ours64 = flax_run(module, variables, x)
    return {k: {"fp64": parity.rel_diff(ours64[k], ref64[k]), "fp32": parity.rel_diff(ours32[k], ref64[k]),
                "bound": parity.fp32_bound(ref32[k], ref64[k])} for k in ref64}


def test_eval_forward_block_by_block():
    """Both heads and every MsTN block's output (SePe: q * k softmax over tokens, the positional conv, k and
    v halves of kv; LayerNorm eps 1e-5; bias-free fuse layers; token mean, sum over stages)."""
    diffs = compare(VARIANT, NUM_CLASSES, SIZE, seed=3)
    print(f"\n[mftn {VARIANT} {SIZE}px eval] " + ", ".join(f"{k}: {d['fp64']:.1e}/{d['fp32']:.1e}"
                                                          for k, d in diffs.items()))
    for name, d in diffs.items():
        assert d["fp64"] <= parity.FP64_TOL, (name, d)
        assert d["fp32"] <= d["bound"], (name, d)


def test_mstn_layernorm_epsilon_is_read(monkeypatch):
    """The MsTN's LayerNorms use torch's 1e-5 (not ConvNeXt's 1e-6): building them with 1e-6 moves out2 by far
    more than float64 rounding."""
    tmodel = randomize(reference.MFTN(NUM_CLASSES, variant=VARIANT), 5)
    module = MFTN(NUM_CLASSES, variant=VARIANT)
    variables, _ = convert(tmodel, module)
    x = images(6, SIZE, 2)
    ref = torch_run(tmodel, x, torch.float64)["out2"]
    monkeypatch.setattr(mftn, "MSTN_LN_EPS", 1e-6)
    with jax.enable_x64(True):
        wrong = flax_run(MFTN(NUM_CLASSES, variant=VARIANT), variables, x)["out2"]
    assert parity.rel_diff(wrong, ref) > 1e3 * parity.FP64_TOL


def test_first_block_of_every_branch_is_dropped_in_training_and_active_in_eval():
    """Upstream's rates linspace(1.0, 0.25, depth): in training the first block of each branch adds nothing
    (its output equals its input) and all its parameters get exactly zero gradient, as do the never-called
    `mstn.branch`; the second block of branch 0 does get gradient; in eval the first blocks change the result."""
    tmodel = randomize(reference.MFTN(NUM_CLASSES, variant=VARIANT), 7)
    module = MFTN(NUM_CLASSES, variant=VARIANT)
    variables, _ = convert(tmodel, module)
    variables = jax.tree.map(lambda a: a.astype(np.float32), variables)
    x = images(8, SIZE, 4).astype(np.float32)

    def loss(params):
        out1, out2 = module.apply({"params": params}, x, train=True, rngs={"drop_path": jax.random.key(0)})
        return (out1 ** 2).sum() + (out2 ** 2).sum()

    grads = jax.jit(jax.grad(loss))(variables["params"])
    mstn_grads = grads["mstn"]
    for s in range(3):
        first = mstn_grads["branches"][str(s)]["0"]
        assert all(np.all(np.asarray(g) == 0) for g in jax.tree.leaves(first)), s
    assert all(np.all(np.asarray(g) == 0) for g in jax.tree.leaves(mstn_grads["branch"]))
    assert any(np.any(np.asarray(g) != 0) for g in jax.tree.leaves(mstn_grads["branches"]["0"]["1"]))

    @functools.partial(jax.jit, static_argnums=1)  # one compilation, not one per operation
    def block_io(v, train):
        seen = {}

        def tap(next_fun, args, kwargs, context):
            out = next_fun(*args, **kwargs)
            if isinstance(context.module, mftn.TransformerBlock) and context.module.path[-1] == "0":
                seen[context.module.path[-2]] = (args[0], out)
            return out

        with nn.intercept_methods(tap):
            module.apply(v, x, train=train, rngs={"drop_path": jax.random.key(1)})
        return seen

    for branch, (inp, out) in block_io(variables, True).items():
        np.testing.assert_array_equal(np.asarray(out), np.asarray(inp), err_msg=branch)
    for branch, (inp, out) in block_io(variables, False).items():
        assert not np.allclose(np.asarray(out), np.asarray(inp)), branch


@pytest.mark.slow
def test_upstream_size_eval_forward():
    """Upstream's ConvNeXt-base widths (MsTN at 256, 512, 1024 channels; query widths 32, 32, 64) at 64 px."""
    diffs = compare("base", 8, SIZE, seed=9)
    print("\n[mftn base 64px eval] " + ", ".join(f"{k}: {d['fp64']:.1e}/{d['fp32']:.1e}" for k, d in diffs.items()))
    for name, d in diffs.items():
        assert d["fp64"] <= parity.FP64_TOL, (name, d)
        assert d["fp32"] <= d["bound"], (name, d)


def test_loss_gradients_match_torch_float64():
    """The two-head loss (0.45 / 0.55 label-smoothed CE, epsilon 0.1) and its gradient for every parameter,
    in float64 against torch autograd; drop-path off (evaluation forward), so the draws cannot differ. The
    never-called `mstn.branch` gets no gradient on either side."""
    import ml_collections

    from fer_jax import tasks

    tmodel = randomize(reference.MFTN(NUM_CLASSES, variant=VARIANT), 10).double()
    module = MFTN(NUM_CLASSES, variant=VARIANT)
    variables, kinds = convert(tmodel, module)
    x = images(11, SIZE, 3)
    labels = np.array([0, 4, 6])
    out1, out2 = tmodel(torch.from_numpy(x.transpose(0, 3, 1, 2).copy()))
    ce = torch.nn.functional.cross_entropy
    ref_loss = 0.45 * ce(out1, torch.from_numpy(labels), label_smoothing=0.1) + 0.55 * ce(
        out2, torch.from_numpy(labels), label_smoothing=0.1)
    ref_loss.backward()
    task = tasks.create(ml_collections.ConfigDict({"name": "two_heads"}))
    with jax.enable_x64(True):
        def loss(params):
            o1, o2 = module.apply({"params": params}, x, train=False)
            return task.loss({"out1": o1, "out2": o2}, o1 + o2, {"label": labels}, {})[0]

        value, grads = jax.jit(jax.value_and_grad(loss))(variables["params"])
        ours = mapping.flax_to_torch({"params": jax.device_get(grads)}, kinds)
    assert abs(float(value) - ref_loss.item()) <= 1e-12 * abs(ref_loss.item())
    worst = 0.0
    for name, p in tmodel.named_parameters():
        if p.grad is None:
            assert name.startswith("mstn.branch."), name
            assert not np.any(ours[name]), name
            continue
        ref = p.grad.numpy()
        worst = max(worst, parity.rel_diff(ours[name], ref))
    print(f"\n[mftn loss gradients float64] worst relative difference {worst:.1e}")
    assert worst <= parity.FP64_TOL
