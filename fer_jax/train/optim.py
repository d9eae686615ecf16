"""Optimizers and learning-rate schedules with torch.optim semantics, built from optax.

Equivalences measured in shared/reference/jax_platform.md section 7 (<= 1.7e-16 in float64 over 12
steps). Upstream schedulers step once per *epoch*, so every schedule here is a staircase of
`epoch = step // steps_per_epoch`.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import jax
import jax.numpy as jnp
import ml_collections
import optax

from fer_jax import merge
from fer_jax.errors import ConfigError


def torch_sgd(learning_rate: optax.ScalarOrSchedule, momentum: float = 0.0, weight_decay: float = 0.0,
              nesterov: bool = False) -> optax.GradientTransformation:
    """torch.optim.SGD (dampening 0): weight decay is L2 added to the gradient *before* momentum, on every
    parameter it is given (torch applies it to BN and biases too)."""
    return optax.chain(optax.add_decayed_weights(weight_decay),
                       optax.sgd(learning_rate, momentum=momentum or None, nesterov=nesterov))


def torch_adam(learning_rate: optax.ScalarOrSchedule, b1: float = 0.9, b2: float = 0.999, eps: float = 1e-8,
               weight_decay: float = 0.0) -> optax.GradientTransformation:
    """torch.optim.Adam: weight decay is coupled L2 (added to the gradient), unlike AdamW."""
    return optax.chain(optax.add_decayed_weights(weight_decay), optax.adam(learning_rate, b1, b2, eps))


def torch_adamw(learning_rate: optax.ScalarOrSchedule, b1: float = 0.9, b2: float = 0.999, eps: float = 1e-8,
                weight_decay: float = 0.01) -> optax.GradientTransformation:
    """torch.optim.AdamW (decoupled decay; torch's default weight_decay is 0.01, optax's 1e-4)."""
    return optax.adamw(learning_rate, b1, b2, eps, weight_decay=weight_decay)


def epoch_schedule(cfg: ml_collections.ConfigDict, base_lr: float, steps_per_epoch: int
                   ) -> Callable[[jnp.ndarray], jnp.ndarray]:
    """The learning rate at an optimizer step, for a scheduler stepped once per epoch.

    Args:
      cfg: `config.schedule`: name "constant" | "step" (StepLR: step_epochs, gamma) | "multistep"
        (MultiStepLR: milestones, gamma) | "exponential" (ExponentialLR: gamma) | "cosine"
        (CosineAnnealingLR over `epochs` with floor lr `min_lr`).
      base_lr: the initial learning rate.
      steps_per_epoch: optimizer steps in one epoch.

    Raises:
      ConfigError: unknown schedule name.
    """
    spe = max(1, steps_per_epoch)
    name = cfg.name

    def epoch_of(step):  # float32, or float64 when jax_enable_x64 is on
        return (jnp.asarray(step) // spe).astype(jnp.result_type(float))

    if name == "constant":
        return lambda step: jnp.full((), base_lr, jnp.result_type(float))
    if name == "step":
        return lambda step: base_lr * cfg.gamma ** jnp.floor(epoch_of(step) / cfg.step_epochs)
    if name == "multistep":
        milestones = jnp.asarray(sorted(cfg.milestones))
        return lambda step: base_lr * cfg.gamma ** jnp.sum(epoch_of(step) >= milestones)
    if name == "exponential":
        return lambda step: base_lr * cfg.gamma ** epoch_of(step)
    if name == "cosine":
        return lambda step: cfg.min_lr + (base_lr - cfg.min_lr) * 0.5 * (
            1 + jnp.cos(jnp.pi * jnp.minimum(epoch_of(step), cfg.epochs) / cfg.epochs))
    raise ConfigError(f"unknown schedule.name {name!r}; use constant, step, multistep, exponential or cosine")


def freeze(tx: optax.GradientTransformation, frozen: Sequence[str]) -> optax.GradientTransformation:
    """`tx` on every parameter except the model parameters under the module paths `frozen`, which stay as
    they are (torch.optim skips a parameter without a gradient: no update, no weight decay, no state).

    Args:
      tx: the optimizer of the trainable parameters.
      frozen: module-path patterns (`fer_jax.merge.matches`) of {"model": ...} parameters to leave alone.
    """
    if not frozen:
        return tx

    def label(path, _):
        keys = [str(getattr(k, "key", k)) for k in path]
        return "frozen" if keys[0] == "model" and merge.matches(".".join(keys[1:-1]), frozen) else "train"

    def labels(params):
        return jax.tree_util.tree_map_with_path(label, params)

    return optax.multi_transform({"train": tx, "frozen": optax.set_to_zero()}, labels)


def build(config: ml_collections.ConfigDict, steps_per_epoch: int, frozen: Sequence[str] = ()
          ) -> tuple[optax.GradientTransformation, Callable[[jnp.ndarray], jnp.ndarray]]:
    """The optimizer of a recipe (`config.optimizer`, `config.schedule`) and its learning-rate schedule.

    Args:
      config: the recipe.
      steps_per_epoch: optimizer steps per epoch (schedules step per epoch, as upstream's).
      frozen: module-path patterns of model parameters upstream never updates (`ModelSpec.frozen`).

    Raises:
      ConfigError: unknown optimizer name.
    """
    opt = config.optimizer
    schedule = epoch_schedule(config.schedule, opt.lr, steps_per_epoch)
    if opt.name == "sgd":
        tx = torch_sgd(schedule, opt.momentum, opt.weight_decay, opt.get("nesterov", False))
    elif opt.name == "adam":
        tx = torch_adam(schedule, *opt.betas, opt.eps, opt.weight_decay)
    elif opt.name == "adamw":
        tx = torch_adamw(schedule, *opt.betas, opt.eps, opt.weight_decay)
    else:
        raise ConfigError(f"unknown optimizer.name {opt.name!r}; use sgd, adam or adamw")
    return freeze(tx, frozen), schedule
