"""Random-weight reference models and upstream checkpoint containers for the tests (imports torch)."""

from __future__ import annotations

import contextlib
import os
from typing import Any

import numpy as np
import torch

from porting import reference


def randomize(model: torch.nn.Module, seed: int, image_size: int = 64, batch: int = 8,
              inputs: tuple[torch.Tensor, ...] | None = None) -> torch.nn.Module:
    """Random weights *and* non-trivial BatchNorm state, from `seed` and the scale of the weights `model` was
    built with (drawn from torch's global RNG, which tests/conftest.py seeds before every test).

    The weights are re-drawn at their init scale; then `calibrate_batchnorm` runs `inputs` through the model's
    forward (by default one NCHW image batch drawn after the BatchNorm parameters).
    """
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():  # re-draw from the default init scale, seeded
            scale = (p.std() if p.numel() > 1 else p.abs().sum()).clamp(min=1e-3)  # a 1-element bias has no std
            p.copy_(torch.randn(p.shape, generator=g) * scale + 0.01 * torch.randn(p.shape, generator=g))
    return calibrate_batchnorm(model, g, lambda: model(
        *(inputs if inputs is not None else (torch.randn(batch, 3, image_size, image_size, generator=g),))))


def calibrate_batchnorm(model: torch.nn.Module, g: torch.Generator, forward) -> torch.nn.Module:
    """Non-trivial BatchNorm state from `g`: affine parameters drawn around (1, 0); running statistics first
    calibrated by `forward()` in train mode (so that eval-mode activations have a realistic scale), then
    perturbed so that they differ from any batch statistics; `num_batches_tracked` gets distinct counts.
    Returns the model in eval mode."""
    bns = [m for m in model.modules() if isinstance(m, torch.nn.modules.batchnorm._BatchNorm)]
    with torch.no_grad():
        for bn in bns:
            bn.weight.copy_(torch.rand(bn.weight.shape, generator=g) + 0.5)
            bn.bias.copy_(0.2 * torch.randn(bn.bias.shape, generator=g))
            bn.momentum = None  # cumulative average: one pass sets running stats to that batch's statistics
            bn.reset_running_stats()
        model.train()
        forward()
        for i, bn in enumerate(bns):
            bn.momentum = 0.1
            bn.running_mean.add_(0.1 * torch.randn(bn.running_mean.shape, generator=g) * bn.running_var.sqrt())
            bn.running_var.mul_(torch.rand(bn.running_var.shape, generator=g) * 0.6 + 0.7)
            bn.num_batches_tracked.fill_(1000 + 7 * i)
    return model.eval()


def random_o1(model: torch.nn.Module, seed: int) -> torch.nn.Module:
    """Seeded O(1)-scale weights for networks without BatchNorm (ConvNeXt, FAER, MFTN-FER): layer scales and
    LayerNorm weights around 1, so every block matters; the rest N(0, 1/fan_in)."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith("gamma") or "norm" in name and name.endswith("weight"):
                p.copy_(1 + 0.2 * torch.randn(p.shape, generator=g))
            else:
                fan_in = p[0].numel() if p.ndim > 1 else p.numel()
                p.copy_(torch.randn(p.shape, generator=g) / np.sqrt(fan_in))
    return model.eval()


def random_dan(num_class: int = 7, num_head: int = 4, seed: int = 0, image_size: int = 64) -> reference.DAN:
    return randomize(reference.DAN(num_class, num_head), seed, image_size)


def random_resnet18(num_classes: int | None = 1000, seed: int = 0, image_size: int = 64) -> reference.ResNet:
    return randomize(reference.resnet18(num_classes), seed, image_size)


def save_dan_release(model: reference.DAN, path: str | os.PathLike, epoch: int = 21) -> None:
    """The container of yaoing/DAN's rafdb.py / affectnet.py saves (and the released files)."""
    params = list(model.parameters()) + [torch.nn.Parameter(torch.randn(8, 512))]  # + affinity centers
    opt = torch.optim.SGD(params, lr=0.1, momentum=0.9, weight_decay=1e-4)
    torch.optim.lr_scheduler.StepLR(opt, step_size=10, gamma=0.1)  # adds initial_lr to param_groups
    for p in params:
        p.grad = torch.zeros_like(p)
    opt.step()
    torch.save({"iter": epoch, "model_state_dict": model.state_dict(),
                "optimizer_state_dict": opt.state_dict()}, path)


def save_msceleb(model: reference.ResNet, path: str | os.PathLike, module_prefix: bool = False) -> None:
    """resnet18_msceleb.pth: {'state_dict': torchvision resnet18 keys}, optionally DataParallel-prefixed."""
    sd = model.state_dict()
    if module_prefix:
        sd = {f"module.{k}": v for k, v in sd.items()}
    torch.save({"state_dict": sd}, path)


def state_dict_numpy(model: torch.nn.Module) -> dict[str, np.ndarray]:
    return {k: v.detach().cpu().numpy().copy() for k, v in model.state_dict().items()}


def assert_state_dicts_equal(a: dict[str, Any], b: dict[str, Any]) -> None:
    assert list(a) == list(b), f"key order/set differs: {set(a) ^ set(b) or 'order'}"
    for k in a:
        assert a[k].dtype == b[k].dtype, f"{k}: dtype {a[k].dtype} != {b[k].dtype}"
        assert torch.equal(a[k], b[k]), f"{k}: values differ"


@contextlib.contextmanager
def one_torch_thread():
    """Runs torch on one thread (also a decorator): the parity tensors are small, and on this busy 2-core
    machine two OpenMP threads wait on each other (measured: a torch training run 0.8 s on one thread, 6-17 s
    on two; the tiny FAER's float64 forward 0.44 s against 7.3 s)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)
