"""Tiny datasets written by hand in each dataset's exact official layout, for the reader tests.

Every image is a small JPEG whose colour encodes its label, so a test can tell which file was read.
"""

from __future__ import annotations

import os

import numpy as np
from PIL import Image

from fer_jax.data import labels as label_tables


def write_jpeg(path: str, size: tuple[int, int] = (12, 10), value: int = 128) -> None:
    """A width x height JPEG filled with a gradient offset by `value` (never constant)."""
    os.makedirs(os.path.dirname(path), exist_ok=True)
    width, height = size
    ramp = (np.arange(width)[None, :] * 3 + np.arange(height)[:, None] * 5 + value) % 256
    Image.fromarray(np.stack([ramp, ramp // 2, 255 - ramp], -1).astype(np.uint8)).save(path, quality=95)


def write_text(path: str, text: str) -> None:
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w") as f:
        f.write(text)


def write_corrupt(path: str) -> None:
    """A truncated JPEG: a valid header, then the data stops."""
    write_jpeg(path, (32, 32))
    with open(path, "rb") as f:
        data = f.read()
    with open(path, "wb") as f:
        f.write(data[: len(data) // 3])


RAFDB_LINES = [("train_00001.jpg", 5), ("train_00002.jpg", 1), ("train_00003.jpg", 7), ("test_0001.jpg", 4),
               ("train_00004.jpg", 3), ("test_0002.jpg", 2)]


def rafdb(root: str, lines=RAFDB_LINES, corrupt=(), missing=()) -> str:
    for name, label in lines:
        stem = name[:-4]
        path = os.path.join(root, "Image", "aligned", f"{stem}_aligned.jpg")
        if name in missing:
            continue
        if name in corrupt:
            write_corrupt(path)
        else:
            write_jpeg(path, (10, 10), value=label * 20)
    write_text(os.path.join(root, "EmoLabel", "list_patition_label.txt"),
               "".join(f"{n} {label}\n" for n, label in lines))
    return root


def affectnet_folders(root: str, per_class=2, codes=range(8)) -> str:
    for split in ("train", "val"):
        for code in codes:
            for i in reversed(range(per_class)):  # written out of order: the reader sorts
                write_jpeg(os.path.join(root, split, str(code), f"img_{i}.jpg"), value=code * 20)
    return root


AFFECTNET_HEADER = ("subDirectory_filePath,face_x,face_y,face_width,face_height,facial_landmarks,expression,"
                    "valence,arousal\n")


def affectnet_csv(root: str, rows: dict[str, list[tuple[str, int, tuple[int, int, int, int]]]]) -> str:
    """rows: csv file name -> [(subDirectory_filePath, expression, (x, y, w, h))]; images 40x30."""
    for csv_name, entries in rows.items():
        lines = [AFFECTNET_HEADER]
        for rel, code, (x, y, w, h) in entries:
            write_jpeg(os.path.join(root, "Manually_Annotated_Images", rel), (40, 30), value=code * 20)
            landmarks = ";".join(f"{v:.2f}" for v in np.linspace(x, x + w, 136))
            lines.append(f"{rel},{x},{y},{w},{h},{landmarks},{code},0.25,-0.5\n")
        write_text(os.path.join(root, csv_name), "".join(lines))
    return root


def celeba_official(root: str, values: np.ndarray, partitions: list[int]) -> str:
    """values: int [N, 40] of -1/1 in official order; one image per row, named %06d.jpg."""
    names = [f"{i + 1:06d}.jpg" for i in range(len(values))]
    attr = [f"{len(values)}\n", " ".join(label_tables.CELEBA_ATTRIBUTES) + " \n"]
    attr += [n + " " + " ".join(f"{v:2d}" for v in row) + "\n" for n, row in zip(names, values)]
    write_text(os.path.join(root, "list_attr_celeba.txt"), "".join(attr))
    write_text(os.path.join(root, "list_eval_partition.txt"),
               "".join(f"{n} {p}\n" for n, p in zip(names, partitions)))
    for n in names:
        write_jpeg(os.path.join(root, "img_align_celeba", n), (178 // 8, 218 // 8))
    return root


def expw(root: str, lines: list[str], images: dict[str, tuple[int, int]]) -> str:
    for name, size in images.items():
        write_jpeg(os.path.join(root, "image", "origin", name), size)
    write_text(os.path.join(root, "label", "label.lst"), "".join(line + "\n" for line in lines))
    return root


def celeba_tfds(data_dir: str, values: dict[str, np.ndarray]) -> str:
    """Prepares a TFDS `celeb_a` (array_record) with split -> {0,1} int [N, 40]; returns its directory.

    Needs tensorflow_datasets (not TensorFlow): images go in as JPEG files, which TFDS stores as they are.
    """
    import tensorflow_datasets as tfds

    class CelebAArrayRecord(tfds.core.GeneratorBasedBuilder):
        name = "celeb_a"
        VERSION = tfds.core.Version("2.1.0")

        def _info(self):
            attributes = tfds.features.FeaturesDict({a: np.bool_ for a in label_tables.CELEBA_ATTRIBUTES})
            return tfds.core.DatasetInfo(builder=self, features=tfds.features.FeaturesDict({
                "image": tfds.features.Image(shape=(218, 178, 3), encoding_format="jpeg"),
                "attributes": attributes}))

        def _split_generators(self, dl_manager):
            return {split: self._generate_examples(split) for split in values}

        def _generate_examples(self, split):
            for i, row in enumerate(values[split]):
                path = os.path.join(data_dir, "jpeg", f"{split}_{i}.jpg")
                write_jpeg(path, (178, 218), value=i)
                yield f"{split}_{i}", {"image": path, "attributes": dict(zip(label_tables.CELEBA_ATTRIBUTES,
                                                                             map(bool, row)))}

    builder = CelebAArrayRecord(data_dir=data_dir, file_format="array_record")
    builder.download_and_prepare()
    return str(builder.data_dir)


def write_png(path: str, size: tuple[int, int] = (8, 6), value: int = 0) -> None:
    """A lossless width x height PNG whose pixels encode `value` (as write_jpeg's gradient)."""
    os.makedirs(os.path.dirname(path), exist_ok=True)
    width, height = size
    ramp = (np.arange(width)[None, :] * 3 + np.arange(height)[:, None] * 5 + value) % 256
    Image.fromarray(np.stack([ramp, ramp // 2, 255 - ramp], -1).astype(np.uint8)).save(path)


def video_frames(folder: str, count: int, pattern: str = "{:07d}.jpg") -> list[str]:
    """Writes `count` frames numbered from 1, last first (the reader sorts), plus a non-image file."""
    paths = [os.path.join(folder, pattern.format(i)) for i in range(1, count + 1)]
    for i, path in reversed(list(enumerate(paths))):
        (write_png if path.endswith(".png") else write_jpeg)(path, (8, 6), value=10 * i)
    write_text(os.path.join(folder, "Thumbs.db"), "not a frame")
    return paths


# Emotion-FAN's AFEW: (list name '<Emotion>/<video_id>', frame count) per video and split.
AFEW_TRAIN = [("Angry/000046280", 5), ("Happy/010404607", 2), ("Neutral/002640847", 7)]
AFEW_VAL = [("Fear/000633000", 4), ("Sad/001444527", 1)]


def afew(root: str, train=AFEW_TRAIN, val=AFEW_VAL) -> str:
    """Emotion-FAN's data/ folder: face/{train_afew,val_afew}/<Emotion>/<id>/%07d.jpg and txt/ lists."""
    for folder, list_name, videos in (("train_afew", "afew_train.txt", train), ("val_afew", "afew_eval.txt", val)):
        for name, count in videos:
            video_frames(os.path.join(root, "face", folder, name), count)
        write_text(os.path.join(root, "txt", list_name),
                   "".join(f"{name} {name.split('/')[0]}\n" for name, _ in videos))
    return root


CKPLUS_FILE = "CK+_10-fold_sample_IDascendorder_step10.txt"
# Emotion-FAN's CK+: fold -> [(video '<Sxxx>/<seq>', emotion as listed, frame count)].
CKPLUS_FOLDS = {k: [(f"S{100 + k:03d}/001", ("Angry", "Contempt", "Happy", "Surprise")[k % 4], 4 + k)]
                for k in range(1, 10)}
CKPLUS_FOLDS[10] = [("S034/003", "Angry", 7), ("S034/005", "Happy", 3), ("S073/006", "Disgust", 12)]


def ckplus_list(folds) -> str:
    """The 10-fold list text: per fold '<k>-fold <count> <Emotion> <n> ...', then its video lines."""
    lines = []
    for k, videos in folds.items():
        counts = {}
        for _, emotion, _ in videos:
            counts[emotion] = counts.get(emotion, 0) + 1
        lines.append(f"{k}-fold {len(videos)} " + " ".join(f"{e} {n}" for e, n in counts.items()))
        lines += [f"{name} {emotion}" for name, emotion, _ in videos]
    return "\n".join(lines) + "\n"


def ckplus(root: str, folds=CKPLUS_FOLDS) -> str:
    """Emotion-FAN's data/ folder: face/ck_face/<Sxxx>/<seq>/<Sxxx>_<seq>_%08d.png and the 10-fold list."""
    for videos in folds.values():
        for name, _, count in videos:
            video_frames(os.path.join(root, "face", "ck_face", name), count,
                         name.replace("/", "_") + "_{:08d}.png")
    write_text(os.path.join(root, "txt", CKPLUS_FILE), ckplus_list(folds))
    return root
