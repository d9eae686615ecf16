"""ConvNeXt parity against the plain-torch reference, block by block; DropPath; the timm layout.

Reference weights are a seeded draw at a scale that keeps every part of the network visible (`randomize`:
layer scale `gamma` O(1) rather than upstream's 1e-6, LayerNorm affines around (1, 0)). Tolerances, as in
tests/parity.py: float64 on both sides within FP64_TOL relative (a correct port agrees to ~1e-14), float32
judged against torch float64 within `parity.fp32_bound` (4x torch's own float32 error on the same tensor,
floored at 1e-5).
"""

from __future__ import annotations

import re

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch
from flax import linen as nn

import parity
import torch_helpers
from fer_jax import xla
from fer_jax.models import convnext
from fer_jax.models.convnext import ConvNeXt, DropPath
from porting import mapping, reference
from test_reference_keys import read_listing

VARIANT, SIZE, BATCH, NUM_CLASSES = "tiny", 64, 2, 10  # fast tier: stage-4 map 2x2


# ---------------------------------------------------------------- helpers (also used by test_parity_faer.py)


@pytest.fixture(autouse=True)
def one_torch_thread():
    """Every test here runs torch on one thread (torch_helpers.one_torch_thread)."""
    with torch_helpers.one_torch_thread():
        yield


def randomize(model: torch.nn.Module, seed: int) -> torch.nn.Module:
    """Seeded weights that keep activations O(1): Conv / Linear weights N(0, 1/fan_in), biases N(0, 0.1^2),
    LayerNorm weights 1 + N(0, 0.2^2) and biases N(0, 0.1^2), layer scales `gamma` U(0.5, 1.5)."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            module = model.get_submodule(name.rsplit(".", 1)[0]) if "." in name else model
            leaf = name.rsplit(".", 1)[-1]
            if leaf == "gamma":
                p.copy_(torch.rand(p.shape, generator=g) + 0.5)
            elif isinstance(module, torch.nn.Conv2d | torch.nn.Linear) and leaf == "weight":
                p.copy_(torch.randn(p.shape, generator=g) / p[0].numel() ** 0.5)
            elif leaf == "weight":  # a LayerNorm (channels first or last)
                p.copy_(1 + 0.2 * torch.randn(p.shape, generator=g))
            else:
                p.copy_(0.1 * torch.randn(p.shape, generator=g))
    return model.eval()


def convert(tmodel: torch.nn.Module, module: nn.Module, size: int = SIZE) -> tuple[dict, dict]:
    """(float64 numpy variables, module kinds) through the one mapping rule, with strict accounting."""
    kinds, abstract = mapping.module_kinds(module, jax.ShapeDtypeStruct((1, size, size, 3), jnp.float32),
                                           train=False)
    sd = {k: v.detach().cpu().numpy().copy() for k, v in tmodel.state_dict().items()}
    variables, report = mapping.torch_to_flax(sd, abstract, kinds)
    assert not report.unused and not report.missing and len(report.loaded) == len(sd)
    return jax.tree.map(lambda a: np.asarray(a, np.float64), variables), kinds


def images(seed: int = 1, size: int = SIZE, batch: int = BATCH) -> np.ndarray:
    """Standard-normal NHWC float64 images (never constant: a transposed kernel would hide)."""
    return np.random.default_rng(seed).standard_normal((batch, size, size, 3))


def torch_taps(tmodel: torch.nn.Module, x: np.ndarray, train: bool, extra: tuple[str, ...] = ()) -> dict:
    """Every downsample layer and block output (torch module path), the pooled map (`feature_map`), and
    `feature`, `logits`; NHWC, in the dtype of the model's parameters."""
    dtype = next(tmodel.parameters()).dtype
    names = [f"downsample_layers.{i}" for i in range(4)] + [
        f"stages.{s}.{b}" for s, stage in enumerate(tmodel.stages) for b in range(len(stage))] + list(extra)
    taps = {}
    hooks = [tmodel.get_submodule(n).register_forward_hook(
        lambda m, i, o, n=n: taps.__setitem__(n, parity.to_nhwc(o.detach().numpy().copy()))) for n in names]
    xt = torch.from_numpy(np.ascontiguousarray(x.transpose(0, 3, 1, 2))).to(dtype)
    tmodel.train(train)
    with torch.no_grad():
        feature, logits = tmodel(xt)
        for h in hooks:
            h.remove()
        taps["feature_map"] = parity.to_nhwc(tmodel.forward_features(xt).numpy().copy())
    tmodel.eval()
    return {**taps, "feature": feature.numpy().copy(), "logits": logits.numpy().copy()}


