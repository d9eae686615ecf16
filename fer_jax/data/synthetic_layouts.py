"""Writes synthetic faces (`fer_jax.data.synthetic`) in the exact official layout of each dataset.

| layout | variant | what is written |
|---|---|---|
| rafdb | official | `EmoLabel/list_patition_label.txt` + `Image/aligned/<name>_aligned.jpg`, 100x100 by default |
| affectnet | folders (default) | `{train,val}/<code 0..7>/<id>.jpg`: the layout DAN's convert_affectnet.py writes |
| affectnet | csv | `training.csv`, `validation.csv` + `Manually_Annotated_Images/<dir>/<id>.jpg`, faces inside larger pictures with their box; ~5 % of rows carry the excluded codes 8-10 |
| celeba | official (default) | `img_align_celeba/%06d.jpg` 178x218 + `list_attr_celeba.txt` + `list_eval_partition.txt`; partitions 0/1/2 get num_train/num_test/num_test images |
| celeba | presplit | FAER's `{train,test}/<file>` + `{train,test}_label.txt` |
| expw | official | `image/origin/<name>.jpg` (one or two faces per picture) + `label/label.lst`; num_train + num_test faces, split later by the reader's name hash |
| afew | official | Emotion-FAN's `data/`: `face/{train_afew,val_afew}/<Emotion>/<video_id>/%07d.jpg` + `txt/afew_train.txt`, `txt/afew_eval.txt`; num_train / num_test videos of 1-12 frames, 64x64 by default |
| ckplus | official | Emotion-FAN's `data/`: `face/ck_face/<Sxxx>/<seq>/<Sxxx>_<seq>_%08d.png` + `txt/CK+_10-fold_sample_IDascendorder_step10.txt`; fold 10 (the default test fold) holds num_test videos, folds 1-9 share num_train, each subject in one fold |

Classes are balanced in each split; an image's content depends only on (seed, split, position). A video
(`synthetic.draw_expression_video`) is one face whose view drifts from frame to frame; a quarter of the
videos are short (AFEW at most 3 frames, CK+ at most 5), so both of Emotion-FAN's group-sampling branches
occur. AFEW frame numbers have gaps, as frames where face alignment found no face are missing.
"""

from __future__ import annotations

import collections
import os
import shutil
import tempfile

import numpy as np
from PIL import Image

from fer_jax.data import labels as label_tables
from fer_jax.data import synthetic
from fer_jax.errors import ConfigError

VARIANTS = {"rafdb": ("official",), "affectnet": ("folders", "csv"), "celeba": ("official", "presplit"),
            "expw": ("official",), "afew": ("official",), "ckplus": ("official",)}
DEFAULT_SIZE = {"rafdb": 100, "affectnet": 128, "expw": 96, "afew": 64, "ckplus": 64}
# Emotion-FAN's CK+ list names the emotions of each fold header in this order, in this spelling.
_CKPLUS_HEADER_ORDER = ("Angry", "Sad", "Disgust", "Surprise", "Fear", "Contempt", "Happy")
_QUALITY = 92


def _rng(seed: int, split: int, i: int) -> np.random.Generator:
    return np.random.default_rng([seed, split, i])


def _balanced_labels(n: int, num_classes: int, seed: int, split: int) -> np.ndarray:
    return np.random.default_rng([seed, 1000 + split]).permutation(np.arange(n) % num_classes)


def _save(img: Image.Image, path: str) -> None:
    os.makedirs(os.path.dirname(path), exist_ok=True)
    img.save(path, quality=_QUALITY)


def _in_picture(faces: list[Image.Image], rng: np.random.Generator) -> tuple[Image.Image, list[tuple]]:
    """Pastes faces side by side into a larger cluttered picture; returns it and (left, top, right, bottom)."""
    size = faces[0].width
    width = int(size * len(faces) * rng.uniform(1.15, 1.5))
    height = int(size * rng.uniform(1.2, 1.6))
    picture, _ = synthetic.draw_background(rng, (width, height))
    boxes, slot = [], width // len(faces)
    for k, face in enumerate(faces):
        left = k * slot + int(rng.integers(0, slot - size + 1))
        top = int(rng.integers(0, height - size + 1))
        picture.paste(face, (left, top))
        boxes.append((left, top, left + size, top + size))
    return picture, boxes


def _write_rafdb(out: str, num_train: int, num_test: int, seed: int, size: int, variant: str) -> None:
    lines = []
    for split, (name, n, digits) in enumerate((("train", num_train, 5), ("test", num_test, 4))):
        for i, label in enumerate(_balanced_labels(n, len(label_tables.RAFDB), seed, split)):
            stem = f"{name}_{i + 1:0{digits}d}"
            img = synthetic.draw_expression(label_tables.RAFDB[label], _rng(seed, split, i), size)
            _save(img, os.path.join(out, "Image", "aligned", f"{stem}_aligned.jpg"))
            lines.append(f"{stem}.jpg {label + 1}\n")
    os.makedirs(os.path.join(out, "EmoLabel"))
    with open(os.path.join(out, "EmoLabel", "list_patition_label.txt"), "w") as f:
        f.writelines(lines)


