"""Predict the expression (or attributes) of face images with a model directory, as upstream's demo does
(yaoing/DAN:demo.py: Resize, ToTensor, ImageNet Normalize, softmax over the logits). Faces are expected
already cropped; there is no face detector here."""

from __future__ import annotations

import functools
import os
from typing import Any

import jax.numpy as jnp
import numpy as np
from PIL import Image, UnidentifiedImageError

from fer_jax import models, pretrained, tasks, xla
from fer_jax.data import labels as labels_lib
from fer_jax.data import transforms
from fer_jax.errors import ConfigError, DatasetError


def class_names(meta: dict[str, Any], num_outputs: int, order: str | None) -> list[str]:
    """Names of the model's outputs: `--labels ORDER`, else those recorded at training, else indices."""
    if order:
        if order not in labels_lib.ORDERS:
            raise ConfigError(f"--labels {order!r}: use one of {', '.join(labels_lib.ORDERS)}")
        names = list(labels_lib.ORDERS[order])
    else:
        names = meta.get("trained", {}).get("class_names") or [str(i) for i in range(num_outputs)]
    if len(names) != num_outputs:
        raise ConfigError(f"the model has {num_outputs} outputs but --labels {order} names {len(names)} classes")
    return names


def predict(model_dir: str, images: list[str], *, order: str | None = None, top: int = 3
            ) -> list[list[tuple[str, float]]]:
    """Top-`top` (class, probability) per image; multi-label models give every attribute with p > 0.5.

    Raises:
      UserError: unreadable model or image, bad label order.
    """
    meta, module, variables = pretrained.load_with_metadata(model_dir)
    spec = models.spec(meta["arch"])
    trained = meta.get("trained", {})
    pp = trained.get("eval_pp") or "resize({0},{1})|to_float|normalize('imagenet')".format(*spec.image_size)
    chain = transforms.parse(pp)
    batch = np.stack([chain(_open(p), np.random.default_rng(0)) for p in images]).astype(np.float32)
    logits = np.asarray(xla.jit(functools.partial(_logits, module, spec), "eval")(variables, batch), np.float64)
    names = class_names(meta, logits.shape[-1], order)
    if trained.get("task") == "multilabel":
        probs = 1 / (1 + np.exp(-logits))
        return [[(n, float(p)) for n, p in sorted(zip(names, row), key=lambda t: -t[1]) if p > 0.5] for row in probs]
    probs = np.exp(logits - logits.max(-1, keepdims=True))
    probs /= probs.sum(-1, keepdims=True)
    return [[(names[i], float(row[i])) for i in np.argsort(-row)[:top]] for row in probs]


def _logits(module, spec: models.ModelSpec, variables, images):
    """The declared prediction for each image; a video network sees each image as a one-frame video."""
    forward = tasks.Forward(module, spec, variables)
    if spec.video is None:
        return forward({"image": images})[1]
    values = forward.method(spec.video.frame, images)
    values = values if isinstance(values, tuple) else (values,)
    video = jnp.arange(images.shape[0], dtype=jnp.int32)
    return module.apply(variables, *values, video, images.shape[0], method=spec.video.aggregate)


def _open(path: str) -> Image.Image:
    if not os.path.isfile(path):
        raise DatasetError(f"image not found: {path}")
    try:
        with Image.open(path) as im:
            return im.convert("RGB")
    except (UnidentifiedImageError, OSError) as e:
        raise DatasetError(f"{path} is not a readable image ({e})") from None
