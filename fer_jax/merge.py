"""Strictly accounted assignment of weights to a model's variables.

Shared by checkpoint conversion (`porting.mapping`, torch keys) and weight initialisation from another
fer-jax model (`merge_variables`, e.g. the converted MS-Celeb ResNet18 into DAN). Every source entry is
loaded, dropped on request, or reported unused; every target variable is filled, left at init on
request, or reported missing. Anything unaccounted for is an error: a mapping that only warns silently
trains from random weights.

Patterns and renames work on dotted torch-style module paths: the Flax variable
`params/cat_head0/sa/conv1x1/0/kernel` has the module path `cat_head0.sa.conv1x1.0`.
"""

from __future__ import annotations

import dataclasses
import fnmatch
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import jax
import numpy as np
from flax import traverse_util

from fer_jax.errors import CheckpointError

Path = tuple[str, ...]


def matches(module_path: str, patterns: Iterable[str]) -> bool:
    """True if `module_path` is, lies under, or glob-matches one of `patterns` (`fc`, `cat_head*`)."""
    return any(module_path == p or module_path.startswith(p + ".") or fnmatch.fnmatchcase(module_path, p)
               for p in patterns)


def rename(path: str, renames: Sequence[tuple[str, str]]) -> str:
    """Replaces the first matching module prefix: ("conv1", "features.0") maps conv1.weight to features.0.weight."""
    for old, new in renames:
        if path == old or path.startswith(old + "."):
            return new + path[len(old):]
    return path


def short(items: Sequence[str], n: int = 4) -> str:
    head = ", ".join(items[:n])
    return head + (f", ... (+{len(items) - n})" if len(items) > n else "")


@dataclasses.dataclass
class Report:
    """What happened to every source entry and every target variable."""

    loaded: dict[str, str] = dataclasses.field(default_factory=dict)  # source name -> target path
    num_batches_tracked: dict[str, int] = dataclasses.field(default_factory=dict)  # torch BN counters
    dropped: list[str] = dataclasses.field(default_factory=list)  # source entries dropped on request
    unused: list[str] = dataclasses.field(default_factory=list)  # source entries with no target
    missing: list[str] = dataclasses.field(default_factory=list)  # target paths with no source
    left_at_init: list[str] = dataclasses.field(default_factory=list)  # missing, but allowed

    def counts(self) -> dict[str, int]:
        by_collection: dict[str, int] = {}
        for path in self.loaded.values():
            c = path.split("/")[0]
            by_collection[c] = by_collection.get(c, 0) + 1
        return {**{f"loaded_{c}": n for c, n in sorted(by_collection.items())},
                "num_batches_tracked": len(self.num_batches_tracked), "dropped": len(self.dropped),
                "unused": len(self.unused), "missing": len(self.missing), "left_at_init": len(self.left_at_init)}

    def summary(self) -> str:
        c = self.counts()
        parts = [f"{c.get('loaded_params', 0)} params", f"{c.get('loaded_batch_stats', 0)} batch stats"]
        if self.num_batches_tracked:
            parts.append(f"{len(self.num_batches_tracked)} num_batches_tracked kept in metadata")
        if self.dropped:
            parts.append(f"{len(self.dropped)} source entries dropped on request ({short(self.dropped)})")
        if self.left_at_init:
            parts.append(f"{len(self.left_at_init)} variables left at init ({short(self.left_at_init)})")
        return "loaded " + ", ".join(parts)


def complete(out: dict[Path, Any], target: Mapping[Path, Any], allow_missing: Sequence[str],
             report: Report) -> dict:
    """Fills allowed gaps from `target`, raises on anything unaccounted for, and unflattens.

    Args:
      out: flat {path: array} assigned so far.
      target: flat {path: array or ShapeDtypeStruct}; concrete wherever `allow_missing` may apply.
      allow_missing: module-path patterns of target variables that may keep their initial value.
      report: updated in place (`left_at_init`, `missing`).

    Raises:
      CheckpointError: unused source entries or missing target variables remain.
    """
    for path, want in target.items():
        if path in out:
            continue
        name = "/".join(path)
        if matches(".".join(path[1:-1]), allow_missing):
            if isinstance(want, jax.ShapeDtypeStruct):
                raise ValueError(f"{name} may stay at init but the target is abstract; pass initial values")
            out[path] = want
            report.left_at_init.append(name)
        else:
            report.missing.append(name)
    problems = []
    if report.unused:
        problems.append(f"{len(report.unused)} source entries have no place in the model ({short(report.unused)})")
    if report.missing:
        problems.append(f"{len(report.missing)} model variables have no source ({short(report.missing)})")
    if problems:
        raise CheckpointError("; ".join(problems) + "; wrong architecture or hyperparameters?")
    return traverse_util.unflatten_dict(out)


def merge_variables(source: Mapping[str, Any], target: Mapping[str, Any], *,
                    renames: Sequence[tuple[str, str]] = (), drop: Sequence[str] = (),
                    allow_missing: Sequence[str] = ()) -> tuple[dict, Report]:
    """Initialises `target` variables from `source` variables of another (or the same) model.

    Args:
      source: {collection: tree} of the pretrained model.
      target: {collection: tree} of concrete initial values of the model to train.
      renames: module-path prefix renames applied to source paths.
      drop: module-path patterns (after renaming) of source variables to drop on purpose.
      allow_missing: module-path patterns of target variables that keep their initial value.

    Returns:
      (merged variables, report).

    Raises:
      CheckpointError: shape mismatch, or anything unaccounted for.
    """
    flat_target = traverse_util.flatten_dict(dict(target))
    out: dict[Path, Any] = {}
    report = Report()
    for path, value in traverse_util.flatten_dict(dict(source)).items():
        name = "/".join(path)
        module = rename(".".join(path[1:-1]), renames)
        if matches(module, drop):
            report.dropped.append(name)
            continue
        new = (path[0], *(module.split(".") if module else ()), path[-1])
        if new not in flat_target:
            report.unused.append(name)
            continue
        want = flat_target[new]
        if tuple(np.shape(value)) != tuple(want.shape):
            raise CheckpointError(f"shape mismatch: {name} {list(np.shape(value))} -> {'/'.join(new)} "
                                  f"{list(want.shape)}; drop it on purpose if the head changed size")
        out[new] = jax.numpy.asarray(value, dtype=want.dtype)
        report.loaded[name] = "/".join(new)
    return complete(out, flat_target, allow_missing, report), report