def _write_affectnet(out: str, num_train: int, num_test: int, seed: int, size: int, variant: str) -> None:
    header = ("subDirectory_filePath,face_x,face_y,face_width,face_height,facial_landmarks,expression,"
              "valence,arousal\n")
    for split, (name, csv_name, n) in enumerate((("train", "training.csv", num_train),
                                                 ("val", "validation.csv", num_test))):
        rows = [header]
        for i, code in enumerate(_balanced_labels(n, len(label_tables.AFFECTNET), seed, split)):
            rng = _rng(seed, split, i)
            face = synthetic.draw_expression(label_tables.AFFECTNET[code], rng, size)
            if variant == "folders":
                _save(face, os.path.join(out, name, str(code), f"{name}_{i:06d}.jpg"))
                continue
            if rng.random() < 0.05:  # None / Uncertain / Non-face rows, which readers must exclude
                code = int(rng.integers(8, 11))
            picture, [(left, top, right, bottom)] = _in_picture([face], rng)
            rel = f"{1 + i // 500}/{name}_{i:06d}.jpg"
            _save(picture, os.path.join(out, "Manually_Annotated_Images", rel))
            points = rng.uniform((left, top), (right, bottom), (68, 2)).round(2).ravel()
            valence, arousal = rng.uniform(-1, 1, 2).round(6)
            rows.append(f"{rel},{left},{top},{right - left},{bottom - top},{';'.join(map(str, points))},"
                        f"{code},{valence},{arousal}\n")
        if variant == "csv":
            with open(os.path.join(out, csv_name), "w") as f:
                f.writelines(rows)


def _attribute_line(name: str, values: np.ndarray) -> str:
    # Official formatting: file name, then each value right-aligned in 2 characters, space-separated.
    return name + " " + " ".join(f"{1 if v else -1:2d}" for v in values) + "\n"


def _write_celeba(out: str, num_train: int, num_test: int, seed: int, size: int, variant: str) -> None:
    names = label_tables.CELEBA_ATTRIBUTES
    splits = [("train", num_train, 0), ("val", num_test, 1), ("test", num_test, 2)]
    if variant == "presplit":
        splits = [s for s in splits if s[0] != "val"]
    attr_lines, partition_lines, number = [], [], 0
    for split_name, n, part in splits:
        split_lines = []
        for i in range(n):
            rng = _rng(seed, part, i)
            values = synthetic.sample_celeba_attributes(rng)
            number += 1
            file = f"{number:06d}.jpg"
            folder = "img_align_celeba" if variant == "official" else split_name
            _save(synthetic.draw_celeba(values, rng), os.path.join(out, folder, file))
            split_lines.append(_attribute_line(file, values))
            partition_lines.append(f"{file} {part}\n")
        attr_lines += split_lines
        if variant == "presplit":
            with open(os.path.join(out, f"{split_name}_label.txt"), "w") as f:
                f.writelines(split_lines)
    if variant == "official":
        with open(os.path.join(out, "list_attr_celeba.txt"), "w") as f:
            f.writelines([f"{number}\n", " ".join(names) + " \n", *attr_lines])
        with open(os.path.join(out, "list_eval_partition.txt"), "w") as f:
            f.writelines(partition_lines)


def _write_expw(out: str, num_train: int, num_test: int, seed: int, size: int, variant: str) -> None:
    total = num_train + num_test
    labels = _balanced_labels(total, len(label_tables.EXPW), seed, 0)
    lines, i, picture_number = [], 0, 0
    while i < total:
        rng = _rng(seed, 0, picture_number)
        count = 2 if (rng.random() < 0.25 and i + 1 < total) else 1
        faces = [synthetic.draw_expression(label_tables.EXPW[labels[i + k]], rng, size) for k in range(count)]
        picture, boxes = _in_picture(faces, rng)
        name = f"synthetic_{picture_number:06d}.jpg"
        _save(picture, os.path.join(out, "image", "origin", name))
        for face_id, (left, top, right, bottom) in enumerate(boxes):
            confidence = rng.uniform(30.0, 100.0)
            lines.append(f"{name} {face_id} {top} {left} {right} {bottom} {confidence:.6f} {labels[i]}\n")
            i += 1
        picture_number += 1
    os.makedirs(os.path.join(out, "label"))
    with open(os.path.join(out, "label", "label.lst"), "w") as f:
        f.writelines(lines)


def _spelled(name: str) -> str:
    return label_tables.EMOTION_FAN_SPELLING.get(name, name)


def _video(expression: str, rng: np.random.Generator, size: int, short: int) -> list[Image.Image]:
    """A clip of `expression`; one in four has 1..`short` frames, the others `short` + 1 .. `short` + 9."""
    count = int(rng.integers(1, short + 1) if rng.random() < 0.25 else rng.integers(short + 1, short + 10))
    return synthetic.draw_expression_video(expression, rng, size, count)