def tap_name(path: tuple[str, ...]) -> str:
    return ".".join(path)


def flax_taps(module: nn.Module, variables: dict, x: np.ndarray, train: bool, tapped: tuple[type, ...] = ()
              ) -> dict:
    """The same taps as `torch_taps` from the Flax model, in the dtype of `variables`."""
    kinds = (convnext.Block, convnext.DownsampleLayer, *tapped)

    def run(v, x):
        (feature, logits), state = module.apply(
            v, x, train=train, mutable=["intermediates"],
            capture_intermediates=lambda mdl, method: method == "__call__" and isinstance(mdl, kinds))
        return feature, logits, state["intermediates"]

    dtype = jax.tree.leaves(variables)[0].dtype
    # float32 compiles as training / evaluation compile it (fer_jax.xla's CPU options: the path users run).
    # float64 uses XLA's defaults: without YNNPACK, XLA's float64 depthwise convolution is ~60x slower
    # (measured 1.9 s vs 0.03 s for 7x7 on 56x56x96), which makes a 224 px float64 forward take minutes;
    # the options change summation order only.
    jit = xla.jit(run, "train" if train else "eval") if dtype == np.float32 else jax.jit(run)
    feature, logits, inter = jit(variables, x.astype(dtype))
    flat = {tap_name(k[:-1]): np.asarray(v[0]) for k, v in
            jax.tree_util.tree_flatten_with_path(inter, is_leaf=lambda t: isinstance(t, tuple))[0]
            for k in [tuple(p.key for p in k)] if k[-1] == "__call__" and len(k) > 1}
    return {**flat, "feature_map": np.asarray(inter["feature_map"][0]),
            "feature": np.asarray(feature), "logits": np.asarray(logits)}


def references(tmodel: torch.nn.Module, x: np.ndarray, train: bool, extra: tuple[str, ...] = ()
               ) -> tuple[dict, dict]:
    """Torch taps in (float64, float32)."""
    return (torch_taps(parity.torch_copy(tmodel, torch.float64), x, train, extra),
            torch_taps(parity.torch_copy(tmodel, torch.float32), x, train, extra))


def compare(tmodel: torch.nn.Module, module: nn.Module, train: bool, x: np.ndarray,
            extra: tuple[str, ...] = (), tapped: tuple[type, ...] = (), refs: tuple[dict, dict] | None = None,
            fp64: bool = True) -> dict[str, dict]:
    """Per tap: {"fp64": rel(ours64, torch64), "fp32": rel(ours32, torch64), "bound": fp32 bound};
    `fp64=False` runs our float32 side only."""
    ref64, ref32 = refs or references(tmodel, x, train, extra)
    variables, _ = convert(tmodel, module, x.shape[1])
    ours32 = flax_taps(module, jax.tree.map(lambda a: a.astype(np.float32), variables), x, train, tapped)
    assert set(ours32) == set(ref64), set(ours32) ^ set(ref64)
    out = {k: {"fp32": parity.rel_diff(ours32[k], ref64[k]), "bound": parity.fp32_bound(ref32[k], ref64[k])}
           for k in ref64}
    if fp64:
        with jax.enable_x64(True):
            ours64 = flax_taps(module, variables, x, train, tapped)
        for k in ref64:
            out[k]["fp64"] = parity.rel_diff(ours64[k], ref64[k])
    return out


