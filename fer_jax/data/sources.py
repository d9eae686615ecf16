"""Random-access dataset sources over the official on-disk layouts, and the `create_source` factory.

A source follows grain's `RandomAccessDataSource` protocol (`__len__`, `__getitem__(int)`, a deterministic
`__repr__`). An item is a dict that costs no I/O to build:

    {"index": int, "path": str, "label": int | int32[40], "box": int32[4] (left, top, right, bottom), if any}

`source.decode(item)` reads the file, decodes it to an RGB `PIL.Image` and crops the box. A missing or
corrupt file raises `UnreadableImage`, which the pipelines turn into a counted, reported substitution
(see `fer_jax.data.pipeline`) instead of a crash mid-epoch.

Every source has `labels` (int32 [N], or int32 [N, 40] for CelebA), `num_classes`, `class_names`
(canonical names, `fer_jax.data.labels`) and `task` ("multiclass" | "multilabel").
Layout problems found while indexing (missing root or list file, malformed line, label out of range, empty
split) raise a one-line `DatasetError` that names the file, the line and the expected layout.
"""

from __future__ import annotations

import inspect
import io
import os
from collections.abc import Iterator, Sequence
from typing import Any

import numpy as np
from PIL import Image

from fer_jax.data import labels as label_tables
from fer_jax.errors import ConfigError, DatasetError

MULTICLASS = "multiclass"
MULTILABEL = "multilabel"
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".ppm", ".bmp", ".pgm", ".tif", ".tiff", ".webp")


class UnreadableImage(Exception):
    """A listed image file is missing or cannot be decoded (handled by the pipelines, not fatal)."""

    def __init__(self, path: str, reason: str):
        super().__init__(f"{path}: {reason}")
        self.path = path
        self.reason = reason


def decode_image(data: bytes | str, box: np.ndarray | None = None, name: str | None = None) -> Image.Image:
    """Decodes an encoded image (bytes, or a path to read) to RGB and crops `box` if given.

    The box (left, top, right, bottom) is clipped to the image, as a face detector's box may reach past
    the border.

    Raises:
        UnreadableImage: the file is missing, cannot be decoded, or the clipped box is empty.
    """
    name = name or (data if isinstance(data, str) else "<bytes>")
    try:
        if isinstance(data, str):
            with open(data, "rb") as f:
                data = f.read()
        with Image.open(io.BytesIO(data)) as img:
            img = img.convert("RGB")  # forces the full decode, so truncated files fail here
    except (OSError, ValueError, SyntaxError, Image.DecompressionBombError) as e:
        raise UnreadableImage(name, f"{type(e).__name__}: {e}") from None
    if box is not None:
        left, top = max(int(box[0]), 0), max(int(box[1]), 0)
        right, bottom = min(int(box[2]), img.width), min(int(box[3]), img.height)
        if right <= left or bottom <= top:
            raise UnreadableImage(name, f"face box {tuple(int(b) for b in box)} lies outside the "
                                        f"{img.width}x{img.height} image")
        img = img.crop((left, top, right, bottom))
    return img


class ImageSource:
    """A list of image files with labels (and optional face boxes), in a fixed, documented order."""

    def __init__(self, *, dataset: str, root: str, split: str, paths: Sequence[str], labels: np.ndarray,
                 class_names: Sequence[str], task: str, boxes: np.ndarray | None = None,
                 layout: str = "", options: str = ""):
        if len(paths) == 0:
            raise DatasetError(f"{dataset}: the {split!r} split of {root} is empty; expected {layout}")
        self.dataset = dataset
        self.root = root
        self.split = split
        self.layout = layout
        self.paths = list(paths)
        self.labels = np.asarray(labels, dtype=np.int32)
        self.class_names = tuple(class_names)
        self.task = task
        self.boxes = None if boxes is None else np.asarray(boxes, dtype=np.int32)
        self._options = options
        self._order = None

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, index: int) -> dict[str, Any]:
        index = int(index)
        item = {"index": index, "path": self.paths[index], "label": self.labels[index]}
        if self.boxes is not None:
            item["box"] = self.boxes[index]
        return item

    def __iter__(self) -> Iterator[dict[str, Any]]:
        return (self[i] for i in range(len(self)))

    def decode(self, item: dict[str, Any]) -> Image.Image:
        """Reads and decodes the item's image (RGB, face box cropped). Raises `UnreadableImage`."""
        return decode_image(item["path"], item.get("box"))

    def __repr__(self) -> str:
        parts = [f"dataset={self.dataset!r}", f"root={self.root!r}", f"split={self.split!r}", f"n={len(self)}"]
        if self._options:
            parts.append(self._options)
        if self._order is not None:
            parts.append(f"class_order={list(self._order)!r}")
        return f"{type(self).__name__}({', '.join(parts)})"

    def reorder_classes(self, order: str | Sequence[str]) -> None:
        """Renumbers the classes (multi-class) or the label columns (multi-label) into `order`.

        Args:
            order: class names (aliases allowed) or a key of `labels.ORDERS` / `labels.SORTED_ORDERS`,
                e.g. "mftn" for MFTN-FER's alphabetical ImageFolder order.
        """
        perm = label_tables.remap_permutation(self.class_names, order)
        names = [""] * len(perm)
        for old, new in enumerate(perm):
            names[new] = self.class_names[old]
        if self.task == MULTICLASS:
            self.labels = perm[self.labels].astype(np.int32)
        else:
            self.labels = self.labels[:, np.argsort(perm)]
        self.class_names = tuple(names)
        self._order = self.class_names


