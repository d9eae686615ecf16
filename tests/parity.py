"""The parity-test harness, driven by the architecture specs (imports torch).

A network is tested by adding `Case`s to `CASES` (and its quirks in its own test file): the reference is
built by its `porting.archs.ArchSpec`, given random weights and non-trivial BatchNorm statistics, converted
by the one mapping rule through the network's declared init (`fer_jax.models.ModelSpec`), and both run
on the same example inputs, which the Flax contract declares and the ArchSpec lays out for torch.

Tolerances, the same rule as the converter's gate (porting/verify.py):
- float64 on both sides: `FP64_TOL` relative to max(1, max|torch|); a correct port agrees to ~1e-12.
- float32: our float32 result against torch's float64 one, within `fp32_bound(torch32, torch64)`, i.e.
  4x torch's own float32 error on the same quantity (the largest over torch on its default threads, on one
  thread and in channels-last memory format: each rounds differently), floored at 1e-5. Groups of tensors (gradients,
  optimizer steps) compare the worst tensor of ours with the worst of torch (`assert_group_fp32`), because
  a single tensor's rounding error is itself a random quantity. DAN's gradients and SGD steps are judged
  against float64 on the ReLU pattern our float32 run took (`ReluBranches`): an input rounded across 0 moves
  the gradients behind it by a whole term, a coin toss that no rounding bound describes.
"""

from __future__ import annotations

import contextlib
import copy
import dataclasses
from collections.abc import Iterator, Sequence
from typing import Any
from unittest import mock

import flax.linen
import jax
import jax.numpy as jnp
import numpy as np
import torch

import torch_helpers
from fer_jax import models, xla
from porting import archs, mapping, verify

FP64_TOL = archs.FP64_TOLERANCE
FP32_TOL = archs.FP32_FLOOR
to_nhwc = verify.to_nhwc
rel_diff = verify.rel
fp32_bound = verify.fp32_bound


@dataclasses.dataclass(frozen=True)
class Case:
    """One configuration of a network for the generic parity tests.

    Attributes:
      arch: registry name (ArchSpec and ModelSpec).
      hparams: constructor hyperparameters.
      size: image side of the fast tier.
      batch: examples per batch.
      train_forward: whether `__call__` in train mode is deterministic (no dropout / drop-path), so the
        generic train-mode comparison applies; networks with random streams test it in their own file.
      label: test id.
    """

    arch: str
    hparams: dict
    size: int = 64
    batch: int = 4
    train_forward: bool = True
    label: str = ""

    @property
    def id(self) -> str:
        return self.label or self.arch


def example(case: Case, seed: int, size: int | None = None) -> dict[str, np.ndarray]:
    """Float64 example inputs of the network's declared shapes (NHWC), from a fixed seed."""
    return verify.random_example(case.arch, case.batch, size or case.size, seed)


def torch_inputs(case: Case, ex: dict[str, np.ndarray], dtype: torch.dtype) -> tuple[torch.Tensor, ...]:
    return tuple(torch.from_numpy(np.ascontiguousarray(x)).to(dtype) for x in archs.ARCHS[case.arch].torch_inputs(ex))


def reference_model(case: Case, seed: int = 0, size: int | None = None) -> torch.nn.Module:
    """The reference with random weights and calibrated-then-perturbed BatchNorm statistics (float32)."""
    model = archs.ARCHS[case.arch].reference(**case.hparams)
    ex = example(case, seed + 100, size)
    return torch_helpers.randomize(model, seed, inputs=torch_inputs(case, ex, torch.float32))


def convert(torch_model: torch.nn.Module, arch: str, hparams: dict, image_size: int, dtype=np.float32
            ) -> tuple[Any, dict, dict]:
    """(flax module, variables in `dtype`, module kinds) for a torch reference model."""
    spec = models.spec(arch)
    module = models.create(arch, **hparams)
    inputs = spec.batch_inputs(spec.example_inputs(1, image_size))
    kinds, abstract = mapping.module_kinds(module, *inputs, **spec.init_kwargs())
    sd = {k: v.detach().cpu().numpy().copy() for k, v in torch_model.state_dict().items()}
    variables, _ = mapping.torch_to_flax(sd, abstract, kinds)
    return module, jax.tree.map(lambda a: np.asarray(a, dtype), variables), kinds


def torch_copy(model: torch.nn.Module, dtype: torch.dtype) -> torch.nn.Module:
    return copy.deepcopy(model).to(dtype)


