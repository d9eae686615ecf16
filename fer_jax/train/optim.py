"""Optimizers and learning-rate schedules with torch.optim semantics, built from optax.

Equivalences measured in shared/reference/jax_platform.md section 7 (<= 1.7e-16 in float64 over 12
steps). Upstream schedulers step once per *epoch*, so every schedule here is a staircase of
`epoch = step // steps_per_epoch`.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any, NamedTuple

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


class TorchAMSGradState(NamedTuple):
    """State of `scale_by_torch_amsgrad`: torch's `step`, `exp_avg`, `exp_avg_sq`, `max_exp_avg_sq`."""

    count: jax.Array
    mu: optax.Updates
    nu: optax.Updates
    nu_max: optax.Updates


def scale_by_torch_amsgrad(b1: float = 0.9, b2: float = 0.999, eps: float = 1e-8) -> optax.GradientTransformation:
    """The direction of torch.optim.Adam(amsgrad=True), to be scaled by -lr.

    torch keeps the running maximum of the *raw* second moment and bias-corrects afterwards:
    m <- m + (1 - b1) (g - m); v <- b2 v + (1 - b2) g^2; v_max <- max(v_max, v); direction
    (m / (sqrt(v_max) / sqrt(1 - b2^t) + eps)) / (1 - b1^t). `optax.amsgrad` takes the maximum of the
    bias-corrected moment instead, which differs (3.2e-2 over 12 steps: shared/reference/jax_platform.md
    section 7). A parameter whose gradient stays 0 keeps m = v = 0 and moves by exactly 0.
    """

    def init_fn(params):
        zeros = lambda: jax.tree.map(jnp.zeros_like, params)  # noqa: E731
        return TorchAMSGradState(jnp.zeros((), jnp.int32), zeros(), zeros(), zeros())

    def update_fn(updates, state, params=None):
        del params
        count = optax.safe_increment(state.count)
        mu = jax.tree.map(lambda m, g: m + (1 - b1) * (g - m), state.mu, updates)  # torch: exp_avg.lerp_
        nu = jax.tree.map(lambda v, g: b2 * v + (1 - b2) * g * g, state.nu, updates)
        nu_max = jax.tree.map(jnp.maximum, state.nu_max, nu)

        def direction(m, v_max):
            # 1 - b^t as -expm1(t log b): torch computes the bias corrections in double precision (Python
            # floats); in float32, 1 - 0.999^t would be off by 1.3e-5 (relative) at t = 1, this by ~1e-7.
            t = count.astype(m.dtype)
            denom = jnp.sqrt(v_max) / jnp.sqrt(-jnp.expm1(t * math.log(b2))) + eps
            return m / denom / -jnp.expm1(t * math.log(b1))

        return jax.tree.map(direction, mu, nu_max), TorchAMSGradState(count, mu, nu, nu_max)

    return optax.GradientTransformation(init_fn, update_fn)


def torch_adam(learning_rate: optax.ScalarOrSchedule, b1: float = 0.9, b2: float = 0.999, eps: float = 1e-8,
               weight_decay: float = 0.0, amsgrad: bool = False) -> optax.GradientTransformation:
    """torch.optim.Adam: weight decay is coupled L2 (added to the gradient), unlike AdamW; `amsgrad` as
    torch's (`scale_by_torch_amsgrad`), not optax.amsgrad."""
    if amsgrad:
        return optax.chain(optax.add_decayed_weights(weight_decay), scale_by_torch_amsgrad(b1, b2, eps),
                           optax.scale_by_learning_rate(learning_rate))
    return optax.chain(optax.add_decayed_weights(weight_decay), optax.adam(learning_rate, b1, b2, eps))


def torch_adamw(learning_rate: optax.ScalarOrSchedule, b1: float = 0.9, b2: float = 0.999, eps: float = 1e-8,
                weight_decay: float = 0.01) -> optax.GradientTransformation:
    """torch.optim.AdamW (decoupled decay; torch's default weight_decay is 0.01, optax's 1e-4)."""
    return optax.adamw(learning_rate, b1, b2, eps, weight_decay=weight_decay)


