"""The complete training state: everything a resumed run needs to continue exactly."""

from __future__ import annotations

from typing import Any

import flax
import jax
import jax.numpy as jnp
import optax
from flax import linen as nn

from fer_jax.models.contract import ModelSpec


@flax.struct.dataclass
class TrainState:
    """Model parameters and the task's extra trainable parameters (e.g. DAN's affinity centers) live in
    `params` = {"model": ..., "aux": ...} so one optimizer updates both, as upstream's does.

    Attributes:
      step: optimizer steps taken (int32); also the position of the data stream.
      params: {"model": Flax params, "aux": task parameters}.
      batch_stats: BatchNorm running statistics.
      opt_state: optax state (its step count drives the schedule).
      rng: base PRNG key (uint32[2]); each step folds in its step number.
    """

    step: jax.Array
    params: Any
    batch_stats: Any
    opt_state: optax.OptState
    rng: jax.Array


def create(module: nn.Module, spec: ModelSpec, task: Any, tx: optax.GradientTransformation, image_size: int,
           seed: int) -> TrainState:
    """A freshly initialised state (upstream's initialisers for the model, the task's for `aux`), every
    variable created through the network's declared init (`ModelSpec.init`)."""
    init_rng, aux_rng, step_rng = jax.random.split(jax.random.PRNGKey(seed), 3)
    example = spec.example_inputs(1, image_size)
    variables = spec.init(module, init_rng, {k: jnp.zeros(v.shape, v.dtype) for k, v in example.items()})
    params = {"model": variables["params"], "aux": task.init_aux(aux_rng)}
    return TrainState(step=jnp.zeros((), jnp.int32), params=params,
                      batch_stats=variables.get("batch_stats", {}), opt_state=tx.init(params), rng=step_rng)


def model_variables(state: TrainState) -> dict:
    """The Flax variables of the model alone (what a model directory stores)."""
    variables = {"params": state.params["model"]}
    if state.batch_stats:
        variables["batch_stats"] = state.batch_stats
    return variables
