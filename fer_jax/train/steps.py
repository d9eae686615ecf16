"""Pure training and evaluation steps. Parallelism is applied from outside (`fer_jax.train.parallel`):
under `pmap` they run per device with `axis_name` set; under `jit` over a mesh they see the global batch."""

from __future__ import annotations

from typing import Any

import jax
import optax
from flax import linen as nn

from fer_jax.train import tasks
from fer_jax.train.state import TrainState


def _mean(x: Any, axis_name: str | None) -> Any:
    return jax.lax.pmean(x, axis_name) if axis_name else x


def _sum(x: Any, axis_name: str | None) -> Any:
    return jax.lax.psum(x, axis_name) if axis_name else x


def train_step(state: TrainState, batch: dict, *, module: nn.Module, task: Any, tx: optax.GradientTransformation,
               axis_name: str | None = None, compute_dtype: Any = None) -> tuple[TrainState, dict]:
    """One optimizer step on a batch {"image": [B,H,W,C] float32, "label": [B]}.

    Returns:
      (new state, metrics): loss and its terms (batch means), `correct` and `count` (sums), `lr`-free.
    """
    x = batch["image"] if compute_dtype is None else batch["image"].astype(compute_dtype)
    y = batch["label"]
    rng = jax.random.fold_in(state.rng, state.step)
    if axis_name:
        rng = jax.random.fold_in(rng, jax.lax.axis_index(axis_name))

    def loss_fn(params):
        outputs, updates = module.apply({"params": params["model"], "batch_stats": state.batch_stats}, x,
                                        train=True, mutable=["batch_stats"], rngs={"dropout": rng})
        loss, terms = task.loss(outputs, y, params["aux"], axis_name)
        return loss, (updates["batch_stats"], terms, task.logits(outputs))

    (loss, (batch_stats, terms, logits)), grads = jax.value_and_grad(loss_fn, has_aux=True)(state.params)
    # Per-device means of equal-sized shards: their mean is the global-batch mean (and gradient).
    grads, loss, terms = _mean((grads, loss, terms), axis_name)
    updates, opt_state = tx.update(grads, state.opt_state, state.params)
    params = optax.apply_updates(state.params, updates)
    correct, count = task.correct(logits, y)
    metrics = {"loss": loss, **terms, "correct": _sum(correct, axis_name), "count": _sum(count, axis_name)}
    new = state.replace(step=state.step + 1, params=params, batch_stats=batch_stats, opt_state=opt_state)
    return new, metrics


def eval_step(variables: dict, batch: dict, *, module: nn.Module, task: Any, num_classes: int,
              axis_name: str | None = None, compute_dtype: Any = None) -> dict:
    """Sums over the real examples of a padded batch {"image", "label", "mask"} (see `task.eval_sums`:
    a confusion matrix for classification, per-attribute hits for multi-label).

    Args:
      variables: the model's Flax variables ({"params", "batch_stats"}).
    """
    x = batch["image"] if compute_dtype is None else batch["image"].astype(compute_dtype)
    outputs = module.apply(variables, x, train=False)
    logits = tasks.at_least_float32(task.logits(outputs))
    return _sum(task.eval_sums(logits, batch["label"], batch["mask"], num_classes), axis_name)
