"""Running the torch reference and the Flax model side by side on the same random batch."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from typing import Any

import jax
import numpy as np
import torch

from fer_jax import models
from porting.archs import DEFAULT_FP32_TOLERANCE, FP64_TOLERANCE, ArchSpec

DTYPES = {"float32": (np.float32, torch.float32), "float64": (np.float64, torch.float64)}


def to_nhwc(a: np.ndarray) -> np.ndarray:
    """torch NCHW activations -> NHWC (other ranks unchanged)."""
    return np.transpose(a, (0, 2, 3, 1)) if a.ndim == 4 else a


def torch_module(spec: ArchSpec, hparams: Mapping[str, Any], state_dict: Mapping[str, np.ndarray],
                 dtype: str = "float32") -> torch.nn.Module:
    """The reference model with `state_dict` loaded strictly, in eval mode, in `dtype`."""
    model = spec.reference(**hparams)
    model.load_state_dict({k: torch.from_numpy(np.array(v)) for k, v in state_dict.items()}, strict=True)
    return model.to(DTYPES[dtype][1]).eval()


def run_torch(model: torch.nn.Module, x_nchw: np.ndarray) -> list[np.ndarray]:
    """Eval-mode forward; outputs as numpy, 4-D ones moved to NHWC."""
    with torch.no_grad():
        out = model(torch.from_numpy(x_nchw))
    out = out if isinstance(out, tuple | list) else (out,)
    return [to_nhwc(o.detach().cpu().numpy().copy()) for o in out]


def run_flax(arch: str, hparams: Mapping[str, Any], variables: Any, x_nhwc: np.ndarray) -> list[np.ndarray]:
    """Eval-mode forward of the Flax model in the dtype of `x_nhwc` (float64 needs jax x64 enabled)."""
    module = models.create(arch, **hparams)
    variables = jax.tree.map(lambda a: np.asarray(a, x_nhwc.dtype), variables)
    out = jax.jit(lambda v, x: module.apply(v, x, train=False))(variables, x_nhwc)
    out = out if isinstance(out, tuple | list) else (out,)
    return [np.asarray(o) for o in out]


@dataclasses.dataclass
class OutputDiff:
    name: str
    max_abs: float  # max |flax - torch|
    scale: float  # max(1, max |torch|)
    tolerance: float  # bound on max_abs / scale

    @property
    def ok(self) -> bool:
        return self.max_abs / self.scale <= self.tolerance

    def line(self) -> str:
        mark = "ok" if self.ok else "FAIL"
        return (f"{self.name:>8}: max|diff| {self.max_abs:.2e}  (scale {self.scale:.3g}, "
                f"relative {self.max_abs / self.scale:.2e} <= {self.tolerance:.0e}: {mark})")


def compare(names: Sequence[str], ours: Sequence[np.ndarray], ref: Sequence[np.ndarray],
            tolerances: Mapping[str, float]) -> list[OutputDiff]:
    """Per-output max abs difference, scaled by max(1, max|ref|)."""
    if len(ours) != len(ref) or len(ref) != len(names):
        raise AssertionError(f"output count differs: flax {len(ours)}, torch {len(ref)}, expected {len(names)}")
    diffs = []
    for name, a, b in zip(names, ours, ref):
        if a.shape != b.shape:
            raise AssertionError(f"output {name}: flax shape {a.shape} != torch shape {b.shape}")
        diffs.append(OutputDiff(name, float(np.max(np.abs(a.astype(np.float64) - b))),
                                float(max(1.0, np.max(np.abs(b)))), tolerances[name]))
    return diffs


def parity(spec: ArchSpec, hparams: Mapping[str, Any], state_dict: Mapping[str, np.ndarray], variables: Any,
           *, batch: int = 2, seed: int = 0, image_size: tuple[int, int] | None = None
           ) -> dict[str, list[OutputDiff]]:
    """Eval-mode parity of converted `variables` against the reference model holding `state_dict`.

    Runs float32 (the figure users get) and float64 on both sides (where rounding cannot hide a semantic
    difference), on one standard-normal batch.

    Returns:
      {"float32": [OutputDiff, ...], "float64": [...]}.
    """
    h, w = image_size or models.REGISTRY[spec.name].image_size
    x = np.random.default_rng(seed).standard_normal((batch, 3, h, w))
    results = {}
    for dtype, tol in (("float32", None), ("float64", FP64_TOLERANCE)):
        xd = x.astype(DTYPES[dtype][0])
        ref = run_torch(torch_module(spec, hparams, state_dict, dtype), xd)
        with jax.enable_x64(dtype == "float64"):
            ours = run_flax(spec.name, hparams, variables, np.ascontiguousarray(to_nhwc(xd)))
        tols = {n: tol or spec.fp32_tolerance.get(n, DEFAULT_FP32_TOLERANCE) for n in spec.outputs}
        results[dtype] = compare(spec.outputs, ours, ref, tols)
    return results
