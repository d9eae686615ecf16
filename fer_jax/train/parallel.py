"""One pure step, two ways to spread it over devices (`config.parallel`).

- "jit": `jax.jit` over a `Mesh` of all devices, the batch sharded on "data", the state replicated. The
  step sees the global batch; XLA inserts the all-reduces (BatchNorm statistics are global).
- "pmap": `jax.pmap` over the local devices with axis "batch": BatchNorm averages its statistics with
  `axis_name`, the step `pmean`s gradients and losses.

Either way N devices compute what one device computes on the same global batch (measured pitfalls and
equalities: shared/reference/jax_platform.md section 1). Multi-host runs call `jax.distributed` first;
each process feeds its own slice of every global batch. Under jit, steps compile with fer-jax's per-kind XLA
options (`fer_jax.xla`).
"""

from __future__ import annotations

import collections
import functools
from collections.abc import Callable, Iterable, Iterator
from typing import Any

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

from fer_jax import xla
from fer_jax.errors import ConfigError

AXIS = "batch"  # pmap axis name (BatchNorm axis_name)


class DataParallel:
    """Places state and batches on devices and runs jitted or pmapped steps.

    Args:
      mode: "jit" or "pmap".
      train_step: pure `(state, batch) -> (state, metrics)`, taking `axis_name` as a keyword (None: evaluation
        only).
      eval_step: pure `(variables, batch) -> {"sums", "examples"}` (`fer_jax.evaluate.driver.eval_step`),
        taking `axis_name` as a keyword.
      global_batch: examples per step over all processes.
    """

    def __init__(self, mode: str, train_step: Callable | None, eval_step: Callable, global_batch: int):
        if mode not in ("jit", "pmap"):
            raise ConfigError(f"parallel must be 'jit' or 'pmap', not {mode!r}")
        self.mode = mode
        n = jax.device_count() if mode == "jit" else jax.local_device_count() * jax.process_count()
        if global_batch % n:
            raise ConfigError(f"batch_size {global_batch} is not divisible by the {n} devices")
        if mode == "jit":
            mesh = Mesh(np.array(jax.devices()), ("data",))
            self._repl, self._data = NamedSharding(mesh, P()), NamedSharding(mesh, P("data"))
            if train_step is not None:
                self._train = xla.jit(functools.partial(train_step, axis_name=None), "train",
                                      out_shardings=(self._repl, self._repl), donate_argnums=0)
            # Replicated outputs: per-example evaluation values come back whole on every process.
            self._eval = xla.jit(functools.partial(eval_step, axis_name=None), "eval", out_shardings=self._repl)
        else:
            # pmap compiles with XLA's defaults (fer_jax.xla says why).
            if train_step is not None:
                self._train = jax.pmap(functools.partial(train_step, axis_name=AXIS), axis_name=AXIS,
                                       donate_argnums=0)
            self._eval = jax.pmap(functools.partial(eval_step, axis_name=AXIS), axis_name=AXIS)
            self._local = NamedSharding(Mesh(np.array(jax.local_devices()), (AXIS,)), P(AXIS))

    @property
    def axis_name(self) -> str | None:
        """What the model's BatchNorm layers must be built with."""
        return AXIS if self.mode == "pmap" else None

    def put_state(self, host_state: Any) -> Any:
        """Host (numpy) state -> replicated on every device, in memory the runtime owns.

        On the CPU, placing a numpy array aliases its memory when it is aligned (jax 0.10.2:
        `make_array_from_process_local_data` and `device_put` both do, `may_alias=False` notwithstanding), and a
        step cannot donate a buffer it does not own: the first train step then wrote its whole new state to
        fresh memory (ConvNeXt-base: 1036 arrays, 1.0 GB) above its temporaries, which kept the heap from
        reusing them (`fer_jax.cli.keep_memory`), and the host arrays lived on as the old state. So every
        placed array is copied once more on its devices (`may_alias=False` does copy a jax array), and the
        first step donates as every later one does.
        """
        if self.mode == "jit":
            placed = jax.tree.map(lambda a: jax.make_array_from_process_local_data(self._repl, np.asarray(a)),
                                  host_state)
        else:
            # One copy a local device, in the layout pmap gives its outputs (`self._local`): placed another way
            # (`jax_utils.replicate` names its own mesh axis), the second step's state, a pmap output, would
            # not match the first's and pmap would compile the whole step again.
            n = jax.local_device_count()
            placed = jax.tree.map(lambda a: jax.device_put(np.stack([np.asarray(a)] * n), self._local), host_state)
        return jax.tree.map(lambda a: jax.device_put(a, a.sharding, may_alias=False), placed)

    def get_state(self, state: Any) -> Any:
        """Device state -> host numpy (one replica)."""
        if self.mode == "pmap":
            state = jax.tree.map(lambda a: a[0], state)
        return jax.device_get(state)

    def put_batch(self, local: dict) -> Any:
        """This process's slice of a global batch -> the step's input layout, on the devices (the copies are
        asynchronous: this returns before they finish)."""
        if self.mode == "jit":
            return {k: jax.make_array_from_process_local_data(self._data, np.asarray(v)) for k, v in local.items()}
        n = jax.local_device_count()
        return {k: jax.device_put(np.asarray(v).reshape(n, -1, *np.shape(v)[1:]), self._local)
                for k, v in local.items()}

    def prefetch(self, batches: Iterable[dict], size: int) -> Iterator[Any]:
        """`put_batch` of each local batch, issued `size` batches ahead of the one handed out.

        The host reads and copies batch k + size while the devices run step k, so after a host
        synchronisation (a logged metric, a checkpoint) the next steps' inputs are already on the devices.
        `size` 0 places each batch when it is asked for. Reading ahead does not change which batches a run
        trains on: a resumed run rebuilds its iterator from the step it resumes at.
        """
        queue: collections.deque = collections.deque()
        for local in batches:
            queue.append(self.put_batch(local))
            if len(queue) > size:
                yield queue.popleft()
        while queue:
            yield queue.popleft()

    def train(self, state: Any, batch: Any) -> tuple[Any, dict]:
        state, metrics = self._train(state, batch)
        return state, self._first(metrics)

    def evaluate(self, state: Any, batch: Any) -> dict:
        return self._first(self._eval(state, batch))

    def _first(self, tree: Any) -> Any:
        return jax.tree.map(lambda a: a[0], tree) if self.mode == "pmap" else tree