def summary(diffs: dict[str, dict]) -> str:
    worst = {k: max(diffs.values(), key=lambda d: d[k])[k] for k in ("fp64", "fp32")}
    ratio = max(d["fp32"] / d["bound"] for d in diffs.values())
    return (f"{len(diffs)} taps: worst fp64 {worst['fp64']:.1e}, worst fp32 {worst['fp32']:.1e}, "
            f"worst fp32/bound {ratio:.2f}; logits {diffs['logits']}")


def assert_taps(diffs: dict[str, dict]) -> None:
    for name, d in diffs.items():
        assert d["fp64"] <= parity.FP64_TOL, (name, d)  # float64 both sides: rounding cannot hide a bug
        assert d["fp32"] <= d["bound"], (name, d)  # within 4x torch's own float32 error (module docstring)


# ---------------------------------------------------------------- drop-path rates


@pytest.mark.parametrize("start, end, steps", [
    (0, 0.25, 36), (0, 0.1, 18), (0, 0.2, 36), (0, 0.4, 36), (0, 0.5, 36), (0, 0.3, 18), (0, 0.0, 36),
    (1, 0.25, 3), (1, 0.25, 2), (1, 0.25, 1), (0, 0.123, 200), (0, 1 / 3, 7), (0.5, 0.1, 40)])
def test_linspace_equals_torch_bit_for_bit(start, end, steps):
    expected = [v.item() for v in torch.linspace(start, end, steps)]
    assert list(convnext.torch_linspace(start, end, steps)) == expected


@pytest.mark.parametrize("variant, rate", [("tiny", 0.1), ("base", 0.25), ("large", 0.5)])
def test_block_rates_equal_reference(variant, rate):
    """Each block's rate in block order, and Identity (rate 0) where the reference has no DropPath."""
    tmodel = reference.ConvNeXt(variant, 10, rate)
    expected = [getattr(b.drop_path, "drop_prob", 0.0) for stage in tmodel.stages for b in stage]
    ours = [r for stage in convnext.drop_path_rates(convnext.VARIANTS[variant][0], rate) for r in stage]
    assert ours == expected and expected[0] == 0.0 and expected[-1] == pytest.approx(rate)


# ---------------------------------------------------------------- key layouts and the mapping rule


def test_reference_keys_equal_faer_baseline_listing():
    """FAER's baseline `convnext_base(num_classes=40)`: keys, order, shapes, dtypes (344 entries)."""
    got = [(k, list(v.shape), str(v.dtype).replace("torch.", ""))
           for k, v in reference.ConvNeXt("base", 40, 0.25).state_dict().items()]
    assert got == read_listing("keys_faer_baseline.txt")
    assert sum(p.numel() for p in reference.ConvNeXt("base", 40).parameters()) == 87_607_464  # listing header


def timm_keys(variant: str, num_classes: int) -> list[tuple[str, list[int]]]:
    """timm 1.0 `convnext_<variant>` state_dict as read from timm/models/convnext.py
    (huggingface/pytorch-image-models 03fa149): `stem` = Sequential(Conv2d 4x4/4, LayerNorm2d); stage 0's
    `downsample` is an Identity (stride 1, same width), stages 1..3 have Sequential(LayerNorm2d, Conv2d
    2x2/2); a block registers `gamma` itself (so it comes first) and `conv_dw`, `norm`, `mlp.fc1`, `mlp.fc2`
    (Mlp's `norm` is an Identity); `NormMlpClassifierHead` has `norm` and `fc` (pre_logits Identity)."""
    depths, dims = convnext.VARIANTS[variant]
    keys = [("stem.0.weight", [dims[0], 3, 4, 4]), ("stem.0.bias", [dims[0]]),
            ("stem.1.weight", [dims[0]]), ("stem.1.bias", [dims[0]])]
    for s, (depth, c) in enumerate(zip(depths, dims)):
        if s > 0:
            p = dims[s - 1]
            keys += [(f"stages.{s}.downsample.0.weight", [p]), (f"stages.{s}.downsample.0.bias", [p]),
                     (f"stages.{s}.downsample.1.weight", [c, p, 2, 2]), (f"stages.{s}.downsample.1.bias", [c])]
        for b in range(depth):
            keys += [(f"stages.{s}.blocks.{b}.{k}", shape) for k, shape in (
                ("gamma", [c]), ("conv_dw.weight", [c, 1, 7, 7]), ("conv_dw.bias", [c]), ("norm.weight", [c]),
                ("norm.bias", [c]), ("mlp.fc1.weight", [4 * c, c]), ("mlp.fc1.bias", [4 * c]),
                ("mlp.fc2.weight", [c, 4 * c]), ("mlp.fc2.bias", [c]))]
    return keys + [("head.norm.weight", [dims[-1]]), ("head.norm.bias", [dims[-1]]),
                   ("head.fc.weight", [num_classes, dims[-1]]), ("head.fc.bias", [num_classes])]


