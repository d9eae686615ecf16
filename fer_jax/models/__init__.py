"""Flax Linen modules for the fer-jax networks, and a registry of their contracts (`ModelSpec`)."""

from __future__ import annotations

import functools
from typing import Any

from flax import linen as nn

from fer_jax.models import dan
from fer_jax.models.contract import InitRule, ModelSpec, VideoMethods, frames_example, output, sum_of
from fer_jax.models.dan import DAN
from fer_jax.models.resnet import STAGE_SIZES, ResNet


def _resnet(stages: str) -> ModelSpec:
    return ModelSpec(functools.partial(ResNet, STAGE_SIZES[stages]), (224, 224), {"num_classes": 1000},
                     outputs=("logits",), num_classes_key="num_classes", cam_layer="feature_map")


REGISTRY: dict[str, ModelSpec] = {
    "resnet18": _resnet("resnet18"),
    "resnet34": _resnet("resnet34"),
    "dan": ModelSpec(DAN, (224, 224), {"num_class": 7, "num_head": 4}, outputs=("out", "feat", "heads"),
                     num_classes_key="num_class", cam_layer="features.feature_map",
                     init_from={"resnet18": InitRule(dan.BACKBONE_RENAMES, drop=("fc",),
                                                     init=("cat_head*", "fc", "bn"))}),
}


def spec(name: str) -> ModelSpec:
    """The contract of the network registered as `name`.

    Raises:
      KeyError: `name` is not registered (the message lists the known names).
    """
    if name not in REGISTRY:
        raise KeyError(f"unknown architecture {name!r}; known: {', '.join(sorted(REGISTRY))}")
    return REGISTRY[name]


def create(name: str, **kwargs: Any) -> nn.Module:
    """Builds the network registered as `name` with the given hyperparameters.

    Raises:
      KeyError: `name` is not registered (the message lists the known names).
    """
    s = spec(name)
    return s.build(**{**s.defaults, **kwargs})


__all__ = ["DAN", "REGISTRY", "InitRule", "ModelSpec", "ResNet", "VideoMethods", "create", "frames_example",
           "output", "spec", "sum_of"]
