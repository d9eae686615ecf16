"""Flax Linen modules for the fer-jax networks, and a registry to build them by name."""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Callable
from typing import Any

from flax import linen as nn

from fer_jax.models import dan
from fer_jax.models.dan import DAN
from fer_jax.models.resnet import STAGE_SIZES, ResNet


@dataclasses.dataclass(frozen=True)
class InitRule:
    """How a pretrained model of another architecture initialises this one (see `fer_jax.merge`).

    Attributes:
      renames: module-path prefix renames from the source's names to ours.
      drop: source module paths (after renaming) not used, e.g. the source classifier.
      init: our module paths that keep their initialisation (the new parts).
    """

    renames: tuple[tuple[str, str], ...] = ()
    drop: tuple[str, ...] = ()
    init: tuple[str, ...] = ()


@dataclasses.dataclass(frozen=True)
class ModelSpec:
    """How to build a registered network and what input it expects.

    Attributes:
      build: constructor taking the architecture's hyperparameters as keywords.
      image_size: (height, width) of the upstream input.
      defaults: default hyperparameters (the upstream constructor defaults).
      init_from: source architecture -> how its pretrained weights initialise this network.
    """

    build: Callable[..., nn.Module]
    image_size: tuple[int, int]
    defaults: dict[str, Any]
    init_from: dict[str, InitRule] = dataclasses.field(default_factory=dict)


REGISTRY: dict[str, ModelSpec] = {
    "resnet18": ModelSpec(functools.partial(ResNet, STAGE_SIZES["resnet18"]), (224, 224),
                          {"num_classes": 1000}),
    "resnet34": ModelSpec(functools.partial(ResNet, STAGE_SIZES["resnet34"]), (224, 224),
                          {"num_classes": 1000}),
    "dan": ModelSpec(DAN, (224, 224), {"num_class": 7, "num_head": 4},
                     init_from={"resnet18": InitRule(dan.BACKBONE_RENAMES, drop=("fc",),
                                                     init=("cat_head*", "fc", "bn"))}),
}


def create(name: str, **kwargs: Any) -> nn.Module:
    """Builds the network registered as `name` with the given hyperparameters.

    Raises:
      KeyError: `name` is not registered (the message lists the known names).
    """
    if name not in REGISTRY:
        raise KeyError(f"unknown architecture {name!r}; known: {', '.join(sorted(REGISTRY))}")
    spec = REGISTRY[name]
    return spec.build(**{**spec.defaults, **kwargs})


__all__ = ["DAN", "REGISTRY", "InitRule", "ModelSpec", "ResNet", "create"]