@pytest.mark.parametrize("variant", ["tiny", "base"])
def test_timm_reference_keys_equal_timm_layout(variant):
    got = [(k, list(v.shape)) for k, v in reference.TimmConvNeXt(variant, 1000).state_dict().items()]
    assert got == timm_keys(variant, 1000)


def repeat_checkpoint_names(key: str) -> str:
    """upstream's `repeat_checkpoint` key renaming (FAER and MFTN-FER models/convnext.py), written out from
    backbones.md section 4: timm names under `net.` -> facebookresearch names."""
    key = key.replace("net.stem.", "downsample_layers.0.")
    key = re.sub(r"net.stages.([0-9]+).blocks.([0-9]+)", r"stages.\1.\2", key)
    key = re.sub(r"net.stages.([0-9]+).downsample.([0-9]+)", r"downsample_layers.\1.\2", key)
    key = key.replace("conv_dw", "dwconv").replace("mlp.fc", "pwconv").replace("net.head.fc.", "head.")
    return key.replace("net.head.norm", "norm") if key.startswith("net.head.norm.") else key


def test_timm_layout_renamed_by_upstream_rules_is_the_facebookresearch_model():
    """timm keys under `net.`, renamed as upstream's loader renames them, are exactly ConvNeXt's keys and
    shapes, and the renamed weights give the same logits (float64: same arithmetic, other op order)."""
    timm = randomize(reference.TimmConvNeXt(VARIANT, NUM_CLASSES), seed=5).double()
    renamed = {repeat_checkpoint_names("net." + k): v for k, v in timm.state_dict().items()}
    fb = reference.ConvNeXt(VARIANT, NUM_CLASSES).double().eval()
    assert {k: list(v.shape) for k, v in renamed.items()} == {k: list(v.shape) for k, v in fb.state_dict().items()}
    fb.load_state_dict(renamed, strict=True)
    x = torch.from_numpy(images(2).transpose(0, 3, 1, 2).copy())
    with torch.no_grad():
        want, (_, got) = timm(x), fb(x)
    assert parity.rel_diff(got.numpy(), want.numpy()) <= 1e-12  # float64 rounding of a different op order


def test_mapping_round_trip_and_layouts():
    """torch -> Flax -> torch by the one rule returns every key and value; depthwise kernels are HWIO
    [7, 7, 1, C] (feature_group_count = C) and `gamma` a raw parameter."""
    tmodel = randomize(reference.ConvNeXt(VARIANT, NUM_CLASSES), seed=3)
    variables, kinds = convert(tmodel, ConvNeXt(VARIANT, NUM_CLASSES))
    params = variables["params"]
    assert params["stages"]["1"]["2"]["dwconv"]["kernel"].shape == (7, 7, 1, 192)
    assert params["downsample_layers"]["0"]["0"]["kernel"].shape == (4, 4, 3, 96)
    assert params["stages"]["0"]["0"]["gamma"].shape == (96,)
    assert kinds[("downsample_layers", "1", "0")] == "layernorm" and kinds[("stages", "3", "2", "pwconv2")] == "dense"
    back = mapping.flax_to_torch(variables, kinds)
    sd = tmodel.state_dict()
    assert set(back) == set(sd)
    for k, v in sd.items():
        np.testing.assert_array_equal(back[k], v.double().numpy(), err_msg=k)


