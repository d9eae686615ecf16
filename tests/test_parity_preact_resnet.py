"""FERAtt's PreActResNet18 parity against the plain-torch reference: the classification baseline
(`preactresnet18`) and the representation classifier (`preactresembnetex18`, outputs (z, y)).

Random weights with calibrated-then-perturbed BatchNorm statistics, so that the pre-activated tensor
relu(bn1(x)) differs from x: a projection shortcut that read x (or an identity shortcut that read the
pre-activated tensor), or a final BN + ReLU, would show at once. Upstream's input size, 32 px, at batch 2.
Tolerances as tests/parity.py: float64 both sides within FP64_TOL; our float32 within 4x torch's own
float32 error (floor 1e-5) of torch float64.
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
from fer_jax.models.preact_resnet import PreActResNet18
from porting import mapping
from porting.reference import preact_resnet as ref_preact

B, SIZE = 2, 32
LISTING = pathlib.Path(__file__).parent / "fixtures" / "upstream_keys" / "keys_preactresnet18.txt"
CASES = {  # id: (reference constructor, Flax module, output names)
    "baseline": (lambda: ref_preact.preactresnet18(num_classes=8), lambda: PreActResNet18(num_classes=8),
                 ("logits",)),
    "embedding": (lambda: ref_preact.preactresembnetex18(dim=32, num_classes=7),
                  lambda: PreActResNet18(num_classes=7, dim=32), ("z", "y")),
}


def test_state_dict_equals_upstream_listing():
    """Keys, order, shapes and dtypes of upstream's `preactresnet18(num_classes=8, num_channels=3)`."""
    expected = []
    for line in LISTING.read_text().splitlines():
        if line.strip() and not line.startswith("#"):
            key, shape, dtype = (part.strip() for part in line.split("  ")[:3])
            expected.append((key, ast.literal_eval(shape), dtype))
    model = ref_preact.preactresnet18(num_classes=8)
    assert [(k, list(v.shape), str(v.dtype).replace("torch.", "")) for k, v in model.state_dict().items()] == expected
    assert sum(p.numel() for p in model.parameters()) == 11_170_120  # the listing's header


def test_embedding_variant_keys():
    """`preactresembnetex18` = the same trunk + `linear` [dim, 512] + `classification` [classes, dim]."""
    base = {k: list(v.shape) for k, v in ref_preact.preactresnet18(num_classes=7).state_dict().items()}
    emb = {k: list(v.shape) for k, v in ref_preact.preactresembnetex18(dim=32, num_classes=7).state_dict().items()}
    base.update({"linear.weight": [32, 512], "linear.bias": [32], "classification.weight": [7, 32],
                 "classification.bias": [7]})
    assert emb == base


def run(case: str, tmodel: torch.nn.Module, x: np.ndarray, dtype, train: bool):
    """(torch outputs + layer4 map + running stats) and ours, in `dtype`, after one forward."""
    tdtype = torch.float64 if dtype == np.float64 else torch.float32
    model = parity.torch_copy(tmodel, tdtype).train(train)
    taps = []
    hook = model.layer4.register_forward_hook(lambda m, i, o: taps.append(o.detach().numpy().copy()))
    with torch.no_grad():
        out = model(torch.from_numpy(x).to(tdtype))
    hook.remove()
    out = out if isinstance(out, tuple) else (out,)
    theirs = {**{n: o.numpy().copy() for n, o in zip(CASES[case][2], out)},
              "feature_map": parity.to_nhwc(taps[0])}

    module = CASES[case][1]()
    kinds, abstract = mapping.module_kinds(module, jax.ShapeDtypeStruct((1, SIZE, SIZE, 3), jnp.float32),
                                           train=False)
    variables, report = mapping.torch_to_flax(torch_helpers.state_dict_numpy(tmodel), abstract, kinds)
    assert len(report.num_batches_tracked) == 16 and not report.unused and not report.missing
    variables = jax.tree.map(lambda a: np.asarray(a, dtype), variables)
    mutable = ["batch_stats", "intermediates"] if train else ["intermediates"]

    def fn(v, x):
        return module.apply(v, x, train=train, mutable=mutable)

    # float64 with XLA's defaults (semantics; the evaluation options make float64 convolutions ~10x slower),
    # float32 as training / evaluation compile it (see test_parity_feratt.flax_run).
    apply = jax.jit(fn) if dtype == np.float64 else xla.jit(fn, "train" if train else "eval")
    got, state = apply(variables, parity.to_nhwc(x).astype(dtype))
    got = got if isinstance(got, tuple) else (got,)
    ours = {**{n: np.asarray(o) for n, o in zip(CASES[case][2], got)},
            "feature_map": np.asarray(state["intermediates"]["feature_map"][0])}
    if train:
        theirs.update(parity.torch_buffers(model))
        ours.update(parity.flax_to_torch_names(state["batch_stats"], kinds, "batch_stats"))
    return ours, theirs


@pytest.mark.parametrize("train", [False, True], ids=["eval", "train"])
@pytest.mark.parametrize("case", list(CASES))
def test_parity(case, train):
    """Outputs, the sown layer4 map and (train) every updated running statistic, float64 and float32."""
    seed = list(CASES).index(case)
    tmodel = torch_helpers.randomize(CASES[case][0](), seed, inputs=(
        torch.randn(8, 3, SIZE, SIZE, generator=torch.Generator().manual_seed(seed + 100)),))
    x = np.random.default_rng(seed + 1).standard_normal((B, 3, SIZE, SIZE))
    with jax.enable_x64(True):
        ours64, ref64 = run(case, tmodel, x, np.float64, train)
    ours32, ref32 = run(case, tmodel, x, np.float32, train)
    assert set(ours64) == set(ref64)
    d64 = {k: parity.rel_diff(ours64[k], v) for k, v in ref64.items()}
    d32 = {k: parity.rel_diff(ours32[k], v) for k, v in ref64.items()}
    bounds = {k: parity.fp32_bound(ref32[k], v) for k, v in ref64.items()}
    print(f"\n[preact {case} {'train' if train else 'eval'}] fp64 max {max(d64.values()):.1e}; "
          f"fp32 max {max(d32.values()):.1e} (worst margin "
          f"{max(d32[k] / bounds[k] for k in d32):.2f} of the bound)")
    for k in ref64:
        assert d64[k] <= parity.FP64_TOL, (k, d64[k])
        assert d32[k] <= bounds[k], (k, d32[k], bounds[k])
