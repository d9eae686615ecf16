"""XLA compile options for fer-jax's compiled steps, chosen per kind of step, and the wrappers that apply them.

On the CPU, XLA hands convolutions, dots and reductions to its YNNPACK library by default; its convolutions
keep only ~1.5 of 2 cores busy, and its filter-gradient convolutions are slow (shared/reference/
jax_platform.md, "CPU speed"). Measured here (jax 0.10.2, 2-core AMD EPYC, one process, interleaved
repetitions, median ms per call; float32):

| network, input, batch | train: default / without YNN convolutions / YNN off | eval: default / without conv / off |
|---|---|---|
| DAN 96 px, 32 | 937 / **649** / 886 | 205 / 175 / **154** |
| DAN 224 px, 8 | 1343 / **922** / 1145 | 279 / 236 / **214** |
| ResNet18 112 px, 16 | 620 / **457** / 608 | 146 / 119 / **100** |
| ResNet18 64 px, 32 | 1458 / **1373** / 1450 | **609** / 740 / 637 |
| Emotion-FAN 72 px, 8 triplets | 364 / **305** / 346 | 101 / 94 / **74** |

(The ResNet18 64-px row predates `fer_jax.models.convolution.Conv`, which now computes its 2x2-map layer4 as one
matrix product: scripts/benchmark.py measures every network as it runs today.)

So training steps compile without YNNPACK convolutions (dots and reductions keep it) and evaluation without
YNNPACK at all.

Training steps also take region analysis in XLA's copy insertion (`xla_cpu_copy_insertion_use_region_analysis`).
A train step donates the state and writes the new parameters over the old ones; without the analysis XLA
copies each parameter first (DAN: 135 copies, 79 MB per step; ConvNeXt-base: 258, 350 MB), with it none.
Results are bitwise the same (parameters and metrics after 20 steps). Measured (batch 8, the two programs
interleaved in one process, medians of 5-8 steps, each the second of two in a row; ms per step, and compile s):

| recipe | train step: default / region analysis | compile s |
|---|---|---|
| dan_rafdb | 675 / **660** | 4.3 / 3.4 |
| feratt_ck | 819 / **805** | 12.2 / 10.3 |
| faer_baseline_celeba (ConvNeXt-base) | 8382 / **8048** | 27.7 / 26.2 |

(ConvNeXt-base's steps are slower than alone because the two programs' memory is faulted in turn.)

Other backends get no options. The options are scoped to fer-jax's own compiled functions
(`jax.jit(..., compiler_options=...)`), never the process: an option that the user's own `XLA_FLAGS` names is
left to it, and `FER_JAX_XLA_OPTIONS=0` turns them all off. `--config.parallel=pmap` keeps XLA's defaults:
`jax.pmap` takes no compile options, and an ahead-of-time compiled pmap expects global argument shapes across
processes while each process passes its local ones (jax 0.10.2), so only the defaults keep a 1-process and an
N-process pmap run identical.
Results change by summation order only (float64 ~1e-16 relative); float32 stays within the parity bounds
(the parity harness, tests/parity.py, compiles through these options).
"""

from __future__ import annotations

import contextvars
import functools
import os
import re
from collections.abc import Callable
from typing import Any, Literal

import jax

FLAG = "xla_cpu_experimental_ynn_fusion_type"
REGION_ANALYSIS = "xla_cpu_copy_insertion_use_region_analysis"
CPU_OPTIONS: dict[str, dict[str, str | bool]] = {
    "train": {FLAG: "LIBRARY_FUSION_TYPE_INDIVIDUAL_DOT,LIBRARY_FUSION_TYPE_REDUCE", REGION_ANALYSIS: True},
    "eval": {FLAG: ""},
}
CONVOLUTIONS = "LIBRARY_FUSION_TYPE_INDIVIDUAL_CONVOLUTION"
# XLA's own default for FLAG (jax 0.10.2): convolutions, dots and reductions go to YNNPACK.
XLA_DEFAULT = f"{CONVOLUTIONS},LIBRARY_FUSION_TYPE_INDIVIDUAL_DOT,LIBRARY_FUSION_TYPE_REDUCE"
Kind = Literal["train", "eval"]
_TRACING: contextvars.ContextVar[dict[str, str | bool] | None] = contextvars.ContextVar("fer_jax_xla_options",
                                                                                      default=None)


def options(kind: Kind) -> dict[str, str | bool]:
    """The compile options fer-jax uses for a step of `kind` on the default backend (module docstring); an
    option the process's `XLA_FLAGS` names is left to it."""
    if kind not in CPU_OPTIONS:
        raise ValueError(f"kind must be 'train' or 'eval', got {kind!r}")
    if os.environ.get("FER_JAX_XLA_OPTIONS", "1") == "0" or jax.default_backend() != "cpu":
        return {}
    users = os.environ.get("XLA_FLAGS", "")
    return {name: value for name, value in CPU_OPTIONS[kind].items() if not re.search(rf"--{name}(=|\s|$)", users)}


def jit(fun: Callable, kind: Kind, **kwargs: Any) -> Callable:
    """`jax.jit(fun, **kwargs)` compiled with the options for `kind`; while it is traced,
    `library_convolutions` answers for those options."""
    opts = options(kind)

    @functools.wraps(fun)
    def traced(*args: Any, **kw: Any) -> Any:
        token = _TRACING.set(opts)
        try:
            return fun(*args, **kw)
        finally:
            _TRACING.reset(token)

    if not hasattr(fun, "__name__"):  # a partial: keep the name jax.jit would show (profiles, HLO dumps)
        traced.__name__ = traced.__qualname__ = getattr(getattr(fun, "func", None), "__name__", "fun")
    return jax.jit(traced, compiler_options=opts, **kwargs)


def library_convolutions() -> bool:
    """Whether XLA's CPU backend hands the convolutions of the function now being traced to YNNPACK.

    False inside a function compiled by `jit` with options that leave them out (fer-jax's CPU options for
    both kinds); otherwise what the process's `XLA_FLAGS` say, else XLA's default (True). Model code asks it
    where a formulation is fast on one convolution library and slow on the other: the depthwise taps'
    gradient as a grouped convolution is 3x faster than per-tap reductions without YNNPACK and ~4x slower
    with it (fer_jax.models.convolution). A function traced once and reused elsewhere keeps the form it was traced
    with; the answer only chooses speed, never results beyond summation order.
    """
    opts = _TRACING.get()
    value = (opts or {}).get(FLAG)
    if value is None:
        found = re.findall(rf"--{FLAG}=(\S*)", os.environ.get("XLA_FLAGS", ""))
        value = found[-1].strip("'\"") if found else XLA_DEFAULT
    return CONVOLUTIONS in value