def _write_afew(out: str, num_train: int, num_test: int, seed: int, size: int, variant: str) -> None:
    for split, (folder, list_name, n) in enumerate((("train_afew", "afew_train.txt", num_train),
                                                    ("val_afew", "afew_eval.txt", num_test))):
        lines = []
        for i, label in enumerate(_balanced_labels(n, len(label_tables.AFEW), seed, split)):
            rng = _rng(seed, split, i)
            emotion = _spelled(label_tables.AFEW[label])
            name = f"{emotion}/{split}{i:08d}"
            frames = _video(label_tables.AFEW[label], rng, size, short=3)
            numbers = np.sort(rng.choice(np.arange(1, 2 * len(frames) + 1), len(frames), replace=False))
            for number, frame in zip(numbers, frames):
                _save(frame, os.path.join(out, "face", folder, name, f"{number:07d}.jpg"))
            lines.append(f"{name} {emotion}\n")
        os.makedirs(os.path.join(out, "txt"), exist_ok=True)
        with open(os.path.join(out, "txt", list_name), "w") as f:
            f.writelines(lines)


def _write_ckplus(out: str, num_train: int, num_test: int, seed: int, size: int, variant: str) -> None:
    folds = {k: [] for k in range(1, 11)}
    for split, n in enumerate((num_train, num_test)):
        for i, label in enumerate(_balanced_labels(n, len(label_tables.CKPLUS_EMOTION_FAN), seed, split)):
            fold = 10 if split else 1 + i % 9
            j = len(folds[fold])
            subject, sequence = f"S{10 * (j // 3) + fold:03d}", f"{j % 3 + 1:03d}"  # up to 3 per subject
            frames = _video(label_tables.CKPLUS_EMOTION_FAN[label], _rng(seed, split, i), size, short=5)
            for number, frame in enumerate(frames, start=1):
                _save(frame, os.path.join(out, "face", "ck_face", subject, sequence,
                                          f"{subject}_{sequence}_{number:08d}.png"))
            folds[fold].append((_spelled(label_tables.CKPLUS_EMOTION_FAN[label]), f"{subject}/{sequence}"))
    lines = []
    for fold, videos in folds.items():  # as upstream: lines by emotion, then subject
        counts = collections.Counter(emotion for emotion, _ in videos)
        header = "".join(f" {e} {counts[e]}" for e in _CKPLUS_HEADER_ORDER if counts[e])
        lines.append(f"{fold}-fold {len(videos)}{header}\n")
        lines += [f"{name} {emotion}\n" for emotion, name in sorted(videos)]
    os.makedirs(os.path.join(out, "txt"))
    with open(os.path.join(out, "txt", "CK+_10-fold_sample_IDascendorder_step10.txt"), "w") as f:
        f.writelines(lines)


_WRITERS = {"rafdb": _write_rafdb, "affectnet": _write_affectnet, "celeba": _write_celeba, "expw": _write_expw,
            "afew": _write_afew, "ckplus": _write_ckplus}


def make_synthetic(layout: str, out: str, *, num_train: int = 1000, num_test: int = 200, seed: int = 0,
                   image_size: int | None = None, variant: str | None = None) -> str:
    """Writes a synthetic dataset into the new directory `out`, atomically (temp dir, then rename).

    Args:
        layout: "rafdb", "affectnet", "celeba", "expw", "afew" or "ckplus".
        out: target directory; must not exist or be empty.
        num_train, num_test: images (AFEW, CK+: videos) per split (see the module table for CelebA's val,
            ExpW and CK+'s folds).
        seed: the data depends on nothing else.
        image_size: face image (video frame) side, not for CelebA (178x218); default per layout (`DEFAULT_SIZE`).
        variant: a layout variant (`VARIANTS`); default the first.

    Returns:
        The absolute path of `out`.

    Raises:
        ConfigError: bad arguments, or `out` exists and is not empty.
    """
    if layout not in _WRITERS:
        raise ConfigError(f"unknown layout {layout!r}; expected one of {sorted(_WRITERS)}")
    variant = variant or VARIANTS[layout][0]
    if variant not in VARIANTS[layout]:
        raise ConfigError(f"{layout}: unknown variant {variant!r}; expected one of {list(VARIANTS[layout])}")
    if num_train < 1 or num_test < 1:
        raise ConfigError(f"num_train and num_test must be >= 1, got {num_train} and {num_test}")
    if layout == "celeba" and image_size is not None:
        raise ConfigError("celeba: aligned CelebA images are 178x218; do not set image_size")
    size = image_size or DEFAULT_SIZE.get(layout, 0)
    if layout != "celeba" and size < 32:
        raise ConfigError(f"image_size must be >= 32, got {size}")
    out = os.path.abspath(out)
    if os.path.exists(out) and (not os.path.isdir(out) or os.listdir(out)):
        raise ConfigError(f"output {out} exists and is not an empty directory; choose a new one")
    parent = os.path.dirname(out)
    os.makedirs(parent, exist_ok=True)
    tmp = tempfile.mkdtemp(prefix=f".{os.path.basename(out)}.tmp-", dir=parent)
    try:
        _WRITERS[layout](tmp, num_train, num_test, seed, size, variant)
        os.chmod(tmp, 0o755)  # mkdtemp makes it private
        if os.path.isdir(out):
            os.rmdir(out)
        os.rename(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return out
