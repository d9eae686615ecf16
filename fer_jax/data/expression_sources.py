"""Readers for the expression datasets: RAF-DB (basic), AffectNet (folders or official CSVs) and ExpW.

Labels follow each dataset's official order (`fer_jax.data.labels`); `create_source(..., class_order=...)`
renumbers them for recipes that use another order (e.g. MFTN-FER's alphabetical one).
"""

from __future__ import annotations

import csv
import hashlib
import os

import numpy as np

from fer_jax.data import labels as label_tables
from fer_jax.data.sources import (IMAGE_EXTENSIONS, MULTICLASS, ImageSource, check_split, malformed,
                                  parse_int, read_lines, register, require_dir)
from fer_jax.errors import ConfigError, DatasetError

RAFDB_LAYOUT = ("<root>/EmoLabel/list_patition_label.txt with lines '<train|test>_<id>.jpg <label 1..7>' "
                "and images <root>/Image/aligned/<stem>_aligned.jpg")
AFFECTNET_FOLDERS_LAYOUT = ("<root>/{train,val}/<expression code 0..7>/<image> "
                            "(the layout DAN's convert_affectnet.py writes)")
AFFECTNET_CSV_LAYOUT = ("<root>/training.csv and <root>/validation.csv with header "
                        "'subDirectory_filePath,face_x,face_y,face_width,face_height,facial_landmarks,"
                        "expression,valence,arousal' and images <root>/Manually_Annotated_Images/"
                        "<subDirectory_filePath>")
EXPW_LAYOUT = ("<root>/label/label.lst with lines '<image_name> <face_id> <top> <left> <right> <bottom> "
               "<confidence> <expression 0..6>' and images <root>/image/origin/<image_name>")

_HELD_OUT = {"train": "train", "test": "test", "val": "test", "validation": "test"}


@register("rafdb")
def rafdb(root: str, split: str) -> ImageSource:
    """RAF-DB basic: the official list file, split by name prefix; label = file label - 1 (DAN)."""
    split = check_split("RAF-DB", split, _HELD_OUT)
    require_dir(root, "RAF-DB", RAFDB_LAYOUT)
    list_file = os.path.join(root, "EmoLabel", "list_patition_label.txt")
    image_dir = os.path.join(root, "Image", "aligned")
    paths, labels = [], []
    for lineno, line in read_lines(list_file, "RAF-DB", RAFDB_LAYOUT):
        fields = line.split()
        if len(fields) != 2:
            raise malformed("RAF-DB", list_file, lineno, line, "expected 2 fields", RAFDB_LAYOUT)
        name, label = fields[0], parse_int(fields[1], "RAF-DB", list_file, lineno, line, RAFDB_LAYOUT)
        prefix = name.split("_", 1)[0]
        if prefix not in ("train", "test"):
            raise malformed("RAF-DB", list_file, lineno, line, "name does not start with train_ or test_",
                            RAFDB_LAYOUT)
        if not 1 <= label <= len(label_tables.RAFDB):
            raise malformed("RAF-DB", list_file, lineno, line, f"label {label} is outside 1..7", RAFDB_LAYOUT)
        if prefix == split:
            paths.append(os.path.join(image_dir, os.path.splitext(name)[0] + "_aligned.jpg"))
            labels.append(label - 1)
    require_dir(image_dir, "RAF-DB", RAFDB_LAYOUT)
    return ImageSource(dataset="RAF-DB", root=root, split=split, paths=paths, labels=np.array(labels),
                       class_names=label_tables.RAFDB, task=MULTICLASS, layout=RAFDB_LAYOUT)


