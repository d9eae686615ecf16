"""FERAtt parity against the plain-torch reference: FERAtt+Cls (8 and 7 classes) and FERAtt+Rep+Cls.

Checks, in order: the reference's state_dict equals upstream's listings (keys, order, shapes, dtypes, which
entries alias which); the bilinear x2 upsampling equals torch's F.interpolate at every pixel, borders
included; conversion by the one mapping rule after folding the 216 aliased encoder keys into one copy, and
its exact inverse; every output in eval and in train mode (batch statistics) plus the updated running
statistics of all 53 BatchNorms, and the sown class-activation map, in float64 and float32 (FERAtt+Cls with 8
classes and FERAtt+Rep+Cls: the 7-class variant differs only in the classifier's width).

Tolerances (tests/parity.py): float64 on both sides within FP64_TOL relative (a correct port agrees to
~1e-14, so any semantic difference shows); float32 ours against torch float64 within `fp32_bound`, i.e. 4x
torch's own float32 error on the same tensor (floor 1e-5). Upstream's input size (64 px) is already small:
the fast tier runs it at batch 2, one compile per (variant, dtype, mode).
"""

from __future__ import annotations

import ast
import pathlib

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch

import parity
import torch_helpers
from fer_jax import xla
from fer_jax.models.feratt import ENCODER_ALIASES, FERAttention, FERAttentionGMM, upsample_bilinear_2x
from porting import mapping
from porting.reference import feratt as ref_feratt

B, SIZE = 2, 64
KEYS = pathlib.Path(__file__).parent / "fixtures" / "upstream_keys"
CASES = {  # id: (listing, reference constructor, Flax module, output names in upstream order)
    "cls8": ("keys_feratt.txt", lambda: ref_feratt.ferattention(32, 8), lambda: FERAttention(num_classes=8),
             ("y", "att", "g_att", "g_ft")),
    "cls7": ("keys_feratt_c7.txt", lambda: ref_feratt.ferattention(32, 7), lambda: FERAttention(num_classes=7),
             ("y", "att", "g_att", "g_ft")),
    "rep8": ("keys_feratt_gmm_c8.txt", lambda: ref_feratt.ferattentiongmm(32, 8),
             lambda: FERAttentionGMM(num_classes=8, dim=32), ("z", "y", "att", "g_att", "g_ft")),
}
PARAM_COUNTS = {"cls8": 46_305_737, "cls7": 46_302_059, "rep8": 46_318_313}  # the listings' headers
NUM_ALIASES = 216


def read_listing(name: str) -> list[tuple[str, list[int], str, str | None]]:
    """(key, shape, dtype, alias-of key or None) rows of an upstream listing."""
    path = KEYS / name
    assert path.exists(), f"{path} missing: copy it from shared/reference/{name} (generated from upstream)"
    rows = []
    for line in path.read_text().splitlines():
        if line.startswith("#") or not line.strip():
            continue
        parts = [p.strip() for p in line.split("  ") if p.strip()]
        alias = parts[4].removeprefix("alias-of ").strip() if len(parts) > 4 else None
        rows.append((parts[0], ast.literal_eval(parts[1]), parts[2], alias))
    return rows


def canonical(key: str) -> str | None:
    """The encoder key an alias stands for (None: not an alias)."""
    for alias, target in ENCODER_ALIASES:
        if key.startswith(alias + "."):
            return target + key[len(alias):]
    return None


