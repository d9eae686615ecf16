"""Shared defaults of every training recipe (configs/<network>_<dataset>.py) and their validation.

A recipe calls `base()` and overrides what its upstream script sets. The keys are network-agnostic:
`model` holds the registry name and constructor hyperparameters, `task` the loss, `data` the dataset
and its preprocessing strings (`fer_jax.data.transforms`), `optimizer` / `schedule` torch semantics.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import ml_collections

from fer_jax import models
from fer_jax.errors import ConfigError
from fer_jax.evaluate import metrics


def base() -> ml_collections.ConfigDict:
    """Defaults; values that every recipe must set are placeholders that `validate` rejects."""
    c = ml_collections.ConfigDict()
    c.model = ml_collections.ConfigDict({"name": ""})  # + constructor hyperparameters
    c.task = ml_collections.ConfigDict({"name": "classification"})  # + task options
    c.data = ml_collections.ConfigDict({
        "name": "",  # fer_jax.data.create_source name
        "root": "",
        "train_split": "train",
        "eval_split": "test",
        "options": ml_collections.ConfigDict(),  # dataset options of both splits, e.g. num_class, layout
        # options of one side only, over `options` (e.g. video frames: groups to train on, every frame to
        # evaluate; Emotion-FAN)
        "train_options": ml_collections.ConfigDict(),
        "eval_options": ml_collections.ConfigDict(),
        "class_order": "",  # optional class renumbering (see ImageSource.reorder_classes)
        "image_size": 224,
        "train_pp": "",
        "eval_pp": "",
        "sampler": "shuffle",  # or "balanced"
        "num_workers": 0,  # grain worker processes; 0 = read threads in the training process
        "read_threads": 2,
        "prefetch": 4,  # batches grain's read threads prepare ahead
        "device_prefetch": 2,  # batches placed on the devices ahead of the step (0: each when it is used)
    })
    c.optimizer = ml_collections.ConfigDict({
        "name": "sgd", "lr": 0.1, "momentum": 0.9, "nesterov": False, "weight_decay": 0.0,
        "betas": (0.9, 0.999), "eps": 1e-8,
        "sam_rho": 0.0, "sam_adaptive": False,  # SAM around the optimizer when sam_rho > 0 (MFTN-FER: 0.05)
    })
    c.schedule = ml_collections.ConfigDict({
        "name": "constant", "step_epochs": 10, "milestones": (), "gamma": 0.1, "epochs": 1, "min_lr": 0.0,
    })
    c.num_epochs = 1
    c.num_train_steps = -1  # > 0 caps the run (smoke tests); -1 = num_epochs full epochs
    c.batch_size = 256  # global, over all devices and processes
    c.eval_batch_size = -1  # -1 = batch_size
    c.seed = 0
    c.parallel = "jit"  # "jit" (Mesh + NamedSharding) or "pmap"
    c.compute_dtype = "float32"  # or "bfloat16" (parameters stay float32)
    c.init_from = ""  # a fer-jax model directory (porting/convert.py output) to start from
    c.init_drop = ()  # extra module-path patterns of init_from weights not to load (e.g. "fc" for a new head)
    c.resume_from = ""  # a workdir whose latest checkpoint to continue from (the own workdir comes first)
    c.log_every_steps = 50
    c.eval_every_epochs = 1
    c.checkpoint_every_steps = 500  # plus one at the end of every epoch
    c.keep_checkpoints = 2
    c.best_metric = "accuracy"  # eval metric that selects workdir/best, in its direction (metrics.DIRECTIONS)
    c.distributed = ml_collections.ConfigDict({
        "coordinator_address": "",  # "host:port" of process 0; empty = single process
        "num_processes": 1,
        "process_id": 0,
    })
    return c


CHOICES = {
    "parallel": ("jit", "pmap"),
    "compute_dtype": ("float32", "bfloat16"),
    "data.sampler": ("shuffle", "balanced"),
}


def validate(config: ml_collections.ConfigDict) -> None:
    """Checks values before anything is read or written (unknown keys are refused earlier, by the locked
    ConfigDict); what needs the data, the devices or the task is checked by `train_and_evaluate` next,
    still before any work.

    Raises:
      ConfigError: one line naming the key, the value and what is allowed.
    """
    if config.model.name not in models.REGISTRY:
        raise ConfigError(f"model.name {config.model.name!r} is not one of {', '.join(sorted(models.REGISTRY))}")
    check_hparams(config.model.name, {k: v for k, v in config.model.items() if k != "name"}, "model.")
    for key, allowed in CHOICES.items():
        value = config
        for part in key.split("."):
            value = value[part]
        if value not in allowed:
            raise ConfigError(f"{key}={value!r}: use one of {', '.join(allowed)}")
    for key in ("data.name", "data.root", "data.train_pp", "data.eval_pp"):
        section, name = key.split(".")
        if not config[section][name]:
            raise ConfigError(f"{key} is empty; set it in the recipe or with --config.{key}=...")
    positive = {"batch_size": config.batch_size, "num_epochs": config.num_epochs,
                "log_every_steps": config.log_every_steps, "keep_checkpoints": config.keep_checkpoints,
                "checkpoint_every_steps": config.checkpoint_every_steps,
                "eval_every_epochs": config.eval_every_epochs, "data.image_size": config.data.image_size}
    for key, value in positive.items():
        if not _is_int(value) or value < 1:
            raise ConfigError(f"{key}={value!r} must be a positive integer")
    for key, meaning in (("num_train_steps", "num_epochs full epochs"), ("eval_batch_size", "batch_size")):
        value = config[key]
        if not _is_int(value) or (value < 1 and value != -1):
            raise ConfigError(f"{key}={value!r}: use a positive integer, or -1 for {meaning}")
    if not _is_int(config.data.device_prefetch) or config.data.device_prefetch < 0:
        raise ConfigError(f"data.device_prefetch={config.data.device_prefetch!r} must be a non-negative integer")
    if not _is_int(config.seed) or not 0 <= config.seed < 2**32:
        raise ConfigError(f"seed={config.seed!r} must be an integer in [0, 2**32)")
    lr = config.optimizer.lr
    if not isinstance(lr, int | float) or not math.isfinite(lr) or lr <= 0:
        raise ConfigError(f"optimizer.lr={lr} must be a positive finite number")
    if isinstance(config.init_drop, str) or not all(isinstance(p, str) for p in config.init_drop):
        raise ConfigError(f"init_drop={config.init_drop!r} must be a tuple of module-path patterns, e.g. "
                          "\"('fc',)\"")
    metrics.check_best_metric(config.best_metric)
    validate_distributed(config.distributed)


def validate_distributed(cfg: ml_collections.ConfigDict) -> None:
    """`config.distributed`: a process count, this process's id among them, and process 0's address.

    Raises:
      ConfigError: a count below 1, an id outside [0, num_processes), or an address that is not HOST:PORT.
    """
    n, me = cfg.num_processes, cfg.process_id
    if not _is_int(n) or n < 1:
        raise ConfigError(f"distributed.num_processes={n!r} must be a positive integer")
    if not _is_int(me) or not 0 <= me < n:
        raise ConfigError(f"distributed.process_id={me!r} must be in [0, {n}) for distributed.num_processes={n}")
    if n > 1:
        host, _, port = cfg.coordinator_address.rpartition(":")
        if not host or not port.isdigit() or not 0 < int(port) < 65536:
            raise ConfigError(f"distributed.coordinator_address={cfg.coordinator_address!r}: use HOST:PORT of "
                              "process 0")


def check_hparams(arch: str, hparams: Mapping[str, Any], prefix: str) -> None:
    """Hyperparameters of a registered network: known names, values of the kind of their defaults, and a
    positive class count (the model contract's `num_classes_key`). Values the network cannot be built
    with otherwise are refused when it is initialised.

    Args:
      arch: registry name.
      hparams: the values given (the others keep their defaults).
      prefix: how the user spells a key, e.g. "model." or "--hparam ".

    Raises:
      ConfigError: an unknown name, a value of another kind, or a class count below 1.
    """
    spec = models.spec(arch)
    unknown = sorted(set(hparams) - set(spec.defaults))
    if unknown:
        raise ConfigError(f"{prefix}{unknown[0]} is not a hyperparameter of {arch} (it has: "
                          f"{', '.join(spec.defaults)})")
    for key, value in hparams.items():
        default = spec.defaults[key]
        if default is not None and not _same_kind(value, default):
            raise ConfigError(f"{prefix}{key}={value!r}: {arch} takes {_kind(default)} here (default {default!r})")
    classes = spec.num_classes(hparams)
    if classes is not None and classes < 1:
        raise ConfigError(f"{prefix}{spec.num_classes_key}={classes}: a model needs at least one class")


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _kind(default: Any) -> str:
    for kind, name in ((bool, "a boolean"), (int, "an integer"), (float, "a number"), (str, "a string"),
                       (tuple | list, "a tuple")):
        if isinstance(default, kind):
            return name
    return f"a {type(default).__name__}"


def _same_kind(value: Any, default: Any) -> bool:
    """Whether `value` may replace `default` (an int may stand for a float, a list for a tuple)."""
    if isinstance(default, bool):
        return isinstance(value, bool)
    if isinstance(default, int):
        return _is_int(value)
    if isinstance(default, float):
        return isinstance(value, int | float) and not isinstance(value, bool)
    if isinstance(default, tuple | list):
        return isinstance(value, tuple | list)
    return isinstance(value, type(default))


def apply_variant(c: ml_collections.ConfigDict, arg: str | None, variants: dict) -> ml_collections.ConfigDict:
    """Applies the recipe variant named by `arg` (`--config configs/x.py:quick`).

    Args:
      c: the full recipe.
      arg: None for the full recipe, else a key of `variants`.
      variants: name -> function editing the config in place.

    Raises:
      ConfigError: unknown variant.
    """
    if arg:
        if arg not in variants:
            raise ConfigError(f"unknown recipe variant {arg!r}; available: {', '.join(variants)}")
        variants[arg](c)
    return c


def smoke(c: ml_collections.ConfigDict, root: str, train_pp, eval_pp, size: int = 32) -> None:
    """The CI variant of any recipe: tiny images, a few steps, synthetic data at `root`.

    `train_pp` / `eval_pp` map an image size to the recipe's preprocessing strings.
    """
    c.data.root = root
    c.data.image_size = size
    c.data.train_pp, c.data.eval_pp = train_pp(size), eval_pp(size)
    c.batch_size = 8
    c.num_train_steps = 4
    c.log_every_steps = 2
    c.checkpoint_every_steps = 2
    c.init_from = ""


def sibling(recipe_file: str, name: str):
    """Imports the recipe module `name` next to `recipe_file` (configs/ is loaded by path, not a package)."""
    import importlib.util
    import os

    spec = importlib.util.spec_from_file_location(name, os.path.join(os.path.dirname(recipe_file), f"{name}.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module
