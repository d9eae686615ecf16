"""The one torch-key <-> Flax-path rule, its layout transforms, and strict accounting.

Rule: a torch key `a.b.c.<leaf>` belongs to the Flax submodule at path `(a, b, c)` (Flax modules are named
after the torch attributes, sequence children "0", "1", ...). The Flax module's type at that path decides
the leaf name, the collection and the layout transform:

| Flax module     | torch leaf          | Flax variable             | transform              |
|-----------------|---------------------|---------------------------|------------------------|
| nn.Conv         | weight / bias       | params kernel / bias      | OI(HW) -> (HW)IO       |
| nn.Dense        | weight / bias       | params kernel / bias      | (out, in) -> (in, out) |
| BatchNorm       | weight / bias       | params scale / bias       |                        |
|                 | running_mean / _var | batch_stats mean / var    |                        |
|                 | num_batches_tracked | (not a Flax variable: counted and kept in the metadata) |
| nn.LayerNorm    | weight / bias       | params scale / bias       |                        |
| any other       | <name>              | params <name>             | (raw `self.param`)     |

Module types come from the model itself (intercepting `init` under `jax.eval_shape`, which allocates
nothing), never from guessing by tensor rank. Every source key and every target variable is accounted for.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import jax
import numpy as np
from flax import linen as nn
from flax import traverse_util

from fer_jax.errors import CheckpointError
from fer_jax.models.layers import BatchNorm
from fer_jax.merge import Report, complete, matches, rename

ModulePath = tuple[str, ...]
NBT = "num_batches_tracked"


def _conv_to_flax(w: np.ndarray) -> np.ndarray:
    return np.transpose(w, (*range(2, w.ndim), 1, 0))


def _conv_to_torch(k: np.ndarray) -> np.ndarray:
    n = k.ndim - 2
    return np.transpose(k, (n + 1, n, *range(n)))


def _identity(x: np.ndarray) -> np.ndarray:
    return x


@dataclasses.dataclass(frozen=True)
class Leaf:
    collection: str
    name: str
    to_flax: Callable[[np.ndarray], np.ndarray] = _identity
    to_torch: Callable[[np.ndarray], np.ndarray] = _identity


_AFFINE = {"weight": Leaf("params", "scale"), "bias": Leaf("params", "bias")}
RULES: dict[str, dict[str, Leaf]] = {
    "conv": {"weight": Leaf("params", "kernel", _conv_to_flax, _conv_to_torch), "bias": Leaf("params", "bias")},
    "dense": {"weight": Leaf("params", "kernel", np.transpose, np.transpose), "bias": Leaf("params", "bias")},
    "batchnorm": {**_AFFINE, "running_mean": Leaf("batch_stats", "mean"),
                  "running_var": Leaf("batch_stats", "var")},
    "layernorm": dict(_AFFINE),
}


def module_kind(cls: type) -> str:
    """Which row of the rule table a Flax module class follows."""
    if issubclass(cls, nn.Conv):
        return "conv"
    if issubclass(cls, nn.Dense):
        return "dense"
    if issubclass(cls, BatchNorm | nn.BatchNorm):
        return "batchnorm"
    if issubclass(cls, nn.LayerNorm):
        return "layernorm"
    return "raw"


def module_kinds(model: nn.Module, *inputs: Any, **kwargs: Any) -> tuple[dict[ModulePath, str], Any]:
    """Module kind at every submodule path, and the abstract variables, from one abstract `init`.

    Args:
      model: the Flax module.
      *inputs: example inputs (arrays or ShapeDtypeStructs) for `model.init`.
      **kwargs: keyword arguments of `model.init` (`train=False`, and `method=` for a network whose declared
        init method is not `__call__`: `ModelSpec.init_kwargs()`).

    Returns:
      ({module path: kind}, abstract variables).
    """
    kinds: dict[ModulePath, str] = {}

    def record(next_fun, args, kw, context):
        if context.method_name == "__call__":
            kinds[tuple(context.module.path)] = module_kind(type(context.module))
        return next_fun(*args, **kw)

    def init(*xs):
        return model.init(jax.random.key(0), *xs, **kwargs)

    with nn.intercept_methods(record):
        abstract = jax.eval_shape(init, *inputs)
    return kinds, abstract


def torch_to_flax(state_dict: Mapping[str, np.ndarray], target: Any, kinds: Mapping[ModulePath, str], *,
                  renames: Sequence[tuple[str, str]] = (), drop: Sequence[str] = (),
                  allow_missing: Sequence[str] = ()) -> tuple[dict, Report]:
    """Maps a torch state_dict onto Flax variables by the one rule, with strict accounting.

    Args:
      state_dict: torch key -> array (prefixes already stripped).
      target: Flax variables ({collection: tree}) giving structure, shapes and dtypes; abstract is fine
        unless `allow_missing` leaves some variables at their (concrete) initial value.
      kinds: module kinds from `module_kinds`.
      renames: (torch module prefix, new prefix) pairs applied to source keys first, e.g. loading the
        MS-Celeb ResNet18 into DAN: ("conv1", "features.0").
      drop: module-path patterns of source keys to drop on purpose (e.g. "fc", the source classifier).
      allow_missing: module-path patterns of target variables that may stay at init (e.g. "cat_head*").

    Returns:
      (variables as numpy arrays, report).

    Raises:
      CheckpointError: a shape mismatch, an unused source key, or a missing target variable that no
        pattern allows.
    """
    flat_target = traverse_util.flatten_dict(target)
    out: dict[tuple[str, ...], Any] = {}
    report = Report()
    for key, value in state_dict.items():
        tkey = rename(key, renames)
        module, leaf = tuple(tkey.split(".")[:-1]), tkey.split(".")[-1]
        if matches(".".join(module), drop):
            report.dropped.append(key)
            continue
        kind = kinds.get(module)
        if kind == "batchnorm" and leaf == NBT:
            report.num_batches_tracked[tkey] = int(np.asarray(value).item())
            continue
        rule = RULES.get(kind, {}).get(leaf) if kind != "raw" else Leaf("params", leaf)
        fpath = (rule.collection, *module, rule.name) if rule else None
        if fpath is None or fpath not in flat_target:
            report.unused.append(key)
            continue
        arr = rule.to_flax(np.asarray(value))
        want = flat_target[fpath]
        if tuple(arr.shape) != tuple(want.shape):
            raise CheckpointError(
                f"shape mismatch: torch {key} {list(np.shape(value))} -> flax {'/'.join(fpath)} needs "
                f"{list(_torch_shape(rule, want.shape))} in torch layout; is the architecture (--arch, class "
                "count) right?")
        out[fpath] = arr.astype(want.dtype)
        report.loaded[key] = "/".join(fpath)
    return complete(out, flat_target, allow_missing, report), report


def _torch_shape(rule: Leaf, flax_shape: tuple[int, ...]) -> tuple[int, ...]:
    return tuple(rule.to_torch(np.empty(flax_shape, dtype=np.uint8)).shape)


def flax_to_torch(variables: Mapping[str, Any], kinds: Mapping[ModulePath, str], *,
                  num_batches_tracked: Mapping[str, int] | None = None,
                  default_num_batches_tracked: int = 0) -> dict[str, np.ndarray]:
    """The exact inverse of `torch_to_flax` (without renames): Flax variables -> torch state_dict.

    Args:
      variables: {collection: tree} of arrays.
      kinds: module kinds from `module_kinds`.
      num_batches_tracked: BatchNorm counters recorded at conversion (torch key -> value).
      default_num_batches_tracked: the counter for BatchNorms not in `num_batches_tracked`.

    Returns:
      torch key -> numpy array (int64 scalars for num_batches_tracked).
    """
    inverse = {kind: {leaf.collection + "/" + leaf.name: (tname, leaf) for tname, leaf in rules.items()}
               for kind, rules in RULES.items()}
    out: dict[str, np.ndarray] = {}
    for fpath, value in traverse_util.flatten_dict(dict(variables)).items():
        collection, module, name = fpath[0], fpath[1:-1], fpath[-1]
        kind = kinds.get(module, "raw")
        if kind == "raw":
            tname, leaf = name, Leaf(collection, name)
        else:
            if f"{collection}/{name}" not in inverse[kind]:
                raise CheckpointError(f"flax variable {'/'.join(fpath)} has no torch counterpart")
            tname, leaf = inverse[kind][f"{collection}/{name}"]
        out[".".join((*module, tname))] = np.ascontiguousarray(leaf.to_torch(np.asarray(value)))
    counters = dict(num_batches_tracked or {})
    for module, kind in kinds.items():
        if kind == "batchnorm":
            key = ".".join((*module, NBT))
            out[key] = np.asarray(counters.get(key, default_num_batches_tracked), dtype=np.int64)
    return out