def fold_aliases(sd: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """One copy of the encoder: drops each alias after checking it equals its canonical entry."""
    aliases = [k for k in sd if canonical(k)]
    assert len(aliases) == NUM_ALIASES
    for k in aliases:
        np.testing.assert_array_equal(sd[k], sd[canonical(k)], err_msg=k)
    return {k: v for k, v in sd.items() if not canonical(k)}


# ---------------------------------------------------------------- state_dict and aliases


def shared_entries(model: torch.nn.Module) -> dict[str, str]:
    """{key: the earlier key whose tensor it shares} over a state_dict."""
    first_of, shared = {}, {}
    for k, v in model.state_dict().items():
        ptr = v.untyped_storage().data_ptr()
        if ptr in first_of:
            shared[k] = first_of[ptr]
        first_of.setdefault(ptr, k)
    return shared


@pytest.mark.parametrize("case", list(CASES))
def test_state_dict_equals_upstream_listing(case):
    """Keys, order, shapes, dtypes, and which entries share a tensor, as upstream's listing says."""
    listing, build, _, _ = CASES[case]
    expected = read_listing(listing)
    model = build()
    assert [(k, list(v.shape), str(v.dtype).replace("torch.", "")) for k, v in model.state_dict().items()] == \
        [row[:3] for row in expected]
    assert shared_entries(model) == {k: alias for k, _, _, alias in expected if alias}
    assert sum(p.numel() for p in model.parameters()) == PARAM_COUNTS[case]


def test_alias_table_matches_shared_tensors():
    """ENCODER_ALIASES maps every entry that shares its tensor with an earlier one (216, upstream's aliases:
    the test above), and only those, onto that entry."""
    shared = shared_entries(CASES["cls8"][1]())
    assert len(shared) == NUM_ALIASES
    names = ref_feratt.ferattention().state_dict()
    assert {k: canonical(k) for k in names if canonical(k)} == shared


# ---------------------------------------------------------------- upsampling


@pytest.mark.parametrize("shape", [(1, 1), (2, 2), (3, 5), (4, 4), (7, 2)])
def test_upsample_matches_torch_interpolate(shape):
    """F.interpolate(scale 2, bilinear, align_corners=False) at every pixel; borders repeat the edge."""
    x = np.random.default_rng(0).standard_normal((2, 3, *shape))
    with torch.no_grad():
        ref = torch.nn.functional.interpolate(torch.from_numpy(x), scale_factor=2, mode="bilinear",
                                              align_corners=False).numpy()
    with jax.enable_x64(True):
        ours = np.asarray(upsample_bilinear_2x(jnp.asarray(parity.to_nhwc(x))))
        resized = np.asarray(jax.image.resize(jnp.asarray(parity.to_nhwc(x)), ours.shape, "bilinear"))
    ref = parity.to_nhwc(ref)
    assert ours.shape == ref.shape
    np.testing.assert_allclose(ours, ref, rtol=0, atol=1e-14)  # 0.25/0.75 blends: rounding only
    # The corners are the input's corners, and jax.image.resize's half-pixel bilinear agrees everywhere.
    xs = parity.to_nhwc(x)
    for i, j in ((0, 0), (0, -1), (-1, 0), (-1, -1)):
        np.testing.assert_allclose(ours[:, i, j], xs[:, i, j], rtol=0, atol=1e-15)
    np.testing.assert_allclose(resized, ref, rtol=0, atol=1e-14)


# ---------------------------------------------------------------- conversion and parity


@torch_helpers.one_torch_thread()
def reference_model(case: str, seed: int) -> torch.nn.Module:
    """The reference with random weights and calibrated-then-perturbed BatchNorm statistics (float32)."""
    x = torch.rand(4, 3, SIZE, SIZE, generator=torch.Generator().manual_seed(seed + 100))
    return torch_helpers.randomize(CASES[case][1](), seed, inputs=(x,))


def convert(tmodel: torch.nn.Module, case: str):
    """(module, float64 variables, kinds, report, state_dict) through the one mapping rule."""
    module = CASES[case][2]()
    kinds, abstract = mapping.module_kinds(module, jax.ShapeDtypeStruct((1, SIZE, SIZE, 3), jnp.float32),
                                           train=False)
    sd = torch_helpers.state_dict_numpy(tmodel)
    variables, report = mapping.torch_to_flax(fold_aliases(sd), abstract, kinds)
    return module, jax.tree.map(lambda a: np.asarray(a, np.float64), variables), kinds, report, sd


@torch_helpers.one_torch_thread()
def torch_run(tmodel: torch.nn.Module, x: np.ndarray, dtype: torch.dtype, train: bool):
    """(outputs NHWC, the classifier's layer4 map NHWC, running stats after the forward) of a copy."""
    model = parity.torch_copy(tmodel, dtype).train(train)
    taps = []
    hook = model.netclass.layer4.register_forward_hook(lambda m, i, o: taps.append(o.detach().numpy().copy()))
    with torch.no_grad():
        out = model(torch.from_numpy(x).to(dtype))
    hook.remove()
    return ([parity.to_nhwc(o.numpy().copy()) for o in out], parity.to_nhwc(taps[0]),
            {k: v for k, v in parity.torch_buffers(model).items() if not canonical(k)})


def flax_run(module, variables, kinds, x: np.ndarray, train: bool):
    """The same in the dtype of `variables`.

    float32 compiles as training / evaluation compile it (fer_jax.xla's per-kind options: the path users
    run). float64 compiles with XLA's defaults: it checks semantics, which compile options do not change
    (summation order only), and without YNNPACK XLA's float64 convolutions run ~10x slower here (measured:
    eval 3.4 s compile + 1.1 s run with the defaults, 8.4 s + 10.4 s with the evaluation options).
    """
    mutable = ["batch_stats", "intermediates"] if train else ["intermediates"]
    dtype = jax.tree.leaves(variables)[0].dtype

    def fn(v, x):
        return module.apply(v, x, train=train, mutable=mutable)

    apply = jax.jit(fn) if dtype == np.float64 else xla.jit(fn, "train" if train else "eval")
    out, state = apply(variables, parity.to_nhwc(x).astype(dtype))
    stats = parity.flax_to_torch_names(state["batch_stats"], kinds, "batch_stats") if train else {}
    return ([np.asarray(o) for o in out], np.asarray(state["intermediates"]["netclass"]["feature_map"][0]), stats)


def diffs(ours, ref64, ref32, names, train: bool) -> dict[str, tuple[float, float]]:
    """{tensor: (rel(ours, torch64), fp32 bound from torch32)} over outputs, feature map and (train) running
    statistics."""
    (o_out, o_map, o_stats), (r_out, r_map, r_stats), (t_out, t_map, t_stats) = ours, ref64, ref32
    result = {n: (parity.rel_diff(o_out[i], r_out[i]), parity.fp32_bound(t_out[i], r_out[i]))
              for i, n in enumerate(names)}
    result["feature_map"] = (parity.rel_diff(o_map, r_map), parity.fp32_bound(t_map, r_map))
    if train:
        assert set(o_stats) == set(r_stats)
        result["running_stats"] = (max(parity.rel_diff(o_stats[k], v) for k, v in r_stats.items()),
                                   max(parity.fp32_bound(t_stats[k], v) for k, v in r_stats.items()))
    return result


# The forward comparisons run for cls8 and rep8: cls7 differs from cls8 only in the classifier's width (its
# listing and conversion are checked above and below), and its forward took ~30 s of the suite.
FORWARD = ("cls8", "rep8")


@pytest.fixture(scope="module")
def converted(request):
    """One variant's reference model with random weights and its conversion (`convert`)."""
    case = request.param
    tmodel = reference_model(case, list(CASES).index(case))
    module, v64, kinds, report, sd = convert(tmodel, case)
    return {"case": case, "tmodel": tmodel, "module": module, "v64": v64, "kinds": kinds, "report": report, "sd": sd}


@pytest.fixture(scope="module")
def measured(converted):
    """Every comparison of one variant: {(dtype, mode): {tensor: (difference, fp32 bound)}}."""
    case, tmodel, module, v64, kinds = (converted[k] for k in ("case", "tmodel", "module", "v64", "kinds"))
    x = np.random.default_rng(list(CASES).index(case) + 1).random((B, 3, SIZE, SIZE))  # [0, 1] like upstream's
    names = CASES[case][3]
    out = {}
    for train in (False, True):
        mode = "train" if train else "eval"
        ref64, ref32 = torch_run(tmodel, x, torch.float64, train), torch_run(tmodel, x, torch.float32, train)
        with jax.enable_x64(True):
            ours64 = flax_run(module, v64, kinds, x, train)
        ours32 = flax_run(module, jax.tree.map(lambda a: a.astype(np.float32), v64), kinds, x, train)
        out[("float64", mode)] = diffs(ours64, ref64, ref32, names, train)
        out[("float32", mode)] = diffs(ours32, ref64, ref32, names, train)
    print(f"\n[feratt {case}] " + "; ".join(
        f"{d} {m}: " + ", ".join(f"{n} {v[0]:.1e}" for n, v in out[(d, m)].items())
        for d in ("float64", "float32") for m in ("eval", "train")))
    return out


@pytest.mark.parametrize("converted", list(CASES), indirect=True, scope="module")
def test_conversion_accounts_for_every_key(converted):
    """After folding the aliases, every key loads (53 BatchNorm counters kept), nothing unused or missing; the
    inverse gives back every upstream key and value, encoder.fc and (re-added) aliases included."""
    report, sd = converted["report"], converted["sd"]
    assert len(report.num_batches_tracked) == 53 and not report.unused and not report.missing
    assert "attention_map.encoder.fc.weight" in report.loaded
    back = mapping.flax_to_torch(converted["v64"], converted["kinds"], num_batches_tracked=report.num_batches_tracked)
    back.update({alias: back[canonical(alias)] for alias in sd if canonical(alias)})
    assert set(back) == set(sd)
    for k, v in sd.items():
        np.testing.assert_array_equal(back[k].astype(v.dtype), v, err_msg=k)


@pytest.mark.parametrize("converted", FORWARD, indirect=True, scope="module")
@pytest.mark.parametrize("mode", ["eval", "train"])
def test_outputs_float64(measured, mode):
    """Every output, the sown feature map and (train) the running statistics, float64 on both sides."""
    for name, (diff, _) in measured[("float64", mode)].items():
        assert diff <= parity.FP64_TOL, (name, diff)


@pytest.mark.parametrize("converted", FORWARD, indirect=True, scope="module")
@pytest.mark.parametrize("mode", ["eval", "train"])
def test_outputs_float32(measured, mode):
    """Our float32 within 4x torch's own float32 error of torch float64, tensor by tensor."""
    for name, (diff, bound) in measured[("float32", mode)].items():
        assert diff <= bound, (name, diff, bound)
