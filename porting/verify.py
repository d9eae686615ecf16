"""Running the torch reference and the Flax model side by side on the same random batch.

The semantics are proven in float64 on both sides: a correct port agrees to ~1e-12, so anything above
`FP64_TOLERANCE` is a semantic difference. float32 is judged against torch's own float32 error on the same
batch: our float32 result, compared with torch's float64 one, may be off by at most `FP32_FACTOR` times
torch's own float32 error (and never needs to be closer than `FP32_FLOOR`). A fixed float32 bound below the
reference's own rounding would refuse correct conversions depending on the weights, the batch, the
processor and its threads.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any

import jax
import numpy as np
import torch

from fer_jax import models
from porting.archs import FP32_FACTOR, FP32_FLOOR, FP64_TOLERANCE, ArchSpec

DTYPES = {"float32": (np.float32, torch.float32), "float64": (np.float64, torch.float64)}


def to_nhwc(a: np.ndarray) -> np.ndarray:
    """torch NCHW activations -> NHWC (other ranks unchanged)."""
    return np.transpose(a, (0, 2, 3, 1)) if a.ndim == 4 else a


def rel(a: np.ndarray, ref: np.ndarray) -> float:
    """max|a - ref| / max(1, max|ref|), in float64."""
    a, ref = np.asarray(a, np.float64), np.asarray(ref, np.float64)
    if a.shape != ref.shape:
        raise AssertionError(f"shape {a.shape} != reference shape {ref.shape}")
    return float(np.max(np.abs(a - ref)) / max(1.0, float(np.max(np.abs(ref)))))


def fp32_bound(torch32: Any, torch64: Any) -> float:
    """The float32 bound on rel(ours32, torch64): a multiple of torch's own float32 error, floored."""
    return max(FP32_FLOOR, FP32_FACTOR * rel(torch32, torch64))


def torch_module(spec: ArchSpec, hparams: Mapping[str, Any], state_dict: Mapping[str, np.ndarray],
                 dtype: str = "float32") -> torch.nn.Module:
    """The reference model with `state_dict` loaded strictly, in eval mode, in `dtype`."""
    with torch.device("meta"):  # no initialisation of weights that the load replaces (seconds for FAER-base)
        model = spec.reference(**hparams)
    full = spec.with_aliases(state_dict)  # a module registered twice upstream loads under both names
    model.load_state_dict({k: torch.from_numpy(np.array(v)) for k, v in full.items()}, strict=True, assign=True)
    return model.to(DTYPES[dtype][1]).eval()


def run_torch(model: torch.nn.Module, spec: ArchSpec, example: Mapping[str, np.ndarray]) -> list[np.ndarray]:
    """Eval-mode forward on the Flax example inputs (laid out for torch); outputs as numpy, 4-D ones NHWC."""
    with torch.no_grad():
        out = model(*(torch.from_numpy(x) for x in spec.torch_inputs(example)))
    out = out if isinstance(out, tuple | list) else (out,)
    return [to_nhwc(o.detach().cpu().numpy().copy()) for o in out]


def run_flax(arch: str, hparams: Mapping[str, Any], variables: Any, example: Mapping[str, np.ndarray]
             ) -> list[np.ndarray]:
    """Eval-mode `__call__` in the dtype of the example (float64 needs jax x64 enabled)."""
    spec = models.spec(arch)
    module = models.create(arch, **hparams)
    dtype = next(iter(example.values())).dtype
    variables = jax.tree.map(lambda a: np.asarray(a, dtype), variables)
    out = jax.jit(lambda v, inputs: module.apply(v, *inputs, train=False))(variables, spec.batch_inputs(example))
    return [np.asarray(o) for o in spec.named(out).values()]


@dataclasses.dataclass
class OutputCheck:
    """One output's agreement with the reference, in both precisions."""

    name: str
    fp64: float  # rel(ours64, torch64)
    fp32: float  # rel(ours32, torch64)
    torch_fp32: float  # rel(torch32, torch64): torch's own float32 error
    fp32_vs_torch32: float  # rel(ours32, torch32), for information

    @property
    def fp32_bound(self) -> float:
        return max(FP32_FLOOR, FP32_FACTOR * self.torch_fp32)

    @property
    def ok(self) -> bool:
        return self.fp64 <= FP64_TOLERANCE and self.fp32 <= self.fp32_bound

    def line(self) -> str:
        mark = "ok" if self.ok else "FAIL"
        return (f"{self.name:>8}: float64 {self.fp64:.1e} (<= {FP64_TOLERANCE:.0e}); float32 {self.fp32:.1e} from "
                f"exact (<= {self.fp32_bound:.1e}: {FP32_FACTOR:g}x torch's own float32 error "
                f"{self.torch_fp32:.1e}, floor {FP32_FLOOR:.0e}), {self.fp32_vs_torch32:.1e} from torch float32: "
                f"{mark}")

    def figures(self) -> dict[str, float]:
        return {"float64": self.fp64, "float32": self.fp32, "torch_float32": self.torch_fp32,
                "float32_vs_torch_float32": self.fp32_vs_torch32, "float32_bound": self.fp32_bound}


def random_example(arch: str, batch: int, image_size: tuple[int, int] | None, seed: int) -> dict[str, np.ndarray]:
    """Standard-normal float64 example inputs of the network's declared shapes."""
    rng = np.random.default_rng(seed)
    return {k: rng.standard_normal(v.shape) for k, v in models.spec(arch).example_inputs(batch, image_size).items()}


def parity(spec: ArchSpec, hparams: Mapping[str, Any], state_dict: Mapping[str, np.ndarray], variables: Any,
           *, batch: int = 2, seed: int = 0, image_size: tuple[int, int] | None = None) -> list[OutputCheck]:
    """Eval-mode parity of converted `variables` against the reference model holding `state_dict`, on one
    standard-normal batch, float32 and float64 on both sides (module docstring)."""
    example = random_example(spec.name, batch, image_size or spec.check_size, seed)
    results: dict[str, dict[str, list[np.ndarray]]] = {}
    for dtype in ("float32", "float64"):
        ex = {k: v.astype(DTYPES[dtype][0]) for k, v in example.items()}
        ref = run_torch(torch_module(spec, hparams, state_dict, dtype), spec, ex)
        with jax.enable_x64(dtype == "float64"):
            ours = run_flax(spec.name, hparams, variables, ex)
        results[dtype] = {"torch": ref, "ours": ours}
    names = models.spec(spec.name).outputs
    if not len(names) == len(results["float32"]["torch"]) == len(results["float32"]["ours"]):
        raise AssertionError(f"output count differs: flax {len(results['float32']['ours'])}, torch "
                             f"{len(results['float32']['torch'])}, declared {names}")
    t64, t32 = results["float64"]["torch"], results["float32"]["torch"]
    o64, o32 = results["float64"]["ours"], results["float32"]["ours"]
    return [OutputCheck(n, rel(o64[i], t64[i]), rel(o32[i], t64[i]), rel(t32[i], t64[i]), rel(o32[i], t32[i]))
            for i, n in enumerate(names)]
