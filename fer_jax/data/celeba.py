"""CelebA readers: the official release files, FAER's pre-split layout, or a TFDS-prepared copy.

Labels are int32 [N, 40] in {0, 1}, columns in the official attribute order (`labels.CELEBA_ATTRIBUTES`).
"""

from __future__ import annotations

import os
from typing import Any

import numpy as np

from fer_jax.data import labels as label_tables
from fer_jax.data.sources import (MULTILABEL, ImageSource, check_split, decode_image, malformed, parse_int,
                                  read_lines, register, require_dir)
from fer_jax.errors import ConfigError, DatasetError

OFFICIAL_LAYOUT = ("<root>/img_align_celeba/<file>, <root>/list_attr_celeba.txt (line 1: count, line 2: the "
                   "40 attribute names, then '<file> <40 values of -1|1>') and <root>/list_eval_partition.txt "
                   "('<file> <0|1|2>' = train/val/test)")
PRESPLIT_LAYOUT = ("<root>/{train,test}/<file> and <root>/{train,test}_label.txt with lines "
                   "'<file> <40 integers>' (value > 0 means present; FAER's layout)")
TFDS_LAYOUT = "a tensorflow_datasets celeb_a directory prepared as array_record (holding dataset_info.json)"
_NUM = len(label_tables.CELEBA_ATTRIBUTES)


@register("celeba")
def celeba(root: str, split: str, *, layout: str = "auto") -> ImageSource:
    """CelebA, 40 binary attributes.

    Args:
        root: dataset root.
        split: "train", "val" or "test" (the pre-split layout has "train" and "test" only).
        layout: "official", "presplit", "tfds", or "auto" (official if `list_attr_celeba.txt` exists,
            else presplit if `train_label.txt` or `test_label.txt` exists).
    """
    require_dir(root, "CelebA", f"{OFFICIAL_LAYOUT}, or {PRESPLIT_LAYOUT}")
    if layout == "auto":
        if os.path.isfile(os.path.join(root, "list_attr_celeba.txt")):
            layout = "official"
        elif any(os.path.isfile(os.path.join(root, f"{s}_label.txt")) for s in ("train", "test")):
            layout = "presplit"
        else:
            raise DatasetError(f"CelebA: {root} holds neither list_attr_celeba.txt nor train_label.txt; "
                               f"expected {OFFICIAL_LAYOUT}, or {PRESPLIT_LAYOUT}")
    if layout == "official":
        return _official(root, check_split("CelebA", split, {"train": "train", "val": "val",
                                                              "validation": "val", "test": "test"}))
    if layout == "presplit":
        return _presplit(root, check_split("CelebA", split, {"train": "train", "test": "test"}))
    if layout == "tfds":
        return TfdsCelebA(root, check_split("CelebA", split, {"train": "train", "val": "validation",
                                                               "validation": "validation", "test": "test"}))
    raise ConfigError(f"CelebA: layout must be 'auto', 'official', 'presplit' or 'tfds', got {layout!r}")


def _attribute_rows(path: str, lines: list[tuple[int, str]], first: int, layout: str
                    ) -> tuple[list[str], np.ndarray]:
    """Parses '<file> <40 ints>' rows into names and a {0,1} int32 [N, 40] array (value > 0 -> 1)."""
    names, values = [], []
    for lineno, line in lines[first:]:
        fields = line.split()
        if len(fields) != _NUM + 1:
            raise malformed("CelebA", path, lineno, line, f"expected a file name and {_NUM} values", layout)
        names.append(fields[0])
        values.append(fields[1:])
    try:
        array = np.array(values, dtype=np.int64).reshape(-1, _NUM)
    except ValueError:  # find the offending line for the message
        for lineno, line in lines[first:]:
            for token in line.split()[1:]:
                parse_int(token, "CelebA", path, lineno, line, layout)
        raise
    return names, (array > 0).astype(np.int32)