@register("affectnet")
def affectnet(root: str, split: str, *, num_class: int = 8, layout: str = "folders",
              crop_face: bool = True) -> ImageSource:
    """AffectNet, 8 classes (official codes 0..7) or 7 (Contempt, code 7, dropped).

    Args:
        root: dataset root.
        split: "train" or "val" ("test" is accepted for the validation set, AffectNet's only held-out split).
        num_class: 7 or 8.
        layout: "folders" (`<root>/{train,val}/<code>/*`, ImageFolder order: sorted folders, sorted files)
            or "csv" (the official `training.csv` / `validation.csv`; codes 8, 9, 10 are excluded).
        crop_face: for the CSV layout, crop the annotated face box (face_x, face_y, face_width,
            face_height) from the image, as the folder layout holds face crops already.
    """
    split = check_split("AffectNet", split, {"train": "train", "val": "val", "validation": "val",
                                             "test": "val"})
    if num_class not in (7, 8):
        raise ConfigError(f"AffectNet: num_class must be 7 or 8, got {num_class!r}")
    if layout == "folders":
        paths, labels = _affectnet_folders(root, split)
        boxes, used = None, AFFECTNET_FOLDERS_LAYOUT
    elif layout == "csv":
        paths, labels, boxes = _affectnet_csv(root, split)
        used = AFFECTNET_CSV_LAYOUT
        boxes = boxes if crop_face else None
    else:
        raise ConfigError(f"AffectNet: layout must be 'folders' or 'csv', got {layout!r}")
    labels = np.array(labels, dtype=np.int64)
    keep = labels < num_class
    kept_paths = [p for p, k in zip(paths, keep) if k]
    return ImageSource(dataset="AffectNet", root=root, split=split, paths=kept_paths, labels=labels[keep],
                       class_names=label_tables.AFFECTNET[:num_class], task=MULTICLASS,
                       boxes=None if boxes is None else np.asarray(boxes)[keep], layout=used,
                       options=f"num_class={num_class}, layout={layout!r}"
                               + (f", crop_face={crop_face}" if layout == "csv" else ""))


def _affectnet_folders(root: str, split: str) -> tuple[list[str], list[int]]:
    split_dir = require_dir(os.path.join(root, split), "AffectNet", AFFECTNET_FOLDERS_LAYOUT)
    paths, labels = [], []
    for folder in sorted(os.listdir(split_dir)):
        class_dir = os.path.join(split_dir, folder)
        if not os.path.isdir(class_dir):
            continue
        if not folder.isdigit() or int(folder) > 10:
            raise DatasetError(f"AffectNet: folder {class_dir} is not an expression code; "
                               f"expected {AFFECTNET_FOLDERS_LAYOUT}")
        if int(folder) in label_tables.AFFECTNET_EXCLUDED_CODES:
            continue
        # torchvision ImageFolder order: walk sorted, files sorted, known image extensions only.
        for dirpath, _, files in sorted(os.walk(class_dir, followlinks=True)):
            for fname in sorted(files):
                if fname.lower().endswith(IMAGE_EXTENSIONS):
                    paths.append(os.path.join(dirpath, fname))
                    labels.append(int(folder))
    return paths, labels


_AFFECTNET_COLUMNS = ("subDirectory_filePath", "face_x", "face_y", "face_width", "face_height", "expression")


