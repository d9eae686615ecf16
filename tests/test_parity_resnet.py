"""torchvision-layout ResNet18 parity (classifier and backbone forms), eval and train mode."""

from __future__ import annotations

import jax
import numpy as np
import pytest
import torch

import parity
import torch_helpers


def run(num_classes, dtype, train, size, block_outputs=False):
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
    diffs = {"output": parity.rel_diff(out, ref)}
    if block_outputs:  # block by block: a difference is located where it first appears
        diffs.update({n: parity.rel_diff(state["intermediates"][n]["__call__"][0], taps[n]) for n in taps})
    if train:
        got = parity.flax_to_torch_names(state["batch_stats"], kinds, "batch_stats")
        diffs["running_stats"] = max(parity.rel_diff(got[k], v) for k, v in parity.torch_buffers(tmodel).items())
    return diffs


@pytest.mark.parametrize("num_classes", [1000, None], ids=["classifier", "backbone"])
@pytest.mark.parametrize("train", [False, True], ids=["eval", "train"])
def test_resnet18_float64(num_classes, train):
    with jax.enable_x64(True):
        diffs = run(num_classes, np.float64, train, 64, block_outputs=True)
    assert max(diffs.values()) <= parity.FP64_TOL, diffs


@pytest.mark.parametrize("num_classes", [1000, None], ids=["classifier", "backbone"])
@pytest.mark.parametrize("train", [False, True], ids=["eval", "train"])
def test_resnet18_float32(num_classes, train):
    diffs = run(num_classes, np.float32, train, 64, block_outputs=True)
    assert max(diffs.values()) <= parity.FP32_TOL, diffs


@pytest.mark.slow
@pytest.mark.parametrize("train", [False, True], ids=["eval", "train"])
def test_resnet18_full_size(train):
    assert max(run(1000, np.float32, train, 224).values()) <= parity.FP32_TOL
    with jax.enable_x64(True):
        assert max(run(1000, np.float64, train, 224).values()) <= parity.FP64_TOL
