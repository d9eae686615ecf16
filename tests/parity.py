"""Helpers for the torch-vs-Flax parity tests (imports torch)."""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import torch

from fer_jax import models
from porting import mapping

FP64_TOL = 1e-10  # float64 on both sides: a correct port agrees to ~1e-12 (rounding cannot hide a bug)
FP32_TOL = 1e-5  # fp32, relative to max(1, max|torch|): rounding of one forward pass


def to_nhwc(a: np.ndarray) -> np.ndarray:
    return np.transpose(a, (0, 2, 3, 1)) if a.ndim == 4 else a


def convert(torch_model: torch.nn.Module, arch: str, hparams: dict, image_size: int, dtype=np.float32
            ) -> tuple[Any, dict, dict]:
    """(flax module, variables in `dtype`, module kinds) for a torch reference model."""
    module = models.create(arch, **hparams)
    kinds, abstract = mapping.module_kinds(
        module, jax.ShapeDtypeStruct((1, image_size, image_size, 3), jnp.float32), train=False)
    sd = {k: v.detach().cpu().numpy().copy() for k, v in torch_model.state_dict().items()}
    variables, _ = mapping.torch_to_flax(sd, abstract, kinds)
    return module, jax.tree.map(lambda a: np.asarray(a, dtype), variables), kinds


def torch_copy(model: torch.nn.Module, dtype: torch.dtype) -> torch.nn.Module:
    import copy

    return copy.deepcopy(model).to(dtype)


def rel_diff(ours: Any, ref: Any) -> float:
    """max|ours - ref| / max(1, max|ref|)."""
    ours, ref = np.asarray(ours, np.float64), np.asarray(ref, np.float64)
    assert ours.shape == ref.shape, (ours.shape, ref.shape)
    return float(np.max(np.abs(ours - ref)) / max(1.0, np.max(np.abs(ref))))


def fp32_bound(t32: Any, t64: Any, factor: float = 4.0) -> float:
    """An fp32 bound derived from torch's own fp32 error on the same quantity (vs torch float64).

    Used only where fp32 rounding alone exceeds FP32_TOL (DAN's BN'd logits and what depends on them, see
    shared/reference/dan.md note 7): Flax fp32 may be as far from torch fp32 as both are from the exact
    value, so a few times torch's own error, never less than FP32_TOL.
    """
    return max(FP32_TOL, factor * rel_diff(t32, t64))


def torch_param_grads(model: torch.nn.Module) -> dict[str, np.ndarray]:
    return {n: p.grad.detach().cpu().numpy().copy() for n, p in model.named_parameters()}


def flax_to_torch_names(tree: dict, kinds: dict, collection: str = "params") -> dict[str, np.ndarray]:
    """A Flax params-shaped tree (values, grads) under torch parameter names (layouts transformed)."""
    flat = mapping.flax_to_torch({collection: jax.tree.map(np.asarray, tree)}, kinds)
    return {k: v for k, v in flat.items() if not k.endswith("num_batches_tracked")}


def torch_buffers(model: torch.nn.Module) -> dict[str, np.ndarray]:
    return {k: v.detach().cpu().numpy().copy() for k, v in model.state_dict().items()
            if k.endswith(("running_mean", "running_var"))}