def class_counts(source: ImageSource) -> np.ndarray:
    """Number of examples per class (multi-class) or of positives per attribute (multi-label)."""
    if source.task == MULTICLASS:
        return np.bincount(source.labels, minlength=source.num_classes)
    return source.labels.sum(axis=0)


# ---------------------------------------------------------------------------------------------------------
# Parsing helpers shared by the readers.

def require_dir(path: str, dataset: str, layout: str) -> str:
    if not os.path.isdir(path):
        raise DatasetError(f"{dataset}: directory {path} not found; expected {layout}")
    return path


def read_lines(path: str, dataset: str, layout: str) -> Iterator[tuple[int, str]]:
    """Yields (1-based line number, stripped line) for the non-blank lines of a list file."""
    if not os.path.isfile(path):
        raise DatasetError(f"{dataset}: list file {path} not found; expected {layout}")
    try:
        with open(path, encoding="utf-8") as f:
            lines = f.read().splitlines()
    except (OSError, UnicodeDecodeError) as e:
        raise DatasetError(f"{dataset}: cannot read {path} ({e}); expected {layout}") from None
    for lineno, line in enumerate(lines, start=1):
        line = line.strip()
        if line:
            yield lineno, line


def malformed(dataset: str, path: str, lineno: int, line: str, what: str, layout: str) -> DatasetError:
    shown = line if len(line) <= 80 else line[:77] + "..."
    return DatasetError(f"{dataset}: {path}:{lineno}: {what}, got {shown!r}; expected {layout}")


def parse_int(token: str, dataset: str, path: str, lineno: int, line: str, layout: str) -> int:
    try:
        return int(token)
    except ValueError:
        raise malformed(dataset, path, lineno, line, f"{token!r} is not an integer", layout) from None


def check_split(dataset: str, split: str, splits: dict[str, str]) -> str:
    """Maps a requested split name (aliases allowed) to the dataset's own name for it."""
    try:
        return splits[split]
    except KeyError:
        raise ConfigError(f"{dataset}: unknown split {split!r}; expected one of {sorted(splits)}") from None


# ---------------------------------------------------------------------------------------------------------

def create_source(name: str, root: str, split: str, *, class_order: str | Sequence[str] | None = None,
                  **options: Any) -> ImageSource:
    """Opens a dataset in its official on-disk layout.

    Args:
        name: "rafdb", "affectnet", "celeba" or "expw".
        root: the dataset's root directory (stored absolute, so a later chdir does not matter).
        split: "train", or the held-out split: "test" / "val" (RAF-DB, AffectNet and ExpW have one
            held-out split and accept both names; CelebA has distinct "val" and "test").
        class_order: optional renumbering of the classes (see `ImageSource.reorder_classes`).
        **options: dataset-specific, see `rafdb`, `affectnet`, `celeba`, `expw`
            (e.g. AffectNet `num_class=7|8`, `layout="folders"|"csv"`).

    Returns:
        The source; its `labels` already follow `class_order`.

    Raises:
        DatasetError: the data on disk does not have the expected layout.
        ConfigError: unknown dataset name, split or option.
    """
    from fer_jax.data import celeba, expression_sources  # the readers import this module

    readers = {
        "rafdb": expression_sources.rafdb,
        "affectnet": expression_sources.affectnet,
        "expw": expression_sources.expw,
        "celeba": celeba.celeba,
    }
    if name not in readers:
        raise ConfigError(f"unknown dataset {name!r}; expected one of {sorted(readers)}")
    reader = readers[name]
    try:
        inspect.signature(reader).bind(root, split, **options)
    except TypeError as e:
        raise ConfigError(f"{name}: bad options {sorted(options)} ({e})") from None
    source = reader(os.path.abspath(os.fspath(root)), split, **options)
    if class_order is not None:
        source.reorder_classes(class_order)
    return source