def torch_forward(case: Case, model: torch.nn.Module, ex: dict[str, np.ndarray], train: bool,
                  channels_last: bool = False) -> list[np.ndarray]:
    """Outputs (4-D ones NHWC) of the reference in the dtype of its parameters; `channels_last` runs it
    in that memory format (other convolution kernels, so other rounding: a second sample of torch's error)."""
    dtype = next(model.parameters()).dtype
    model.train(train)
    inputs = torch_inputs(case, ex, dtype)
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
        inputs = tuple(x.contiguous(memory_format=torch.channels_last) if x.ndim == 4 else x for x in inputs)
    with torch.no_grad():
        out = model(*inputs)
    out = out if isinstance(out, tuple | list) else (out,)
    return [to_nhwc(o.detach().cpu().numpy().copy()) for o in out]


def flax_forward(case: Case, module: Any, variables: Any, ex: dict[str, np.ndarray], train: bool
                 ) -> tuple[list[np.ndarray], Any]:
    """(outputs in declared order, updated batch_stats or None) in the dtype of `variables`."""
    spec = models.spec(case.arch)
    dtype = jax.tree.leaves(variables)[0].dtype
    inputs = [np.asarray(x, dtype) for x in spec.batch_inputs(ex)]
    mutable = ["batch_stats"] if train else []
    # Compiled as training and evaluation compile it (fer_jax.xla's per-kind options): the path users run.
    apply = xla.jit(lambda v, xs: module.apply(v, *xs, train=train, mutable=mutable), "train" if train else "eval")
    out, upd = apply(variables, inputs)
    return [np.asarray(o) for o in spec.named(out).values()], (upd.get("batch_stats") if train else None)


def compare_forward(case: Case, train: bool, seed: int = 0, size: int | None = None) -> dict[str, dict]:
    """Runs reference and Flax in float64 and float32 and returns, per output (and the updated running
    statistics in train mode), {"fp64", "fp32", "bound"} where fp32 is rel(ours32, torch64)."""
    size = size or case.size
    tmodel = reference_model(case, seed, size)
    ex = example(case, seed + 1, size)
    t64, t32 = torch_copy(tmodel, torch.float64), torch_copy(tmodel, torch.float32)
    names = models.spec(case.arch).outputs
    ref64 = torch_forward(case, t64, ex, train)  # in train mode, updates the copies' running statistics
    ref32 = torch_forward(case, t32, ex, train)
    # torch's own float32 error is itself a random quantity: it depends on how reductions are split over
    # threads and on the convolution kernels of the memory format. One sample under-estimates it (DAN's
    # 64 px train-mode `out` over 12 seeds: torch's error 6.6e-6 to 5.1e-5 across these three runs of the
    # same weights, ours 4.5e-6 to 4.3e-5), so the bound takes the largest of three.
    with torch_helpers.one_torch_thread():
        ref32_one = torch_forward(case, torch_copy(tmodel, torch.float32), ex, train)
    ref32_cl = torch_forward(case, torch_copy(tmodel, torch.float32), ex, train, channels_last=True)
    with jax.enable_x64(True):
        module, v64, kinds = convert(tmodel, case.arch, case.hparams, size, np.float64)
        ours64, stats64 = flax_forward(case, module, v64, ex, train)
    module, v32, _ = convert(tmodel, case.arch, case.hparams, size, np.float32)
    ours32, stats32 = flax_forward(case, module, v32, ex, train)
    result = {n: {"fp64": rel_diff(ours64[i], ref64[i]), "fp32": rel_diff(ours32[i], ref64[i]),
                  "bound": max(fp32_bound(r[i], ref64[i]) for r in (ref32, ref32_one, ref32_cl))}
              for i, n in enumerate(names)}
    if train and stats64 is not None:
        buffers64, buffers32 = torch_buffers(t64), torch_buffers(t32)
        got64 = flax_to_torch_names(stats64, kinds, "batch_stats")
        got32 = flax_to_torch_names(stats32, kinds, "batch_stats")
        result["running_stats"] = {
            "fp64": max(rel_diff(got64[k], v) for k, v in buffers64.items()),
            "fp32": max(rel_diff(got32[k], v) for k, v in buffers64.items()),
            "bound": max(FP32_TOL, 4 * max(rel_diff(buffers32[k], v) for k, v in buffers64.items()))}
    return result


def assert_forward(result: dict[str, dict]) -> None:
    """Every output within FP64_TOL in float64 and within its derived bound in float32."""
    for name, r in result.items():
        assert r["fp64"] <= FP64_TOL, (name, r)
        assert r["fp32"] <= r["bound"], (name, r)


