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

from fer_jax import faces, models, pretrained, tasks, xla
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


def predict(model_dir: str, images: list[str], *, order: str | None = None, top: int = 3, batch_size: int = 16
            ) -> list[list[tuple[str, float]]]:
    """Top-`top` (class, probability) per image; multi-label models give every attribute with p > 0.5.

    Every path and the label order are checked before any work; images are then decoded and run
    `batch_size` at a time (the last batch padded, so that one compiled program serves all), so memory does
    not grow with their number.

    Raises:
      UserError: unreadable model or image, bad label order, `top` or `batch_size` below 1.
    """
    if top < 1:
        raise ConfigError(f"--top {top}: show at least one class per image")
    if batch_size < 1:
        raise ConfigError(f"batch_size {batch_size} must be positive")
    for path in images:
        _check(path)
    meta, module, variables = pretrained.load_with_metadata(model_dir)
    spec = models.spec(meta["arch"])
    trained = meta.get("trained", {})
    pp = trained.get("eval_pp") or "resize({0},{1})|to_float|normalize('imagenet')".format(*spec.image_size)
    chain = transforms.parse(pp)
    outputs = spec.num_classes(meta["hparams"])
    names = class_names(meta, outputs, order) if outputs is not None else None  # checked before any work
    step = xla.jit(functools.partial(_logits, module, spec), "eval")
    results, size = [], max(1, min(batch_size, len(images)))
    for i in range(0, len(images), size):
        chunk = images[i:i + size]
        batch = np.stack([chain(_open(p), np.random.default_rng(0)) for p in chunk]).astype(np.float32)
        padded = np.concatenate([batch, np.zeros((size - len(chunk), *batch.shape[1:]), batch.dtype)])
        logits = np.asarray(step(variables, padded), np.float64)[:len(chunk)]
        names = names or class_names(meta, logits.shape[-1], order)
        results.extend(_ranked(logits, names, trained.get("task") == "multilabel", top))
    return results


def _ranked(logits: np.ndarray, names: list[str], multilabel: bool, top: int) -> list[list[tuple[str, float]]]:
    if multilabel:
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


def _check(path: str) -> None:
    """The file exists and its header is that of an image (nothing decoded yet)."""
    if not os.path.isfile(path):
        raise DatasetError(f"image not found: {path}")
    try:
        with Image.open(path):
            pass
    except (UnidentifiedImageError, OSError) as e:
        raise DatasetError(f"{path} is not a readable image ({e})") from None


def _open(path: str) -> Image.Image:
    """The image as 8-bit RGB; 16-bit grayscale is scaled to 8 bits (PIL's convert would clip it to white)."""
    try:
        with Image.open(path) as im:
            if im.mode.startswith("I;16") or im.mode == "I":
                return Image.fromarray(faces.levels16_to_uint8(np.asarray(im))).convert("RGB")
            return im.convert("RGB")
    except (UnidentifiedImageError, OSError) as e:
        raise DatasetError(f"{path} is not a readable image ({e})") from None
