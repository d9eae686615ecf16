"""Orbax checkpoints of the complete training state, for exact resumption.

`<workdir>/checkpoints/<step>/` holds the TrainState (model and task parameters, batch statistics,
optimizer state, step, RNG) and a JSON record (epoch, best metric so far). The data stream needs no
state of its own: it is a pure function of (seed, step), so resuming at step k re-creates it with
`start_step=k` whatever the number of workers (shared/reference/jax_platform.md section 4). Saves are
asynchronous and atomic: a killed save leaves a `*.orbax-checkpoint-tmp` directory that is ignored.
"""

from __future__ import annotations

import os
from typing import Any

import jax
import orbax.checkpoint as ocp

from fer_jax.errors import CheckpointError


class Checkpoints:
    """Keeps the last `keep` checkpoints under `<workdir>/checkpoints`."""

    def __init__(self, workdir: str, keep: int, read_only: bool = False):
        self.directory = os.path.abspath(os.path.join(workdir, "checkpoints"))
        options = ocp.CheckpointManagerOptions(max_to_keep=keep, enable_async_checkpointing=True,
                                               cleanup_tmp_directories=not read_only, create=not read_only,
                                               read_only=read_only)
        self._manager = ocp.CheckpointManager(self.directory, options=options)

    def latest_step(self) -> int | None:
        return self._manager.latest_step()

    def save(self, step: int, host_state: Any, record: dict[str, Any]) -> None:
        """Starts an asynchronous save of host (numpy) arrays; the caller keeps training."""
        self._manager.save(step, args=ocp.args.Composite(state=ocp.args.StandardSave(host_state),
                                                         record=ocp.args.JsonSave(record)))

    def restore(self, step: int, abstract_state: Any) -> tuple[Any, dict[str, Any]]:
        """Restores the state into the structure of `abstract_state` (so optax namedtuples survive).

        Raises:
          CheckpointError: the checkpoint does not fit this configuration (e.g. another model).
        """
        target = jax.tree.map(lambda a: jax.ShapeDtypeStruct(a.shape, a.dtype), abstract_state)
        try:
            out = self._manager.restore(step, args=ocp.args.Composite(
                state=ocp.args.StandardRestore(target), record=ocp.args.JsonRestore()))
        except (ValueError, KeyError, TypeError) as e:
            raise CheckpointError(f"checkpoint {self.directory}/{step} does not fit this configuration "
                                  f"({str(e).splitlines()[0][:160]}); use a fresh --workdir") from None
        return out["state"], out["record"]

    def close(self) -> None:
        """Waits for pending saves (a process must not exit before: pitfall 6) and closes."""
        self._manager.wait_until_finished()
        self._manager.close()
