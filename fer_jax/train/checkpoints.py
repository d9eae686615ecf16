"""A training workdir: Orbax checkpoints of the complete training state, for exact resumption, and the
checks that keep a workdir from being clobbered or poisoned.

`<workdir>/checkpoints/<step>/` holds the TrainState (model and task parameters, batch statistics,
optimizer state, step, RNG) and a JSON record (epoch, best metric so far, the epoch's training sums). The
data stream needs no state of its own: it is a pure function of (seed, step), so resuming at step k
re-creates it with `start_step=k` whatever the number of workers (shared/reference/jax_platform.md section
4). Saves are asynchronous and atomic: a killed save leaves a `*.orbax-checkpoint-tmp` directory that is
ignored, and removed when the workdir is next written. Only finite states are saved (`all_finite`).

A workdir is checked before a run writes anything into it (`check_workdir`): it is a directory (or can be
created), what it holds was written by fer-jax, and a run that continues its checkpoints trains the same
network on the same data (`RUN_IDENTITY`); the learning rate, the schedule and the length may change.
"""

from __future__ import annotations

import json
import logging
import os
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import orbax.checkpoint as ocp

from fer_jax import pretrained
from fer_jax.errors import CheckpointError, ConfigError, check_output_path, remove_stale_temporaries

# Config entries a workdir's checkpoints are tied to: another value would continue them as another run.
RUN_IDENTITY = ("model", "task", "data.name", "data.options", "data.class_order", "optimizer.name")


class Checkpoints:
    """Keeps the last `keep` checkpoints under `<workdir>/checkpoints`."""

    def __init__(self, workdir: str, keep: int, read_only: bool = False):
        self.directory = os.path.abspath(os.path.join(workdir, "checkpoints"))
        options = ocp.CheckpointManagerOptions(max_to_keep=None if read_only else keep,
                                               save_interval_steps=0 if read_only else 1,
                                               enable_async_checkpointing=True, cleanup_tmp_directories=not read_only,
                                               create=not read_only, read_only=read_only)
        absl_logger = logging.getLogger("absl")  # Orbax warns that a read-only directory is read-only
        level = absl_logger.level
        absl_logger.setLevel(logging.ERROR if read_only else level)
        try:
            self._manager = ocp.CheckpointManager(self.directory, options=options)
        finally:
            absl_logger.setLevel(level)

    def latest_step(self) -> int | None:
        return self._manager.latest_step()

    def save(self, step: int, host_state: Any, record: dict[str, Any]) -> None:
        """Starts an asynchronous save of host (numpy) arrays; the caller keeps training."""
        self._manager.save(step, args=ocp.args.Composite(state=ocp.args.StandardSave(host_state),
                                                         record=ocp.args.JsonSave(record)))

    def restore(self, step: int, abstract_state: Any) -> tuple[Any, dict[str, Any]]:
        """Restores the state into the structure of `abstract_state` (so optax namedtuples survive).

        Raises:
          CheckpointError: the checkpoint does not fit this configuration (e.g. another model), or holds
            non-finite values (a checkpoint from before fer-jax refused to save them).
        """
        target = jax.tree.map(lambda a: jax.ShapeDtypeStruct(a.shape, a.dtype), abstract_state)
        where = f"checkpoint {self.directory}/{step}"
        try:
            out = self._manager.restore(step, args=ocp.args.Composite(
                state=ocp.args.StandardRestore(target), record=ocp.args.JsonRestore()))
        except (ValueError, KeyError, TypeError) as e:
            raise CheckpointError(f"{where} does not fit this configuration "
                                  f"({str(e).splitlines()[0][:160]}); use a fresh --workdir") from None
        wrong = [a.shape for a, b in zip(jax.tree.leaves(out["state"]), jax.tree.leaves(target)) if a.shape != b.shape]
        if wrong:
            raise CheckpointError(f"{where} does not fit this configuration ({len(wrong)} arrays of other "
                                  "shapes); use a fresh --workdir")
        if not all_finite(out["state"]):
            raise CheckpointError(f"{where} holds non-finite values; delete it to continue from an earlier "
                                  "checkpoint, or use a fresh --workdir")
        return out["state"], out["record"]

    def close(self) -> None:
        """Waits for pending saves (a process must not exit before: pitfall 6) and closes."""
        self._manager.wait_until_finished()
        self._manager.close()