def test_init_follows_upstream():
    """trunc_normal(.02) kernels (a normal at +-100 sigma truncation), zero biases, LayerNorms 1/0,
    gamma 1e-6; unknown variants refused."""
    v = jax.jit(lambda x: ConvNeXt("tiny", 10).init(jax.random.key(0), x, train=False))(jnp.zeros((1, 32, 32, 3)))
    v = v["params"]
    w = np.asarray(v["stages"]["2"]["0"]["pwconv1"]["kernel"])
    assert abs(w.std() - 0.02) < 0.001 and abs(w.mean()) < 0.001
    np.testing.assert_array_equal(v["stages"]["2"]["0"]["gamma"], np.full(384, 1e-6, np.float32))
    np.testing.assert_array_equal(v["head"]["bias"], np.zeros(10))
    np.testing.assert_array_equal(v["norm"]["scale"], np.ones(768))
    np.testing.assert_array_equal(v["downsample_layers"]["0"]["0"]["bias"], np.zeros(96))
    with pytest.raises(ValueError, match="unknown ConvNeXt variant"):
        ConvNeXt("huge").init(jax.random.key(0), jnp.zeros((1, 32, 32, 3)), train=False)


# ---------------------------------------------------------------- parity


@pytest.mark.parametrize("train", [False, True], ids=["eval", "train"])
def test_block_by_block(train):
    """Every downsample layer, every block, the pooled map, feature and logits; train mode with
    drop_path_rate 0 is deterministic and compared like eval."""
    tmodel = randomize(reference.ConvNeXt(VARIANT, NUM_CLASSES), seed=0)
    diffs = compare(tmodel, ConvNeXt(VARIANT, NUM_CLASSES), train, images())
    print(f"\n[convnext {VARIANT} {SIZE}px {'train' if train else 'eval'}] {summary(diffs)}")
    assert_taps(diffs)


def scale_(p: torch.Tensor, factor: float) -> None:
    with torch.no_grad():
        p.mul_(factor)


def eps_sensitive(tmodel: reference.ConvNeXt) -> reference.ConvNeXt:
    """Weights under which the LayerNorm epsilon shows: the normalised variances become ~1e-6 or less.

    Stem conv x1e-3 (stem LayerNorm), every dwconv x1e-3 (every block LayerNorm), the last downsample conv
    and the last stage's gammas x1e-3 (the last stage output, hence the final norm's input, ~1e-3).
    """
    for p in tmodel.downsample_layers[0][0].parameters():
        scale_(p, 1e-3)
    for p in tmodel.downsample_layers[3][1].parameters():
        scale_(p, 1e-3)
    for stage in tmodel.stages:
        for block in stage:
            for p in block.dwconv.parameters():
                scale_(p, 1e-3)
    for block in tmodel.stages[3]:
        scale_(block.gamma, 1e-3)
    return tmodel


def test_layernorm_epsilon_is_checked(monkeypatch):
    """With `randomize`'s O(1) weights, LN eps 1e-5 instead of 1e-6 moves the stem output by 7e-6 relative
    (below the float32 floor 1e-5) and the logits by 3e-5 (caught by 3x only); with `eps_sensitive`
    weights ours still passes every tap, and a model built with LN eps 1e-5 fails the float32 check by
    far (>= 100x its bound at the stem output and at the logits; measured ~5e4x)."""
    tmodel = eps_sensitive(randomize(reference.ConvNeXt(VARIANT, NUM_CLASSES), seed=4))
    x = images(6)
    refs = references(tmodel, x, False)
    diffs = compare(tmodel, ConvNeXt(VARIANT, NUM_CLASSES), False, x, refs=refs)
    print(f"\n[convnext eps-sensitive] {summary(diffs)}")
    assert_taps(diffs)
    monkeypatch.setattr(convnext, "LN_EPS", 1e-5)
    wrong = compare(tmodel, ConvNeXt(VARIANT, NUM_CLASSES), False, x, refs=refs, fp64=False)
    print(f"[convnext with LN eps 1e-5] stem {wrong['downsample_layers.0']}, logits {wrong['logits']}")
    for tap in ("downsample_layers.0", "logits"):
        assert wrong[tap]["fp32"] >= 100 * wrong[tap]["bound"], (tap, wrong[tap])