def _official(root: str, split: str) -> ImageSource:
    attr_file = os.path.join(root, "list_attr_celeba.txt")
    part_file = os.path.join(root, "list_eval_partition.txt")
    lines = list(read_lines(attr_file, "CelebA", OFFICIAL_LAYOUT))
    if len(lines) < 2:
        raise DatasetError(f"CelebA: {attr_file} has fewer than 2 lines; expected {OFFICIAL_LAYOUT}")
    count = parse_int(lines[0][1].split()[0], "CelebA", attr_file, lines[0][0], lines[0][1], OFFICIAL_LAYOUT)
    if tuple(lines[1][1].split()) != label_tables.CELEBA_ATTRIBUTES:
        raise malformed("CelebA", attr_file, lines[1][0], lines[1][1],
                        "line 2 is not the 40 official attribute names in order", OFFICIAL_LAYOUT)
    names, values = _attribute_rows(attr_file, lines, 2, OFFICIAL_LAYOUT)
    if count != len(names):
        raise DatasetError(f"CelebA: {attr_file}:1 announces {count} images but lists {len(names)}; "
                           f"expected {OFFICIAL_LAYOUT}")
    wanted = {"train": 0, "val": 1, "test": 2}[split]
    in_split = set()
    for lineno, line in read_lines(part_file, "CelebA", OFFICIAL_LAYOUT):
        fields = line.split()
        if len(fields) != 2:
            raise malformed("CelebA", part_file, lineno, line, "expected 2 fields", OFFICIAL_LAYOUT)
        part = parse_int(fields[1], "CelebA", part_file, lineno, line, OFFICIAL_LAYOUT)
        if part not in (0, 1, 2):
            raise malformed("CelebA", part_file, lineno, line, f"partition {part} is not 0, 1 or 2",
                            OFFICIAL_LAYOUT)
        if part == wanted:
            in_split.add(fields[0])
    missing = in_split.difference(names)
    if missing:
        raise DatasetError(f"CelebA: {len(missing)} files of {part_file} (e.g. {min(missing)}) are not in "
                           f"{attr_file}; expected {OFFICIAL_LAYOUT}")
    keep = np.array([n in in_split for n in names], dtype=bool)
    image_dir = require_dir(os.path.join(root, "img_align_celeba"), "CelebA", OFFICIAL_LAYOUT)
    return ImageSource(dataset="CelebA", root=root, split=split,
                       paths=[os.path.join(image_dir, n) for n, k in zip(names, keep) if k],
                       labels=values[keep], class_names=label_tables.CELEBA_ATTRIBUTES, task=MULTILABEL,
                       layout=OFFICIAL_LAYOUT, options="layout='official'")


def _presplit(root: str, split: str) -> ImageSource:
    label_file = os.path.join(root, f"{split}_label.txt")
    names, values = _attribute_rows(label_file, list(read_lines(label_file, "CelebA", PRESPLIT_LAYOUT)), 0,
                                    PRESPLIT_LAYOUT)
    image_dir = require_dir(os.path.join(root, split), "CelebA", PRESPLIT_LAYOUT)
    return ImageSource(dataset="CelebA", root=root, split=split, paths=[os.path.join(image_dir, n) for n in names],
                       labels=values, class_names=label_tables.CELEBA_ATTRIBUTES, task=MULTILABEL,
                       layout=PRESPLIT_LAYOUT, options="layout='presplit'")


class TfdsCelebA(ImageSource):
    """A TFDS-prepared `celeb_a` (array_record) read with `tensorflow_datasets`, if it is installed.

    Images stay encoded until `decode` (TFDS `SkipDecoding`); reading the labels is one pass over the
    records at construction.
    """

    def __init__(self, root: str, split: str):
        try:
            import tensorflow_datasets as tfds  # optional: only this layout needs it
        except ImportError:
            raise ConfigError("CelebA: layout='tfds' needs tensorflow_datasets, which is not installed "
                              "(pip install tensorflow-datasets), or use the official files: "
                              f"{OFFICIAL_LAYOUT}") from None
        if not os.path.isfile(os.path.join(root, "dataset_info.json")):
            raise DatasetError(f"CelebA: {root}/dataset_info.json not found; expected {TFDS_LAYOUT}")
        try:
            builder = tfds.builder_from_directory(root)
            self._records = builder.as_data_source(split=split,
                                                   decoders={"image": tfds.decode.SkipDecoding()})
        except Exception as e:  # TFDS raises many types for a bad or foreign directory
            raise DatasetError(f"CelebA: cannot open split {split!r} of {root} with TFDS "
                               f"({type(e).__name__}: {e}); expected {TFDS_LAYOUT}") from None
        n = len(self._records)
        values = np.zeros((n, _NUM), dtype=np.int32)
        for i in range(n):
            attributes = self._records[i]["attributes"]
            values[i] = [bool(attributes[a]) for a in label_tables.CELEBA_ATTRIBUTES]
        super().__init__(dataset="CelebA", root=root, split=split,
                         paths=[f"{root}[{split}][{i}]" for i in range(n)], labels=values,
                         class_names=label_tables.CELEBA_ATTRIBUTES, task=MULTILABEL, layout=TFDS_LAYOUT,
                         options="layout='tfds'")

    def __getitem__(self, index: int) -> dict[str, Any]:
        item = super().__getitem__(index)
        item["image"] = self._records[item["index"]]["image"]
        return item

    def decode(self, item: dict[str, Any]) -> Any:
        return decode_image(bytes(item["image"]), name=item["path"])
