"""torchvision-layout ResNet18 parity (classifier and backbone forms), eval and train mode."""

from __future__ import annotations

import jax
import numpy as np
import pytest
import torch

import parity
import torch_helpers


def run(num_classes, dtype, train, size, block_outputs=False, keep=False):
    """Max relative differences per tapped tensor; with `keep`, (ours, torch) tensors instead."""
    tdtype = torch.float64 if dtype == np.float64 else torch.float32
    tmodel = parity.torch_copy(torch_helpers.random_resnet18(num_classes, seed=3, image_size=size), tdtype)
    module, variables, kinds = parity.convert(tmodel, "resnet18", {"num_classes": num_classes}, size, dtype)
    x = np.random.default_rng(4).standard_normal((4, 3, size, size)).astype(dtype)
    taps = {}
    hooks = [getattr(tmodel, n).register_forward_hook(
        lambda m, i, o, n=n: taps.__setitem__(n, parity.to_nhwc(o.detach().numpy().copy())))
        for n in ("layer1", "layer2", "layer3", "layer4")]
    tmodel.train(train)
    with torch.no_grad():
        ref = parity.to_nhwc(tmodel(torch.from_numpy(x)).numpy().copy())
    for h in hooks:
        h.remove()
    mutable = ["batch_stats"] if train else []
    out, state = jax.jit(lambda v, x: module.apply(v, x, train=train, mutable=mutable,
                                                   capture_intermediates=True))(
        variables, np.ascontiguousarray(parity.to_nhwc(x)))
    ours, theirs = {"output": np.asarray(out)}, {"output": ref}
    if block_outputs:  # block by block: a difference is located where it first appears
        ours.update({n: np.asarray(state["intermediates"][n]["__call__"][0]) for n in taps})
        theirs.update(taps)
    if train:
        got = parity.flax_to_torch_names(state["batch_stats"], kinds, "batch_stats")
        ours.update({k: got[k] for k in parity.torch_buffers(tmodel)})
        theirs.update(parity.torch_buffers(tmodel))
    if keep:
        return ours, theirs
    return {n: parity.rel_diff(ours[n], theirs[n]) for n in theirs}


@pytest.mark.parametrize("num_classes", [1000, None], ids=["classifier", "backbone"])
@pytest.mark.parametrize("train", [False, True], ids=["eval", "train"])
def test_resnet18_float64(num_classes, train):
    with jax.enable_x64(True):
        diffs = run(num_classes, np.float64, train, 64, block_outputs=True)
    assert max(diffs.values()) <= parity.FP64_TOL, diffs


@pytest.mark.parametrize("num_classes", [1000, None], ids=["classifier", "backbone"])
@pytest.mark.parametrize("train", [False, True], ids=["eval", "train"])
def test_resnet18_float32(num_classes, train):
    """Block by block, our float32 against torch float64 within 4x torch's own float32 error (floor 1e-5)."""
    ours, ref32 = run(num_classes, np.float32, train, 64, block_outputs=True, keep=True)
    with jax.enable_x64(True):
        _, ref64 = run(num_classes, np.float64, train, 64, block_outputs=True, keep=True)
    for name in ref64:
        assert parity.rel_diff(ours[name], ref64[name]) <= parity.fp32_bound(ref32[name], ref64[name]), name
