"""FAER parity against the plain-torch reference: CC attention alone, the whole network in eval and train
mode (drop-path off), its drop-path wiring in training, upstream's key listing.

Weights, taps and tolerances as in test_parity_convnext.py (whose helpers this file uses): float64 on both
sides within FP64_TOL, float32 within 4x torch's own float32 error (floor 1e-5). The fast tier runs FAER on
the tiny ConvNeXt at 64 px; the slow tier runs upstream's convnext_base at 224 px.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch
from flax import linen as nn

import parity
from fer_jax.models import faer
from fer_jax.models.convnext import DropPath
from fer_jax.models.faer import FAER, CCAttention
from porting import mapping, reference
from test_parity_convnext import assert_taps, compare, convert, images, randomize, summary
from test_parity_convnext import one_torch_thread  # noqa: F401  (an autouse fixture: applies here too)
from test_reference_keys import read_listing

VARIANT, NUM_CLASSES = "tiny", 40


# ---------------------------------------------------------------- keys


def test_reference_keys_equal_upstream_listing():
    """`convnext_base(num_classes=40, drop_path_rate=0.25)`: keys, order, shapes, dtypes (354 entries)."""
    model = reference.FAER()
    got = [(k, list(v.shape), str(v.dtype).replace("torch.", "")) for k, v in model.state_dict().items()]
    assert got == read_listing("keys_faer.txt")
    assert sum(p.numel() for p in model.parameters()) == 101_768_488  # the listing's header


def test_every_key_maps_both_ways():
    """Upstream's base layout maps onto the Flax tree key for key (abstractly: no weights allocated), and a
    tiny FAER goes torch -> Flax -> torch unchanged."""
    kinds, abstract = mapping.module_kinds(FAER(), jax.ShapeDtypeStruct((1, 224, 224, 3), jnp.float32), train=False)
    listing = {k: shape for k, shape, _ in read_listing("keys_faer.txt")}
    variables, report = mapping.torch_to_flax({k: np.zeros(s, np.float32) for k, s in listing.items()},
                                              abstract, kinds)
    assert not report.unused and not report.missing and len(report.loaded) == len(listing) == 354
    assert variables["params"]["attention"]["depthwise"]["kernel"].shape == (7, 7, 256, 1024)  # groups 4
    assert kinds[("attention", "mlp", "2")] == "dense" and kinds[("attention", "norm")] == "layernorm"

    tmodel = randomize(reference.FAER(VARIANT, NUM_CLASSES), seed=1)
    variables, kinds = convert(tmodel, FAER(VARIANT, NUM_CLASSES))
    back = mapping.flax_to_torch(variables, kinds)
    assert set(back) == set(tmodel.state_dict())
    for k, v in tmodel.state_dict().items():
        np.testing.assert_array_equal(back[k], v.double().numpy(), err_msg=k)


# ---------------------------------------------------------------- CC attention alone


DIM, HW = 256, 7


def attention_pair(seed: int, scale_conv: float = 1.0) -> tuple[reference.CCAttention, dict]:
    """A randomised reference CC attention (conv weights optionally scaled) and its Flax variables."""
    tmodel = randomize(reference.CCAttention(DIM), seed)
    with torch.no_grad():
        for p in tmodel.depthwise.parameters():
            p.mul_(scale_conv)
    kinds, abstract = mapping.module_kinds(CCAttention(DIM), jax.ShapeDtypeStruct((1, HW, HW, DIM), jnp.float32))
    sd = {k: v.detach().numpy().copy() for k, v in tmodel.state_dict().items()}
    variables, report = mapping.torch_to_flax(sd, abstract, kinds)
    assert not report.unused and not report.missing
    return tmodel, jax.tree.map(lambda a: np.asarray(a, np.float64), variables)


def attention_diffs(tmodel, variables, x: np.ndarray) -> dict[str, float]:
    ref = {}
    for dtype in (torch.float64, torch.float32):
        with torch.no_grad():
            out = parity.torch_copy(tmodel, dtype)(torch.from_numpy(x.transpose(0, 3, 1, 2).copy()).to(dtype))
        ref[dtype] = parity.to_nhwc(out.numpy())
    apply = jax.jit(CCAttention(DIM).apply)
    with jax.enable_x64(True):
        ours64 = np.asarray(apply(variables, x))
    ours32 = np.asarray(apply(jax.tree.map(lambda a: a.astype(np.float32), variables), x.astype(np.float32)))
    return {"fp64": parity.rel_diff(ours64, ref[torch.float64]), "fp32": parity.rel_diff(ours32, ref[torch.float64]),
            "bound": parity.fp32_bound(ref[torch.float32], ref[torch.float64])}


def attention_input(seed: int) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal((2, HW, HW, DIM))


def test_cc_attention_alone():
    """Upstream's 7x7 map (49 tokens): value, pooled-context key, grouped-conv query, softmax over tokens,
    residual."""
    tmodel, variables = attention_pair(seed=2)
    d = attention_diffs(tmodel, variables, attention_input(3))
    print(f"\n[cc attention {DIM}@{HW}x{HW}] {d}")
    assert d["fp64"] <= parity.FP64_TOL and d["fp32"] <= d["bound"], d


def test_cc_attention_gradients_match_torch():
    """float64 gradients of a weighted sum of the CC attention's output, for the input and every parameter,
    against torch's autograd: the grouped conv's gradients are fer-jax's own (`convolution.grouped_conv`), compiled
    with the training options. Each tensor within FP64_TOL of its own scale."""
    from fer_jax import xla

    tmodel, variables = attention_pair(seed=6)
    x = attention_input(7)
    weights = np.random.default_rng(8).standard_normal(x.shape)
    tmodel = parity.torch_copy(tmodel, torch.float64)
    xt = torch.from_numpy(x.transpose(0, 3, 1, 2).copy()).requires_grad_(True)
    (tmodel(xt) * torch.from_numpy(weights.transpose(0, 3, 1, 2).copy())).sum().backward()
    ref = {**parity.torch_param_grads(tmodel), "x": parity.to_nhwc(xt.grad.numpy())}
    kinds, _ = mapping.module_kinds(CCAttention(DIM), jax.ShapeDtypeStruct((1, HW, HW, DIM), jnp.float32))
    with jax.enable_x64(True):
        grad = xla.jit(jax.grad(lambda p, x: jnp.sum(CCAttention(DIM).apply({"params": p}, x) * weights), (0, 1)),
                       "train")
        g_params, g_x = grad(variables["params"], x)
        ours = {**parity.flax_to_torch_names(g_params, kinds), "x": np.asarray(g_x)}
    assert set(ours) == set(ref)
    largest = max(np.max(np.abs(g)) for g in ref.values())
    # The key's last bias (times mean(X)) and the query LayerNorm's bias add a constant over the tokens that the
    # softmax runs over, so their gradients are exactly zero: both sides must be zero up to rounding (~1e-16 of
    # the largest gradient). Every other tensor: within FP64_TOL of its own scale.
    zero = {"mlp.2.bias", "norm.bias"}
    for k, g in ref.items():
        if k in zero:
            assert max(np.max(np.abs(g)), np.max(np.abs(ours[k]))) <= 1e-12 * largest, k
        else:
            assert np.max(np.abs(ours[k] - g)) <= parity.FP64_TOL * np.max(np.abs(g)), k


def test_cc_attention_layernorm_epsilon_is_checked(monkeypatch):
    """With the grouped-conv weights x1e-3 the query's variance before its LayerNorm is ~1e-6, so eps
    matters: ours (1e-5) passes, a CC attention built with ConvNeXt's 1e-6 fails the float32 check by far
    (>= 100x its bound)."""
    tmodel, variables = attention_pair(seed=4, scale_conv=1e-3)
    x = attention_input(5)
    ok = attention_diffs(tmodel, variables, x)
    assert ok["fp64"] <= parity.FP64_TOL and ok["fp32"] <= ok["bound"], ok
    monkeypatch.setattr(faer, "CC_LN_EPS", 1e-6)
    wrong = attention_diffs(tmodel, variables, x)
    print(f"\n[cc attention eps-sensitive] ours {ok}\n  with eps 1e-6 {wrong}")
    assert wrong["fp32"] >= 100 * wrong["bound"], wrong


# ---------------------------------------------------------------- the network


@pytest.mark.parametrize("train", [False, True], ids=["eval", "train"])
def test_faer_block_by_block(train):
    """Every downsample layer and block, the CC attention output (= the sown feature map), feature and
    logits; drop_path_rate 0 so that train mode is deterministic and compared like eval."""
    tmodel = randomize(reference.FAER(VARIANT, NUM_CLASSES, drop_path_rate=0.0), seed=0)
    diffs = compare(tmodel, FAER(VARIANT, NUM_CLASSES, drop_path_rate=0.0), train, images(1),
                    extra=("attention",), tapped=(CCAttention,))
    print(f"\n[faer {VARIANT} 64px {'train' if train else 'eval'}] {summary(diffs)}")
    assert_taps(diffs)
    assert diffs["attention"]["fp64"] <= parity.FP64_TOL


def test_faer_defaults_are_upstreams():
    model = FAER()
    assert (model.variant, model.num_classes, model.drop_path_rate) == ("base", 40, 0.25)


def test_train_mode_drop_path_wiring():
    """FAER in training with upstream's drop_path_rate 0.25: one DropPath per block, in block order, with
    the reference's rates (none in CC attention or the head); each drops whole samples or scales them by
    1 / (1 - rate); the result differs from eval, is reproducible from the key and differs across keys."""
    rate, batch = 0.25, 8
    tmodel = randomize(reference.FAER(VARIANT, NUM_CLASSES, drop_path_rate=rate), seed=6)
    expected = [getattr(b.drop_path, "drop_prob", 0.0) for stage in tmodel.stages for b in stage]
    module = FAER(VARIANT, NUM_CLASSES, drop_path_rate=rate)
    variables, _ = convert(tmodel, module)
    variables = jax.tree.map(lambda a: a.astype(np.float32), variables)
    x = images(7, batch=batch).astype(np.float32)
    calls = []

    def tap(next_fun, args, kwargs, context):
        out = next_fun(*args, **kwargs)
        if isinstance(context.module, DropPath):
            calls.append((context.module.path, context.module.rate, args[0], out))
        return out

    @jax.jit
    def run(v, x, key):
        calls.clear()
        with nn.intercept_methods(tap):
            out = module.apply(v, x, train=True, rngs={"drop_path": key})
        return out, [(c[2], c[3]) for c in calls]

    (feature, logits), io = run(variables, x, jax.random.key(0))
    assert [c[0][:-1] for c in calls] == [("stages", str(s), str(b)) for s, stage in enumerate(tmodel.stages)
                                          for b in range(len(stage))]
    assert [c[1] for c in calls] == expected
    for (_, r, _, _), (inp, out) in zip(calls, io):
        inp, out = np.asarray(inp), np.asarray(out)
        zero = np.all(out == 0, axis=(1, 2, 3))
        keep = np.float32(1) / np.float32(1 - r)
        np.testing.assert_array_equal(out[~zero], inp[~zero] * keep)
        assert r > 0 or not zero.any()
    dropped = sum(int(np.all(np.asarray(o) == 0, axis=(1, 2, 3)).sum()) for _, o in io)
    assert dropped > 0  # E = 8 x sum(rates) = 18 dropped samples over the 18 blocks; P(none) < 1e-7

    eval_logits = module.apply(variables, x, train=False)[1]
    again = run(variables, x, jax.random.key(0))[0][1]
    other = run(variables, x, jax.random.key(1))[0][1]
    assert np.all(np.isfinite(logits)) and not np.allclose(logits, eval_logits)
    np.testing.assert_array_equal(logits, again)
    assert not np.array_equal(logits, other)


# ---------------------------------------------------------------- full size


@pytest.mark.slow
def test_faer_base_224_full_size():
    """Upstream's convnext_base FAER at 224 px (CC attention on the 7x7 map), batch 1, eval: every tap,
    float64 and float32."""
    tmodel = randomize(reference.FAER("base", NUM_CLASSES), seed=11)
    diffs = compare(tmodel, FAER("base", NUM_CLASSES), False, images(12, 224, 1),
                    extra=("attention",), tapped=(CCAttention,))
    print(f"\n[faer base 224px eval] {summary(diffs)}")
    assert_taps(diffs)