def sam(tx: optax.GradientTransformation, rho: float, adaptive: bool = False, eps: float = 1e-12
        ) -> optax.GradientTransformationExtraArgs:
    """Sharpness-aware minimisation around `tx`, stepped as davda54/sam's `SAM` (MFTN-FER's utils.py) steps:

    with g the gradient at w (the step's first pass), e = rho * s * g / (||s * g|| + eps), s = |w| if
    `adaptive` else 1 (the norm over every parameter; one without a gradient has g = 0 and contributes
    nothing) and, adaptive, e scaled by w^2 instead; then g' = `grad_fn(w + e)` (a second forward and backward
    pass on the same batch) and `tx`'s step at w with g' (the base optimizer sees only g').

    `update` takes the keyword `grad_fn(params, pass_index) -> gradient`: the training step's seam for
    multi-pass optimizers (`fer_jax.train.steps.train_step`), which returns the global-batch mean gradient,
    so the norm is that of the global gradient under every data-parallel path. Its state is `tx`'s.
    """

    def init_fn(params):
        return tx.init(params)

    def update_fn(updates, state, params=None, *, grad_fn=None, **extra):
        if grad_fn is None or params is None:
            raise ValueError("sam needs params and the training step's grad_fn(params, pass_index)")
        scaled = jax.tree.map(lambda g, w: g * jnp.abs(w), updates, params) if adaptive else updates
        norm = optax.tree.norm(scaled)  # the global L2 norm (what the deprecated optax.global_norm calls)
        scale = rho / (norm + eps)
        e = jax.tree.map(lambda g, w: (w * w if adaptive else 1.0) * g * scale.astype(g.dtype), updates, params)
        second = grad_fn(jax.tree.map(jnp.add, params, e), 1)
        return tx.update(second, state, params)

    return optax.GradientTransformationExtraArgs(init_fn, update_fn)


def epoch_schedule(cfg: ml_collections.ConfigDict, base_lr: float, steps_per_epoch: int
                   ) -> Callable[[jnp.ndarray], jnp.ndarray]:
    """The learning rate at an optimizer step, for a scheduler stepped once per epoch.

    Args:
      cfg: `config.schedule`: name "constant" | "step" (StepLR: step_epochs, gamma) | "multistep"
        (MultiStepLR: milestones, gamma) | "exponential" (ExponentialLR: gamma) | "cosine"
        (CosineAnnealingLR over `epochs` with floor lr `min_lr`, or `base_lr * min_lr_ratio` if given).
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
        # A floor relative to the base rate (`min_lr_ratio`) follows each parameter group's own rate: FAER's
        # per-epoch lr * [(1 - 1e-6) * (1 + cos(pi e / E)) / 2 + 1e-6] is min_lr_ratio = 1e-6.
        ratio = cfg.get("min_lr_ratio")
        floor = base_lr * ratio if ratio is not None else cfg.min_lr
        return lambda step: floor + (base_lr - floor) * 0.5 * (
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


def _base_optimizer(opt: ml_collections.ConfigDict, schedule: optax.ScalarOrSchedule) -> optax.GradientTransformation:
    amsgrad = opt.get("amsgrad", False)
    if not isinstance(amsgrad, bool):
        raise ConfigError(f"optimizer.amsgrad={amsgrad!r}: use True or False")
    if amsgrad and opt.name != "adam":
        raise ConfigError(f"optimizer.amsgrad=True is an option of adam, not of {opt.name!r}")
    if opt.name == "sgd":
        return torch_sgd(schedule, opt.momentum, opt.weight_decay, opt.get("nesterov", False))
    if opt.name == "adam":
        return torch_adam(schedule, *opt.betas, opt.eps, opt.weight_decay, amsgrad=amsgrad)
    if opt.name == "adamw":
        return torch_adamw(schedule, *opt.betas, opt.eps, opt.weight_decay)
    raise ConfigError(f"unknown optimizer.name {opt.name!r}; use sgd, adam or adamw")


def param_path(path) -> str:
    """The name a parameter group pattern matches: a model parameter's module path (`stages.0.1.dwconv`),
    `aux.<name>` for a task's own parameter (`aux.centers`)."""
    keys = [str(getattr(k, "key", k)) for k in path]
    return ".".join(keys[1:-1]) if keys[0] == "model" else ".".join(keys)


