"""The pure training step. Parallelism is applied from outside (`fer_jax.train.parallel`): under `pmap` it runs
per device with `axis_name` set; under `jit` over a mesh it sees the global batch. The evaluation step is
`fer_jax.evaluate.driver.eval_step`, shared with `scripts/evaluate.py`."""

from __future__ import annotations

from typing import Any

import jax
import optax
from flax import linen as nn

from fer_jax.models.contract import ModelSpec
from fer_jax.train.state import TrainState


def _mean(x: Any, axis_name: str | None) -> Any:
    return jax.lax.pmean(x, axis_name) if axis_name else x


def _sum(x: Any, axis_name: str | None) -> Any:
    return jax.lax.psum(x, axis_name) if axis_name else x


def train_step(state: TrainState, batch: dict, *, module: nn.Module, spec: ModelSpec, task: Any,
               tx: optax.GradientTransformation, axis_name: str | None = None, compute_dtype: Any = None
               ) -> tuple[TrainState, dict]:
    """One optimizer step on a batch: the network's declared inputs (`spec.inputs`), labels and whatever
    the task reads.

    Returns:
      (new state, metrics): the task's logged terms (batch means, `loss` among them), `correct` and `count`
      (sums over the global batch).
    """
    inputs = spec.batch_inputs(batch, compute_dtype)
    step_rng = jax.random.fold_in(state.rng, state.step)
    # The task's draws (FERAtt+Rep's mixup) are over the global batch: one key on every device. The
    # network's streams (dropout, drop path) differ per device.
    task_rng, rng = jax.random.split(step_rng)
    if axis_name:
        rng = jax.random.fold_in(rng, jax.lax.axis_index(axis_name))

    def loss_fn(params, net_rng):
        raw, updates = module.apply({"params": params["model"], "batch_stats": state.batch_stats}, *inputs,
                                    train=True, mutable=["batch_stats"], rngs=spec.train_rngs(net_rng))
        outputs = spec.named(raw)
        logits = spec.predict(outputs)
        objective, terms = task.loss(outputs, logits, batch, params["aux"], axis_name, rng=task_rng)
        return objective, (updates.get("batch_stats", {}), terms, logits)

    (_, (batch_stats, terms, logits)), grads = jax.value_and_grad(loss_fn, has_aux=True)(state.params, rng)
    # Per-device means of equal-sized shards: their mean is the global-batch mean (and gradient).
    grads, terms = _mean((grads, terms), axis_name)
    if isinstance(tx, optax.GradientTransformationExtraArgs):
        # The seam for multi-pass optimizers (SAM): another forward and backward pass on the same batch, at
        # other parameters, with fresh draws of the network's streams; the global-batch mean gradient. Its
        # BatchNorm updates are not kept (the first pass's are).
        def grad_fn(params, pass_index):
            grad = jax.grad(lambda p: loss_fn(p, jax.random.fold_in(rng, pass_index))[0])(params)
            return _mean(grad, axis_name)

        updates, opt_state = tx.update(grads, state.opt_state, state.params, grad_fn=grad_fn)
    else:
        updates, opt_state = tx.update(grads, state.opt_state, state.params)
    params = optax.apply_updates(state.params, updates)
    correct, count = task.train_counts(logits, batch)
    metrics = {**terms, "correct": _sum(correct, axis_name), "count": _sum(count, axis_name)}
    new = state.replace(step=state.step + 1, params=params, batch_stats=batch_stats, opt_state=opt_state)
    return new, metrics
