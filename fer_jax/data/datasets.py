"""`create_source`: opens any registered dataset by name.

This module imports every reader module, so that each registers itself (`sources.register`) before a
name is looked up; the readers themselves import only `sources`, so there is no import cycle. A new
reader module is added to the import line below.
"""

from __future__ import annotations

import inspect
import os
from collections.abc import Sequence
from typing import Any

from fer_jax.data import celeba, expression_sources, feratt_sources, video_sources  # noqa: F401 (self-registering)
from fer_jax.data.sources import READERS, Source
from fer_jax.errors import ConfigError


def create_source(name: str, root: str, split: str, *, class_order: str | Sequence[str] | None = None,
                  **options: Any) -> Source:
    """Opens a dataset in its official on-disk layout.

    Args:
        name: a registered dataset: "rafdb", "affectnet", "celeba", "expw" (images), "afew", "ckplus"
            (Emotion-FAN's videos), "ck", "bu3dfe", "ckplus_release" (FERAtt's faces with landmarks) and
            their "*_synthetic" composites.
        root: the dataset's root directory (stored absolute, so a later chdir does not matter).
        split: "train", or the held-out split: "test" / "val" (datasets with one held-out split accept
            both names; CelebA has distinct "val" and "test").
        class_order: optional renumbering of the classes (see `Source.reorder_classes`).
        **options: dataset-specific, see the reader functions (`expression_sources.rafdb`, `affectnet`,
            `expw`, `celeba.celeba`, `video_sources.afew`, `ckplus`), e.g. AffectNet `num_class=7|8`,
            `layout="folders"|"csv"`; AFEW / CK+ `unit="group"|"frame"`, `fold`; FERAtt's `kfold`, `nactor`,
            `crop`, `backgrounds`, `count` (`feratt_sources`).

    Returns:
        The source; its `labels` already follow `class_order`.

    Raises:
        DatasetError: the data on disk does not have the expected layout.
        ConfigError: unknown dataset name, split or option.
    """
    if name not in READERS:
        raise ConfigError(f"unknown dataset {name!r}; expected one of {sorted(READERS)}")
    reader = READERS[name]
    try:
        inspect.signature(reader).bind(root, split, **options)
    except TypeError as e:
        raise ConfigError(f"{name}: bad options {sorted(options)} ({e})") from None
    source = reader(os.path.abspath(os.fspath(root)), split, **options)
    if class_order is not None:
        source.reorder_classes(class_order)
    return source