def group_labels(groups: ml_collections.ConfigDict, frozen: Sequence[str] = ()) -> Callable[[Any], Any]:
    """params -> the same tree of group names: the first group whose `params` patterns match, "frozen" for
    the `frozen` patterns and for parameters in no group (torch.optim never sees those: no update, no decay).

    Raises:
      ConfigError: a group has no patterns.
    """
    for name, group in groups.items():
        if not group.get("params"):
            raise ConfigError(f"optimizer.groups.{name}.params is empty; list module-path patterns")

    def label(path, _):
        where = param_path(path)
        if str(getattr(path[0], "key", path[0])) == "model" and merge.matches(where, frozen):
            return "frozen"
        return next((name for name, group in groups.items() if merge.matches(where, group.params)), "frozen")

    return lambda params: jax.tree_util.tree_map_with_path(label, params)


Schedules = Callable[[jnp.ndarray], jnp.ndarray] | dict[str, Callable[[jnp.ndarray], jnp.ndarray]]


def build(config: ml_collections.ConfigDict, steps_per_epoch: int, frozen: Sequence[str] = ()
          ) -> tuple[optax.GradientTransformation, Schedules]:
    """The optimizer of a recipe (`config.optimizer`, `config.schedule`) and its learning-rate schedule(s).

    With `config.optimizer.groups` ({name: {params: module-path patterns, lr_factor}}, torch's parameter
    groups), each group gets the optimizer at `lr * lr_factor` with the recipe's schedule; parameters in no
    group are not optimised (FAER's final `norm`), and the schedules come back as {group name: schedule}.

    Args:
      config: the recipe.
      steps_per_epoch: optimizer steps per epoch (schedules step per epoch, as upstream's).
      frozen: module-path patterns of model parameters upstream never updates (`ModelSpec.frozen`).

    Raises:
      ConfigError: unknown optimizer name, or a group without patterns.
    """
    opt = config.optimizer
    rho = opt.get("sam_rho", 0.0)
    if not isinstance(rho, int | float) or not math.isfinite(rho) or rho < 0:
        raise ConfigError(f"optimizer.sam_rho={rho!r}: use 0 (no SAM) or a positive number (MFTN-FER: 0.05)")
    groups = opt.get("groups") or {}
    if not groups:
        schedule = epoch_schedule(config.schedule, opt.lr, steps_per_epoch)
        return _with_sam(freeze(_base_optimizer(opt, schedule), frozen), opt), schedule
    schedules = {name: epoch_schedule(config.schedule, opt.lr * group.get("lr_factor", 1.0), steps_per_epoch)
                 for name, group in groups.items()}
    transforms = {name: _base_optimizer(opt, schedules[name]) for name in groups}
    if "frozen" in transforms:
        raise ConfigError("optimizer.groups may not be named 'frozen' (the name of the parameters no group holds)")
    transforms["frozen"] = optax.set_to_zero()
    return _with_sam(optax.multi_transform(transforms, group_labels(groups, frozen)), opt), schedules


def _with_sam(tx: optax.GradientTransformation, opt: ml_collections.ConfigDict) -> optax.GradientTransformation:
    """`tx` inside SAM when `optimizer.sam_rho` > 0 (with `optimizer.sam_adaptive`)."""
    rho = opt.get("sam_rho", 0.0)
    return sam(tx, rho, bool(opt.get("sam_adaptive", False))) if rho > 0 else tx
