"""The one evaluation driver, used by training (`fer_jax.train.loop`) and by `scripts/evaluate.py`.

`eval_step` is pure and runs a task's `eval_batch` on one padded batch; `run` feeds it a whole split and
accumulates what it returns on the host:

- `sums` (confusion matrices, loss sums, counts) are added batch by batch; under `pmap` they are summed
  over devices inside the step;
- `examples` (per-example arrays such as per-frame features and video ids, padding included with the
  batch's mask) are concatenated; under `pmap` every device's rows are gathered inside the step.

The task then turns the totals into metrics (`Task.metrics`), with an `EvalContext` built here from the
model's contract (e.g. the compiled video aggregation of Emotion-FAN).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from flax import linen as nn

from fer_jax.models.contract import ModelSpec
from fer_jax.tasks import EvalContext, Forward


def recipe_source(cfg: Any, split: str, which: str) -> Any:
    """A split of a recipe's dataset (`config.data`); `which` ("train" or "eval") adds `<which>_options`
    over the shared `options` (e.g. Emotion-FAN trains on frame groups and evaluates every frame)."""
    from fer_jax import data

    options = {**cfg.options.to_dict(), **cfg[f"{which}_options"].to_dict()}
    return data.create_source(cfg.name, cfg.root, split, class_order=cfg.class_order or None, **options)


def eval_step(variables: Any, batch: Mapping[str, Any], *, module: nn.Module, spec: ModelSpec, task: Any,
              axis_name: str | None = None, compute_dtype: Any = None) -> dict:
    """A task's evaluation values for one padded batch (the batch carries a boolean `mask`).

    Args:
      variables: the model's Flax variables ({"params", "batch_stats"}).
      batch: inputs of the network, labels, `mask` and whatever the task reads (e.g. `video`).
      axis_name: the pmap axis: sums are summed and examples gathered over it.

    Returns:
      {"sums": tree, "examples": tree}, either possibly absent.
    """
    out = dict(task.eval_batch(Forward(module, spec, variables, compute_dtype), batch))
    if axis_name:
        if "sums" in out:
            out["sums"] = jax.lax.psum(out["sums"], axis_name)
        if "examples" in out:
            out["examples"] = jax.lax.all_gather(out["examples"], axis_name, tiled=True)
    return out


def context(module: nn.Module, spec: ModelSpec, host_variables: Any, source: Any) -> EvalContext:
    """What `Task.metrics` needs besides the totals: class names and, for a video split evaluated by a
    network with its own video aggregation, that aggregation compiled over the host variables."""
    num_videos = getattr(source, "num_videos", None)
    aggregate = None
    if spec.video is not None and num_videos is not None:
        apply = jax.jit(lambda v, *args, num_videos: module.apply(v, *args, num_videos, method=spec.video.aggregate),
                        static_argnames="num_videos")

        def aggregate(*args: Any) -> np.ndarray:
            *values, video, n = args
            return np.asarray(apply(host_variables, *values, jnp.asarray(video, jnp.int32), num_videos=int(n)))

    return EvalContext(source.class_names, num_videos, aggregate)


def _add(a: Any, b: Any) -> Any:
    return b if a is None else jax.tree.map(np.add, a, b)


def run(step: Callable[[Any], dict], batches: Iterable[Any], task: Any, ctx: EvalContext) -> dict[str, Any]:
    """One pass over a held-out split; every metric from the accumulated totals.

    Args:
      step: placed batch -> `eval_step`'s output for it (already bound to the variables).
      batches: the placed batches of one pass.
      task: the task whose `metrics` turns the totals into metrics.
      ctx: from `context`.
    """
    sums, examples = None, []
    for batch in batches:
        out = jax.device_get(step(batch))
        if "sums" in out:
            sums = _add(sums, out["sums"])
        if "examples" in out:
            examples.append(out["examples"])
    gathered = jax.tree.map(lambda *xs: np.concatenate(xs), *examples) if examples else {}
    return task.metrics(sums, gathered, ctx)