def assert_group_fp32(ours: dict[str, Any], ref32: dict[str, Any], ref64: dict[str, Any],
                      exact: dict[str, Any] | None = None) -> tuple[float, float]:
    """The worst float32 error of ours in a group of tensors is within 4x torch's worst (floored).

    Args:
      ours, ref32, ref64: our float32 values, torch's float32 and float64 ones.
      exact: the float64 values ours is judged against, where they are not `ref64`: float64 arithmetic on the
        ReLU pattern our float32 program took (`ReluBranches`).

    Returns:
      (our worst rel error vs float64, torch's worst float32 rel error), for reports.
    """
    exact = ref64 if exact is None else exact
    assert set(ours) == set(ref64) == set(ref32) == set(exact)
    worst_ours = max(rel_diff(ours[k], exact[k]) for k in exact)
    worst_torch = max(rel_diff(ref32[k], ref64[k]) for k in ref64)
    assert worst_ours <= max(FP32_TOL, 4 * worst_torch), (worst_ours, worst_torch)
    return worst_ours, worst_torch


class ReluBranches:
    """Records the ReLU inputs of a traced Flax forward, or replays the branches a float32 run took.

    ReLU's derivative jumps at 0. Where an input lies within float32's rounding of 0, a float32 run may land
    on the other side from exact arithmetic, and every gradient behind that ReLU then moves by the dropped (or
    added) term: a coin toss of the summation order, not a rounding error that a bound can describe. Measured
    (2026-12-07, AMD Zen 5): in DAN's fast-tier gradient test one of features.6.0.bn1's 32768 outputs (layer3),
    6.5e-8 of the layer's largest, was positive in float64 and in torch's float32 run but not in ours (XLA's
    summation order on that CPU); features.6.0.conv1's kernel gradient then differed from float64 by 2.3 %
    against torch's 1.8e-5, while every tensor that does not depend on that ReLU stayed within torch's error.

    So a float32 gradient is judged against float64 arithmetic on the ReLU pattern the float32 program took:
    within `patched()`, flax's `nn.relu` (which fer-jax's networks call for their ReLUs) collects its inputs in call
    order into `inputs`; a function returns them from the same compiled program as its gradients, so they
    are that program's own roundings. Built with those float32 inputs (`recorded`, passed to the float64
    program as arguments), the float64 ReLU keeps each input where the recorded one is positive: its value
    and derivative on float32's branch, which differs from its own only where the two disagree (`ties`
    counts those). Without `recorded` it is `jax.nn.relu`.

    What the replay cannot hide: the values. A wrong forward moves activations far beyond rounding, and the
    gradients that use them with it; the forward itself is held to torch's float32 error in
    test_parity_models.py.
    """

    def __init__(self, recorded: Sequence[Any] | None = None):
        self.recorded = recorded
        self.inputs: list[jax.Array] = []

    def relu(self, x: jax.Array) -> jax.Array:
        i = len(self.inputs)
        self.inputs.append(x)
        if self.recorded is None:
            return jax.nn.relu(x)
        return x * (jnp.asarray(self.recorded[i]) > 0).astype(x.dtype)

    @contextlib.contextmanager
    def patched(self) -> Iterator[ReluBranches]:
        self.inputs = []
        with mock.patch.object(flax.linen, "relu", self.relu):
            yield self


def ties(recorded: Sequence[Any], inputs64: Sequence[Any]) -> int:
    """How many ReLU inputs a `ReluBranches` replay put on float32's branch: float64 inputs `inputs64` on the
    other side of 0 from the float32 ones `recorded`."""
    return sum(int(np.sum((np.asarray(v64) > 0) != (np.asarray(v32) > 0)))
               for v32, v64 in zip(recorded, inputs64, strict=True))


def torch_param_grads(model: torch.nn.Module) -> dict[str, np.ndarray]:
    return {n: p.grad.detach().cpu().numpy().copy() for n, p in model.named_parameters()}


def flax_to_torch_names(tree: dict, kinds: dict, collection: str = "params") -> dict[str, np.ndarray]:
    """A Flax params-shaped tree (values, grads) under torch parameter names (layouts transformed)."""
    flat = mapping.flax_to_torch({collection: jax.tree.map(np.asarray, tree)}, kinds)
    return {k: v for k, v in flat.items() if not k.endswith("num_batches_tracked")}


def torch_buffers(model: torch.nn.Module) -> dict[str, np.ndarray]:
    return {k: v.detach().cpu().numpy().copy() for k, v in model.state_dict().items()
            if k.endswith(("running_mean", "running_var"))}
