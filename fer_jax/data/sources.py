"""Random-access dataset sources over the official on-disk layouts, and the reader registry.

A source follows grain's `RandomAccessDataSource` protocol (`__len__`, `__getitem__(int)`, a deterministic
`__repr__`): `source[i]` is a record that costs no I/O to build, e.g. for an image dataset

    {"index": int, "path": str, "label": int | int32[40], "box": int32[4] (left, top, right, bottom), if any}

Examples. What the pipelines batch is `source.example(i)`, a dict of named entries (no I/O either):

- the entries named in `source.image_entries` hold image references (a record with at least "path"),
  one per entry (-> float32 [H, W, C] after preprocessing) or a list of them (-> [T, H, W, C]);
  `source.decode(ref)` reads and decodes one to an RGB `PIL.Image`;
- every other entry is an array-like (label, video id, ...) and is batched as it is.

| source | example | batch (training) |
|---|---|---|
| `ImageSource` | {"image": ref, "label"} | {"image": [b, H, W, C], "label": [b] or [b, 40]} |
| video, unit "frame" | {"image": ref, "label", "video"} | {"image", "label", "video"} |
| video, unit "group" | {"frames": [ref] * T, "label", "video"} | {"frames": [b, T, H, W, C], "label", "video"} |

`source.shared_draws` says whether the images of one example get the same random augmentation draws
(True: e.g. an input and its clean target, which must be cropped alike) or each their own (False:
Emotion-FAN flips each frame of a group independently); see `fer_jax.data.pipeline`. `source.mask_fill`
names entries that evaluation overwrites on rows whose mask is False (video sources: {"video": -1}).

A missing or corrupt file raises `UnreadableImage`, which the pipelines turn into a counted, reported
substitution instead of a crash mid-epoch.

Every source has `labels` (int32 [N], or int32 [N, 40] for CelebA: one per example), `num_classes`,
`class_names` (canonical names, `fer_jax.data.labels`) and `task` ("multiclass" | "multilabel").
Layout problems found while indexing (missing root or list file, malformed line, label out of range, empty
split) raise a one-line `DatasetError` that names the file, the line and the expected layout.

Readers are functions `reader(root, split, **options) -> Source` that register themselves with
`@register("<name>")` in their own module; `fer_jax.data.datasets.create_source` opens them by name.
"""

from __future__ import annotations

import io
import os
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import numpy as np
from PIL import Image

from fer_jax.data import labels as label_tables
from fer_jax.errors import ConfigError, DatasetError

MULTICLASS = "multiclass"
MULTILABEL = "multilabel"
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".ppm", ".bmp", ".pgm", ".tif", ".tiff", ".webp")

READERS: dict[str, Callable[..., "Source"]] = {}


def register(name: str):
    """Registers a reader `fn(root, split, **options) -> Source` under the dataset name `name`."""
    def wrap(fn):
        if name in READERS:
            raise ValueError(f"dataset {name!r} is registered twice")
        READERS[name] = fn
        return fn
    return wrap


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


class Source:
    """What every source shares: labels and classes, the example protocol, a deterministic repr.

    Subclasses implement `__len__`, `__getitem__` and `example`.
    """

    image_entries: tuple[str, ...] = ("image",)
    shared_draws = True
    mask_fill: dict[str, Any] = {}

    def __init__(self, *, dataset: str, root: str, split: str, labels: np.ndarray, class_names: Sequence[str],
                 task: str, layout: str = "", options: str = ""):
        self.dataset = dataset
        self.root = root
        self.split = split
        self.layout = layout
        self.labels = np.asarray(labels, dtype=np.int32)
        self.class_names = tuple(class_names)
        self.task = task
        self._options = options
        self._order = None
        if len(self) == 0:
            raise DatasetError(f"{dataset}: the {split!r} split of {root} is empty; expected {layout}")

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    def __len__(self) -> int:
        raise NotImplementedError

    def __getitem__(self, index: int) -> dict[str, Any]:
        raise NotImplementedError

    def example(self, index: int) -> dict[str, Any]:
        """Example `index`: image references under `image_entries`, array-likes elsewhere (no I/O)."""
        raise NotImplementedError

    def __iter__(self) -> Iterator[dict[str, Any]]:
        return (self[i] for i in range(len(self)))

    def decode(self, ref: dict[str, Any]) -> Image.Image:
        """Reads and decodes one image reference (RGB, face box cropped). Raises `UnreadableImage`."""
        return decode_image(ref["path"], ref.get("box"))

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
        self._renumber(perm)
        self.class_names = tuple(names)
        self._order = self.class_names

    def _renumber(self, perm: np.ndarray) -> None:
        """Applies `perm[old_class] = new_class` to every label the source holds."""
        if self.task == MULTICLASS:
            self.labels = perm[self.labels].astype(np.int32)
        else:
            self.labels = self.labels[:, np.argsort(perm)]


class ImageSource(Source):
    """A list of image files with labels (and optional face boxes), in a fixed, documented order."""

    def __init__(self, *, dataset: str, root: str, split: str, paths: Sequence[str], labels: np.ndarray,
                 class_names: Sequence[str], task: str, boxes: np.ndarray | None = None,
                 layout: str = "", options: str = ""):
        self.paths = list(paths)
        self.boxes = None if boxes is None else np.asarray(boxes, dtype=np.int32)
        super().__init__(dataset=dataset, root=root, split=split, labels=labels, class_names=class_names,
                         task=task, layout=layout, options=options)

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, index: int) -> dict[str, Any]:
        index = int(index)
        item = {"index": index, "path": self.paths[index], "label": self.labels[index]}
        if self.boxes is not None:
            item["box"] = self.boxes[index]
        return item

    def example(self, index: int) -> dict[str, Any]:
        item = self[index]
        return {"image": item, "label": item["label"]}


def class_counts(source: Source) -> np.ndarray:
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