def test_bfloat16_compute_dtype():
    """dtype=bfloat16: float32 parameters, bfloat16 outputs within bfloat16 rounding of float32."""
    tmodel = randomize(reference.ConvNeXt(VARIANT, NUM_CLASSES), seed=7)
    variables, _ = convert(tmodel, ConvNeXt(VARIANT, NUM_CLASSES), 32)
    variables = jax.tree.map(lambda a: a.astype(np.float32), variables)
    x = images(8, 32).astype(np.float32)
    f32 = jax.jit(lambda v, x: ConvNeXt(VARIANT, NUM_CLASSES).apply(v, x, train=False))(variables, x)
    bf16 = jax.jit(lambda v, x: ConvNeXt(VARIANT, NUM_CLASSES, dtype=jnp.bfloat16).apply(v, x, train=False))(
        variables, x)
    assert all(o.dtype == jnp.bfloat16 for o in bf16)
    for a, b in zip(bf16, f32):
        # 8-bit mantissa through 18 blocks: a few percent of the output scale, far from an O(1) mismatch.
        assert parity.rel_diff(np.asarray(a, np.float32), np.asarray(b)) <= 0.1


class Backbone(nn.Module):
    """How MFTN-FER holds ConvNeXt: under a prefix, using its stage maps and its head."""

    @nn.compact
    def __call__(self, x, *, train: bool):
        body = ConvNeXt(VARIANT, NUM_CLASSES, name="backbone")
        stages = body.stages_out(x, train=train)
        return stages, body.forward_head(stages[-1])