def all_finite(tree: Any) -> bool:
    """Whether every floating-point value of `tree` (a TrainState: parameters, batch statistics, optimizer
    state) is finite, checked on the host, where a state is read for saving anyway.

    As one compiled reduction (one reduction per array) it cost a compilation in every process that trained or
    resumed: 3.9 s for FERAtt's state on a 2-core CPU (1020 arrays; the check itself took 71 ms).
    """
    return all(bool(np.isfinite(a).all()) for a in jax.tree.leaves(tree) if jnp.issubdtype(a.dtype, jnp.inexact))


def finished_steps(workdir: str) -> list[int]:
    """Steps of the finished checkpoints in `workdir` (Orbax's committed step directories), read-only."""
    directory = os.path.join(workdir, "checkpoints")
    if not os.path.isdir(directory):
        return []
    return sorted(int(name) for name in os.listdir(directory)
                  if name.isdigit() and os.path.isfile(os.path.join(directory, name, "_CHECKPOINT_METADATA")))


def check_workdir(workdir: str, config: ml_collections.ConfigDict) -> str:
    """Refuses a workdir this run may not write, before anything is written; returns it absolute.

    Raises:
      ConfigError: the path is not a (creatable) directory, it holds files fer-jax did not write, or its
        checkpoints belong to a run with other `RUN_IDENTITY` values.
    """
    workdir = check_output_path(workdir, "--workdir", directory=True)
    if not os.path.isdir(workdir):
        return workdir
    for name, is_dir in (("checkpoints", True), ("tensorboard", True), ("best", True), ("config.json", False),
                         ("metrics.jsonl", False), ("best_metrics.json", False)):
        path = os.path.join(workdir, name)
        if os.path.exists(path) and os.path.isdir(path) != is_dir:
            raise ConfigError(f"--workdir {workdir} holds a {name} that fer-jax did not write; use another --workdir")
    best = os.path.join(workdir, "best")
    if os.path.isdir(best) and os.listdir(best) and not pretrained.is_model_directory(best):
        raise ConfigError(f"--workdir {workdir} holds a best/ that is not a fer-jax model directory; use another "
                          "--workdir")
    recorded = _recorded_config(workdir)
    if recorded is not None and finished_steps(workdir):
        new = json.loads(config.to_json_best_effort())
        for key in RUN_IDENTITY:
            diff = _difference(key, _lookup(recorded, key), _lookup(new, key))
            if diff:
                key, old_value, new_value = diff
                raise ConfigError(f"--workdir {workdir} holds checkpoints of a run with {key}={old_value!r} (its "
                                  f"config.json); this command has {key}={new_value!r}: use a fresh --workdir, or "
                                  "the recorded value to continue that run")
    return workdir


def _recorded_config(workdir: str) -> dict | None:
    path = os.path.join(workdir, "config.json")
    if not os.path.exists(path):
        return None
    try:
        with open(path) as f:
            recorded = json.load(f)
    except (OSError, ValueError):
        recorded = None
    if not isinstance(recorded, dict) or not {"model", "data", "optimizer"} <= set(recorded):
        raise ConfigError(f"--workdir {workdir} holds a config.json that fer-jax did not write; use another --workdir")
    return recorded


def _lookup(tree: dict, key: str) -> Any:
    for part in key.split("."):
        tree = tree.get(part) if isinstance(tree, dict) else None
    return tree


def _difference(key: str, old: Any, new: Any) -> tuple[str, Any, Any] | None:
    """The first (dotted key, old value, new value) where two JSON trees differ; None if they are equal."""
    if isinstance(old, dict) and isinstance(new, dict):
        for k in sorted({*old, *new}):
            diff = _difference(f"{key}.{k}", old.get(k), new.get(k))
            if diff:
                return diff
        return None
    return None if old == new else (key, old, new)


def prepare_workdir(workdir: str, config: ml_collections.ConfigDict) -> None:
    """Writes the accepted run's config.json (atomically) and removes temporaries a killed run left."""
    os.makedirs(workdir, exist_ok=True)
    remove_stale_temporaries(os.path.join(workdir, "best"))
    path = os.path.join(workdir, "config.json")
    remove_stale_temporaries(path)
    tmp = f"{path}.tmp-{os.getpid()}"
    with open(tmp, "w") as f:
        f.write(config.to_json_best_effort(indent=2, sort_keys=True) + "\n")
    os.replace(tmp, path)
