"""Flax Linen modules for the fer-jax networks, and a registry of their contracts (`ModelSpec`)."""

from __future__ import annotations

import functools
from typing import Any

from flax import linen as nn

from fer_jax.models import convnext, dan, emotion_fan, feratt, mftn
from fer_jax.models.contract import FacePreprocess, InitRule, ModelSpec, VideoMethods, View, frames_example, output, sum_of
from fer_jax.models.convnext import ConvNeXt
from fer_jax.models.dan import DAN
from fer_jax.models.emotion_fan import EmotionFAN
from fer_jax.models.faer import FAER
from fer_jax.models.feratt import FERAttention, FERAttentionGMM
from fer_jax.models.mftn import MFTN
from fer_jax.models.preact_resnet import PreActResNet18
from fer_jax.models.resnet import STAGE_SIZES, ResNet


def _resnet(stages: str) -> ModelSpec:
    return ModelSpec(functools.partial(ResNet, STAGE_SIZES[stages]), (224, 224), {"num_classes": 1000},
                     outputs=("logits",), num_classes_key="num_classes", cam_layer="layer4")


REGISTRY: dict[str, ModelSpec] = {
    "resnet18": _resnet("resnet18"),
    "resnet34": _resnet("resnet34"),
    "dan": ModelSpec(DAN, (224, 224), {"num_class": 7, "num_head": 4}, outputs=("out", "feat", "heads"),
                     num_classes_key="num_class", cam_layer="features.7",  # layer4 in the Sequential's numbering
                     views=lambda hp: tuple(View(f"head {i + 1}", f"sown:cat_head{i}.sa.attention")
                                            for i in range(hp.get("num_head", 4))),
                     face=FacePreprocess(margin=0.0),  # yaoing/DAN:demo.py classifies the cascade's box as is
                     init_from={"resnet18": InitRule(dan.BACKBONE_RENAMES, drop=("fc",),
                                                     init=("cat_head*", "fc", "bn"))}),
    # Trained on groups of 3 frames (`__call__`), evaluated per video (`video`); both heads always exist.
    "emotion_fan": ModelSpec(
        EmotionFAN, (224, 224), {"num_class": 7, "at_type": "relation"}, outputs=("logits",),
        inputs=("frames",), example=frames_example(3), init_method="initialize", rng_streams=("dropout",),
        num_classes_key="num_class", cam_layer="layer4",
        video=VideoMethods(frame="frame_features", aggregate="video_logits", weight=1),  # alpha
        # Resize(224) -> ToTensor, not normalised; faces aligned by dlib's get_face_chip(size=224, padding=0.25)
        face=FacePreprocess("resize({h},{w})|to_float", align=0.25),
        frozen=lambda hp: emotion_fan.UNUSED_HEADS[hp.get("at_type", "relation")],
        # The FER+ / MS-Celeb ResNet18 files: same backbone names at the root, their classifier dropped.
        init_from={"resnet18": InitRule(drop=("fc",), init=("alpha", "beta", "pred_fc1", "pred_fc2"))}),
    # ConvNeXt in the facebookresearch layout; FAER's baseline (it returns (feature, logits) like FAER).
    "convnext": ModelSpec(
        ConvNeXt, (224, 224), {"variant": "base", "num_classes": 1000, "drop_path_rate": 0.0},
        outputs=("feature", "logits"), predict=output("logits"), rng_streams=("drop_path",),
        num_classes_key="num_classes", cam_layer="stages.3"),
    "faer": ModelSpec(
        FAER, (224, 224), {"variant": "base", "num_classes": 40, "drop_path_rate": 0.25},
        outputs=("feature", "logits"), predict=output("logits"), rng_streams=("drop_path",),
        num_classes_key="num_classes", cam_layer="attention",  # the CC-attention output
        # an ImageNet / MS-Celeb ConvNeXt (timm or facebookresearch file, converted): its classifier dropped,
        # CC attention and the head new; its final norm is loaded (upstream maps timm's head.norm onto it)
        init_from={"convnext": InitRule(drop=("head",), init=("attention", "head"))}),
    # MFTN-FER: (out1, out2) predicted by their sum; `initialize` also creates mstn.branch, which the forward
    # never calls (no gradient upstream, so its optimizer never touches it).
    "mftn": ModelSpec(
        MFTN, (224, 224), {"num_classes": 7, "drop_path_rate": 0.25, "variant": "base"}, outputs=("out1", "out2"),
        predict=sum_of(("out1", "out2")), init_method="initialize", rng_streams=("drop_path",),
        num_classes_key="num_classes", cam_layer="backbone.stages.3", frozen=lambda hp: mftn.UNUSED,
        # an ImageNet / MS-Celeb ConvNeXt (converted timm or facebookresearch file): the backbone without its
        # classifier; the MsTN and the head new
        init_from={"convnext": InitRule(renames=tuple((m, f"backbone.{m}") for m in convnext.TOP_MODULES),
                                        drop=("backbone.head",), init=("backbone.head", "mstn"))}),
    # FERAtt (+Cls) and (+Rep+Cls) at 64 px; the encoder's fc exists upstream but is never used (no gradient).
    # Upstream always starts the encoder from torchvision's ImageNet ResNet34 (fc included), the rest new.
    "feratt": ModelSpec(
        FERAttention, (64, 64), {"num_classes": 8, "num_filters": 32}, outputs=("y", "att", "g_att", "g_ft"),
        num_classes_key="num_classes", cam_layer="netclass.layer4", frozen=lambda hp: feratt.UNUSED,
        init_from={"resnet34": feratt.ENCODER_INIT}, face=feratt.FACE, views=lambda hp: feratt.VIEWS),
    "feratt_rep": ModelSpec(
        FERAttentionGMM, (64, 64), {"num_classes": 8, "num_filters": 32, "dim": 32},
        outputs=("z", "y", "att", "g_att", "g_ft"), predict=output("y"), num_classes_key="num_classes",
        cam_layer="netclass.layer4", frozen=lambda hp: feratt.UNUSED, init_from={"resnet34": feratt.ENCODER_INIT},
        face=feratt.FACE, views=lambda hp: feratt.VIEWS),
    # FERAtt's classification baseline (32 px inputs).
    "preactresnet18": ModelSpec(PreActResNet18, (32, 32), {"num_classes": 8}, outputs=("logits",),
                                num_classes_key="num_classes", cam_layer="layer4",
                                face=FacePreprocess(f"cv_resize({{h}},{{w}})|gray|to_float|{feratt.CIFAR10_NORMALIZE}")),
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


__all__ = ["DAN", "FAER", "ConvNeXt", "EmotionFAN", "FacePreprocess", "FERAttention", "FERAttentionGMM", "PreActResNet18", "REGISTRY",
           "InitRule", "MFTN", "ModelSpec", "ResNet", "VideoMethods", "View", "create", "frames_example", "output", "spec", "sum_of"]