def test_stage_outputs_under_a_prefix():
    """`stages_out` and `forward_head` of a ConvNeXt held under `backbone` (float32): the reference's stage
    maps, feature and logits within the derived bound."""
    tmodel = randomize(reference.ConvNeXt(VARIANT, NUM_CLASSES), seed=9)
    variables, _ = convert(tmodel, ConvNeXt(VARIANT, NUM_CLASSES))
    params = {"backbone": jax.tree.map(lambda a: a.astype(np.float32), variables["params"])}
    x = images(10)
    stages, head = jax.jit(lambda p, x: Backbone().apply({"params": p}, x, train=False))(params, x.astype(np.float32))
    assert [s.shape for s in stages] == [(BATCH, SIZE // r, SIZE // r, c) for r, c in
                                         zip((4, 8, 16, 32), convnext.VARIANTS[VARIANT][1])]
    xt = torch.from_numpy(x.transpose(0, 3, 1, 2).copy())
    ref = {}
    for d in (torch.float64, torch.float32):
        model = parity.torch_copy(tmodel, d)
        with torch.no_grad():
            ref[d] = [parity.to_nhwc(t.numpy()) for t in (*model.forward_stages(xt.to(d)), *model(xt.to(d)))]
    for ours, t64, t32 in zip((*stages, *head), ref[torch.float64], ref[torch.float32], strict=True):
        assert parity.rel_diff(ours, t64) <= parity.fp32_bound(t32, t64)


# ---------------------------------------------------------------- DropPath


def drop(rate: float, x, train: bool = True, seed: int = 0):
    return DropPath(rate).apply({}, x, train=train, rngs={"drop_path": jax.random.key(seed)})


def test_drop_path_statistics():
    """Whole samples dropped with probability `rate` (all-or-nothing over the non-leading axes), the
    others scaled by 1 / (1 - rate) exactly as timm (mask / keep, then x * mask)."""
    n, rate = 8192, 0.3
    x = np.random.default_rng(0).standard_normal((n, 3, 3, 4)).astype(np.float32)
    out = np.asarray(drop(rate, x))
    dropped = np.all(out == 0, axis=(1, 2, 3))
    kept = ~dropped
    # Binomial(n, 0.3) fraction: standard deviation sqrt(0.21 / n) = 0.005; 5 sigma.
    assert abs(dropped.mean() - rate) <= 5 * np.sqrt(rate * (1 - rate) / n)
    np.testing.assert_array_equal(out[kept], x[kept] * (np.float32(1) / np.float32(1 - rate)))
    assert not np.any(out[kept] == 0)  # x has no zeros: a kept sample is kept whole


def test_drop_path_rate_one_is_exact_zero_with_zero_gradient():
    x = 1e30 * np.random.default_rng(1).standard_normal((6, 2, 2, 3)).astype(np.float32)
    out, grad = jax.value_and_grad(lambda x: jnp.sum(drop(1.0, x) * 3.0))(x)
    assert float(out) == 0.0
    np.testing.assert_array_equal(np.asarray(drop(1.0, x)), np.zeros_like(x))
    np.testing.assert_array_equal(np.asarray(grad), np.zeros_like(x))


def test_drop_path_identity_in_eval_and_deterministic_given_the_key():
    x = np.random.default_rng(2).standard_normal((64, 5)).astype(np.float32)
    np.testing.assert_array_equal(DropPath(0.5).apply({}, x, train=False), x)  # no RNG needed
    np.testing.assert_array_equal(DropPath(0.0).apply({}, x, train=True), x)
    np.testing.assert_array_equal(drop(0.5, x, seed=3), drop(0.5, x, seed=3))
    assert not np.array_equal(drop(0.5, x, seed=3), drop(0.5, x, seed=4))
    with pytest.raises(Exception, match='needs PRNG for "drop_path"'):
        DropPath(0.5).apply({}, x, train=True)


def test_block_drop_path_drops_the_residual_branch():
    """A block with drop-path rate 0.4 in training gives, per sample, either its input (branch dropped) or
    input + branch / 0.6, with the eval-mode branch; drops are 40% of samples."""
    block = convnext.Block(16, 0.4)
    x = np.random.default_rng(3).standard_normal((4, 5, 5, 16)).astype(np.float32)
    v = block.init(jax.random.key(0), x, train=False)
    v = jax.tree.map(lambda a: a + 0.3, v)  # gamma O(1) so that the branch is not ~1e-6
    branch = np.asarray(block.apply(v, x, train=False)) - x
    keys = jax.random.split(jax.random.key(1), 500)
    outs = np.asarray(jax.jit(jax.vmap(lambda k: block.apply(v, x, train=True, rngs={"drop_path": k})))(keys))
    delta = outs - x  # [keys, B, ...]
    dropped = np.all(delta == 0, axis=(2, 3, 4))
    kept = delta[~dropped]
    scale = np.max(np.abs(branch))
    # float32 rounding of x + y and of (x + y) - x: a few ulps of the block output.
    assert np.max(np.abs(kept - np.broadcast_to(branch / 0.6, outs.shape)[~dropped])) <= 1e-5 * scale
    assert abs(dropped.mean() - 0.4) <= 5 * np.sqrt(0.24 / dropped.size)


def test_block_with_rate_one_has_zero_branch_gradients():
    """Rate 1.0 (MFTN-FER's first blocks): output = input and every block parameter gets an exact zero
    gradient, no NaN."""
    block = convnext.Block(8, 1.0)
    x = np.random.default_rng(4).standard_normal((3, 4, 4, 8)).astype(np.float32)
    v = jax.tree.map(lambda a: a + 0.5, block.init(jax.random.key(0), x, train=False))

    def loss(params, x):
        return jnp.sum(block.apply({"params": params}, x, train=True, rngs={"drop_path": jax.random.key(5)}) ** 2)

    out = block.apply(v, x, train=True, rngs={"drop_path": jax.random.key(5)})
    np.testing.assert_array_equal(np.asarray(out), x)
    grads, gx = jax.grad(loss, argnums=(0, 1))(v["params"], x)
    for g in jax.tree.leaves(grads):
        np.testing.assert_array_equal(np.asarray(g), np.zeros_like(g))
    np.testing.assert_array_equal(np.asarray(gx), 2 * x)