def _affectnet_csv(root: str, split: str) -> tuple[list[str], list[int], list[tuple[int, int, int, int]]]:
    require_dir(root, "AffectNet", AFFECTNET_CSV_LAYOUT)
    csv_file = os.path.join(root, "training.csv" if split == "train" else "validation.csv")
    image_dir = os.path.join(root, "Manually_Annotated_Images")
    if not os.path.isfile(csv_file):
        raise DatasetError(f"AffectNet: list file {csv_file} not found; expected {AFFECTNET_CSV_LAYOUT}")
    paths, labels, boxes = [], [], []
    with open(csv_file, newline="", encoding="utf-8") as f:
        reader = csv.reader(f)
        header = next(reader, [])
        missing = [c for c in _AFFECTNET_COLUMNS if c not in header]
        if missing:
            raise DatasetError(f"AffectNet: {csv_file}:1: header lacks {missing}; expected {AFFECTNET_CSV_LAYOUT}")
        col = {c: header.index(c) for c in _AFFECTNET_COLUMNS}
        for row in reader:
            if not row:
                continue
            line = ",".join(row)
            if len(row) < len(header):
                raise malformed("AffectNet", csv_file, reader.line_num, line,
                                f"expected {len(header)} columns", AFFECTNET_CSV_LAYOUT)
            code = parse_int(row[col["expression"]], "AffectNet", csv_file, reader.line_num, line,
                             AFFECTNET_CSV_LAYOUT)
            if code in label_tables.AFFECTNET_EXCLUDED_CODES:
                continue
            if not 0 <= code < len(label_tables.AFFECTNET):
                raise malformed("AffectNet", csv_file, reader.line_num, line,
                                f"expression {code} is outside 0..10", AFFECTNET_CSV_LAYOUT)
            try:
                x, y, w, h = (int(float(row[col[c]])) for c in _AFFECTNET_COLUMNS[1:5])
            except ValueError:
                raise malformed("AffectNet", csv_file, reader.line_num, line, "face box is not numeric",
                                AFFECTNET_CSV_LAYOUT) from None
            paths.append(os.path.join(image_dir, row[col["subDirectory_filePath"]]))
            labels.append(code)
            boxes.append((x, y, x + w, y + h))
    require_dir(image_dir, "AffectNet", AFFECTNET_CSV_LAYOUT)
    return paths, labels, boxes


def expw_split_of(image_name: str, test_fraction: float, split_seed: int) -> str:
    """ExpW has no official split: an image goes to "test" iff a seeded SHA-256 of its name says so.

    All faces of one image land in the same split, and the split of an image does not change when
    images are added to or removed from the list.
    """
    digest = hashlib.sha256(f"{split_seed}/{image_name}".encode()).digest()
    return "test" if int.from_bytes(digest[:8], "big") / 2.0**64 < test_fraction else "train"


@register("expw")
def expw(root: str, split: str, *, test_fraction: float = 0.1, split_seed: int = 0) -> ImageSource:
    """ExpW: faces cropped from `image/origin` by the `label.lst` box; 90/10 train/test by image-name hash."""
    split = check_split("ExpW", split, _HELD_OUT)
    if not 0.0 < test_fraction < 1.0:
        raise ConfigError(f"ExpW: test_fraction must be in (0, 1), got {test_fraction!r}")
    require_dir(root, "ExpW", EXPW_LAYOUT)
    list_file = os.path.join(root, "label", "label.lst")
    image_dir = os.path.join(root, "image", "origin")
    paths, labels, boxes = [], [], []
    for lineno, line in read_lines(list_file, "ExpW", EXPW_LAYOUT):
        fields = line.split()
        if len(fields) != 8:
            raise malformed("ExpW", list_file, lineno, line, "expected 8 fields", EXPW_LAYOUT)
        top, left, right, bottom = (parse_int(t, "ExpW", list_file, lineno, line, EXPW_LAYOUT)
                                    for t in fields[2:6])
        try:
            float(fields[6])
        except ValueError:
            raise malformed("ExpW", list_file, lineno, line, "confidence is not a number", EXPW_LAYOUT) from None
        label = parse_int(fields[7], "ExpW", list_file, lineno, line, EXPW_LAYOUT)
        if not 0 <= label < len(label_tables.EXPW):
            raise malformed("ExpW", list_file, lineno, line, f"expression {label} is outside 0..6", EXPW_LAYOUT)
        if expw_split_of(fields[0], test_fraction, split_seed) == split:
            paths.append(os.path.join(image_dir, fields[0]))
            labels.append(label)
            boxes.append((left, top, right, bottom))
    require_dir(image_dir, "ExpW", EXPW_LAYOUT)
    return ImageSource(dataset="ExpW", root=root, split=split, paths=paths, labels=np.array(labels),
                       class_names=label_tables.EXPW, task=MULTICLASS, boxes=np.array(boxes).reshape(-1, 4),
                       layout=EXPW_LAYOUT, options=f"test_fraction={test_fraction}, split_seed={split_seed}")
