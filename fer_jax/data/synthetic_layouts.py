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
| ck | mat | FERAtt's `ck/ck.mat`: MATLAB v7.3 (HDF5, written as MATLAB does, `save_mat73`) with data, points (68 landmarks), imsize, iactor, iclass (CK order, 8 classes), num, name; square gray images, 96x96 by default; the 10 lowest subject ids (FERAtt's fold kfold 0, nactor 10) hold num_test images, about num_train / 6 other subjects num_train |
| bu3dfe | mat | `bu3dfe/bu3dfe.mat`, the same fields, 7 classes (BU-3DFE order, no Contempt) |
| ckplus_release | official | the CK+ release: `cohn-kanade-images/Sxxx/nnn/Sxxx_nnn_%08d.png` (gray frames, 96 px high, 640:490), a `Landmarks/.../<frame>_landmarks.txt` per frame, `Emotion/.../<last frame>_emotion.txt` (code 1..7); num_train / num_test labelled sequences from neutral to apex, subjects as for ck, and unlabelled sequences (an empty Emotion folder) for every third subject |
| backgrounds | jpg | num_train pictures `%06d.jpg` in a flat folder (num_test is unused), 160x120 by default: FERAtt's background folder |

Classes are balanced in each split; an image's content depends only on (seed, split, position). FERAtt's
faces (`face_landmarks`) are drawn through their 68 landmarks (iBUG order), which the expression moves, so
the landmarks fit the picture and the dark crop (`fer_jax.data.feratt_sources`) aligns them; a subject keeps
its face proportions, skin, hair and brows. A video
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
from PIL import Image, ImageDraw

from fer_jax.data import labels as label_tables
from fer_jax.data import synthetic
from fer_jax.errors import ConfigError

VARIANTS = {"rafdb": ("official",), "affectnet": ("folders", "csv"), "celeba": ("official", "presplit"),
            "expw": ("official",), "afew": ("official",), "ckplus": ("official",), "ck": ("mat",),
            "bu3dfe": ("mat",), "ckplus_release": ("official",), "backgrounds": ("jpg",)}
DEFAULT_SIZE = {"rafdb": 100, "affectnet": 128, "expw": 96, "afew": 64, "ckplus": 64, "ck": 96, "bu3dfe": 96,
                "ckplus_release": 96, "backgrounds": 160}
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


# --- FERAtt: gray faces with 68 landmarks (iBUG order), as CK+ / BU-3DFE hold them ----------------------
# Face units: origin at the face centre, x to the image right, y down, 1 ~ half the face width. The
# expression moves the landmarks (synthetic.EXPRESSIONS names the eyes, brows and mouth), and the face is
# drawn through them, so the landmarks fit the picture exactly.

_EYE_OPEN = {"normal": 0.075, "wide": 0.115, "narrow": 0.035, "closed": 0.02}  # half height of the eye
_BROW_LIFT = {"flat": (0.0, 0.0), "raised": (-0.13, -0.11), "inner_up": (-0.13, 0.04), "angry": (0.1, -0.05),
              "knitted": (0.07, 0.0), "one_raised": (-0.15, -0.15)}  # (inner end, outer end) shift, < 0 is up
_MOUTH_SHAPE = {"flat": (0.3, 0.0, 0.0), "smile": (0.36, 0.04, -0.14), "frown": (0.3, 0.0, 0.12),
                "open_o": (0.15, 0.3, 0.0), "wide_open": (0.4, 0.16, 0.02), "pursed": (0.15, 0.0, 0.0),
                "teeth": (0.3, 0.08, 0.0), "smirk": (0.3, 0.0, -0.14)}  # (half width, opening, corner lift)
# FERAtt's fold kfold 0, nactor 10: the 10 lowest subject ids are held out.
_HELD_OUT_SUBJECTS = 10


def _brow_points(kind: str, strength: float, side: int) -> np.ndarray:
    """Points 17-26: the image-left brow outer to inner, then the image-right brow inner to outer."""
    points = []
    for sign in (-1, 1):
        lifted = kind if kind != "one_raised" or sign == side else "flat"
        inner, outer = strength * np.asarray(_BROW_LIFT[lifted])
        t = np.linspace(0.0, 1.0, 5)  # outer -> inner
        x = sign * (0.78 - t * (0.58 + (0.06 * strength if kind == "knitted" else 0.0)))
        y = -0.47 - 0.06 * np.sin(np.pi * t) + outer + (inner - outer) * t
        brow = np.stack([x, y], 1)
        points.append(brow if sign < 0 else brow[::-1])
    return np.concatenate(points)


def _mouth_points(kind: str, strength: float, side: int) -> np.ndarray:
    """Points 48-67: outer lip from the image-left corner over the top and back, then the inner lip."""
    w, o, c = (1 - strength) * np.asarray(_MOUTH_SHAPE["flat"]) + strength * np.asarray(_MOUTH_SHAPE[kind])
    left, right = (c if side < 0 else 0.0, c if side > 0 else 0.0) if kind == "smirk" else (c, c)

    def arc(xs: np.ndarray, y: float) -> list:
        return list(zip(xs, y + np.where(xs < 0, left, right) * (xs / w) ** 2))

    m, outer_x, inner_x = 0.6, w * np.array([-2, -1, 0, 1, 2]) / 3, w * np.array([-1, 0, 1]) / 3
    outer = [(-w, m + left), *arc(outer_x, m - 0.05 - o / 2), (w, m + right), *arc(outer_x[::-1], m + 0.06 + o / 2)]
    inner = [(-0.85 * w, m + 0.72 * left), *arc(inner_x, m - o / 2), (0.85 * w, m + 0.72 * right),
             *arc(inner_x[::-1], m + o / 2)]
    return np.array(outer + inner)


def face_landmarks(expression: str, strength: float = 1.0, side: int = 1) -> np.ndarray:
    """68 landmarks [68, 2] (iBUG order) of a face showing `expression` at `strength` (0 = neutral), in face units.

    `side` (+1 or -1) is the side that a one-sided expression (Contempt's raised brow and smirk) lifts.
    """
    eyes, brows, mouth = synthetic.EXPRESSIONS[label_tables.canonical(expression)]
    s = np.linspace(0.0, np.pi, 17)
    jaw = np.stack([-0.95 * np.cos(s), -0.1 + 1.15 * np.sin(s)], 1)
    nose = [(0, -0.28), (0, -0.15), (0, -0.02), (0, 0.11), (-0.16, 0.26), (-0.08, 0.29), (0, 0.31), (0.08, 0.29),
            (0.16, 0.26)]
    h = (1 - strength) * _EYE_OPEN["normal"] + strength * _EYE_OPEN[eyes]
    eye = [(0.0, 0.0), (0.11, -h), (0.23, -h), (0.34, 0.0), (0.23, h), (0.11, h)]  # outer corner first
    left_eye = [(-0.57 + x, -0.2 + y) for x, y in eye]
    right_eye = [(0.57 - x, -0.2 + y) for x, y in eye]
    right_eye = right_eye[3:4] + right_eye[2:0:-1] + right_eye[0:1] + right_eye[5:3:-1]  # inner corner first
    return np.concatenate([jaw, _brow_points(brows, strength, side), np.array(nose), np.array(left_eye),
                           np.array(right_eye), _mouth_points(mouth, strength, side)])


def _identity(seed: int, subject: int) -> dict[str, float]:
    """A subject's looks: face proportions, skin, hair and brow gray levels, the side of one-sided expressions."""
    rng = np.random.default_rng([seed, 2000, subject])
    return {"aspect": rng.uniform(0.85, 1.05), "length": rng.uniform(0.95, 1.1), "skin": rng.uniform(90, 190),
            "hair": rng.uniform(10, 240) if rng.random() < 0.7 else None, "brow": rng.uniform(15, 70),
            "side": 1 if rng.random() < 0.5 else -1}


def _pose(rng: np.random.Generator, width: int, height: int) -> tuple[float, float, float, float]:
    """Where a face sits in a frame: centre x, y, scale (px per face unit), roll (degrees)."""
    scale = height * rng.uniform(0.24, 0.3)
    return (width / 2 + rng.uniform(-0.05, 0.05) * width, height * rng.uniform(0.4, 0.47), scale,
            rng.uniform(-8.0, 8.0))


def _to_pixels(points: np.ndarray, identity: dict, pose: tuple) -> np.ndarray:
    cx, cy, scale, roll = pose
    turn = np.radians(roll)
    rotation = np.array([[np.cos(turn), -np.sin(turn)], [np.sin(turn), np.cos(turn)]])
    return (points * [identity["aspect"], identity["length"]]) @ rotation.T * scale + [cx, cy]


def _draw_face(background: Image.Image, points: np.ndarray, identity: dict, pose: tuple, teeth: bool,
               rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Draws the face through its landmarks onto a gray background: (uint8 [H, W], landmarks [68, 2] px)."""
    img = background.copy()
    draw = ImageDraw.Draw(img)
    px = _to_pixels(points, identity, pose)
    s = np.linspace(0.0, np.pi, 24)
    polygon = lambda p: [tuple(q) for q in p]  # noqa: E731
    if identity["hair"] is not None:
        hair = np.stack([1.1 * np.cos(2 * s), -0.3 + 0.95 * np.sin(2 * s)], 1)
        draw.polygon(polygon(_to_pixels(hair, identity, pose)), fill=int(identity["hair"]))
    forehead = np.stack([0.95 * np.cos(s), -0.1 - 0.9 * np.sin(s)], 1)
    skin = int(identity["skin"])
    draw.polygon(polygon(np.concatenate([px[:17], _to_pixels(forehead, identity, pose)])), fill=skin)
    width = max(2, round(0.07 * pose[2]))
    draw.line(polygon(px[27:31]), fill=skin - 35, width=1)
    draw.line(polygon(px[31:36]), fill=skin - 35, width=1)
    for brow in (px[17:22], px[22:27]):
        draw.line(polygon(brow), fill=int(identity["brow"]), width=width, joint="curve")
    for eye in (px[36:42], px[42:48]):
        opening = np.linalg.norm(eye[1] - eye[5]) / pose[2]
        draw.polygon(polygon(eye), fill=235 if opening > 0.1 else 30)
        if opening > 0.1:
            centre, radius = eye.mean(axis=0), min(0.45 * opening, 0.07) * pose[2]
            draw.ellipse((*(centre - radius), *(centre + radius)), fill=25)
    draw.polygon(polygon(px[48:60]), fill=max(skin - 70, 20))
    if np.linalg.norm(px[62] - px[66]) / pose[2] > 0.03:
        draw.polygon(polygon(px[60:68]), fill=235 if teeth else 20)
    else:
        draw.line(polygon(px[60:65]), fill=20, width=1)
    pixels = np.asarray(img, np.float32) + rng.normal(0.0, rng.uniform(2.0, 5.0), (img.height, img.width))
    return np.clip(pixels, 0, 255).astype(np.uint8), px


def _gray_background(rng: np.random.Generator, size: tuple[int, int]) -> Image.Image:
    return synthetic.draw_background(rng, size)[0].convert("L")


def _landmarked_face(expression: str, strength: float, identity: dict, pose: tuple, background: Image.Image,
                     rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    points = face_landmarks(expression, strength, identity["side"]) + rng.normal(0.0, 0.008, (68, 2))
    teeth = synthetic.EXPRESSIONS[label_tables.canonical(expression)][2] == "teeth"
    return _draw_face(background, points, identity, pose, teeth, rng)


def _subject_ids(num_train: int, num_test: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Held-out subjects (the 10 lowest ids) and training subjects, ids in 5..999 as CK+'s Sxxx."""
    if num_test < _HELD_OUT_SUBJECTS:
        raise ConfigError(f"num_test must be >= {_HELD_OUT_SUBJECTS}: FERAtt's held-out fold (kfold 0, nactor 10) "
                          f"is {_HELD_OUT_SUBJECTS} subjects, got {num_test}")
    count = max(1, min(num_train, -(-num_train // 6)))
    ids = np.sort(np.random.default_rng([seed, 3000]).choice(np.arange(5, 1000), _HELD_OUT_SUBJECTS + count,
                                                             replace=False))
    return ids[:_HELD_OUT_SUBJECTS], ids[_HELD_OUT_SUBJECTS:]


def _matlab_header() -> bytes:
    text = "MATLAB 7.3 MAT-file, Platform: GLNXA64, Created on: Mon Jan  1 00:00:00 2018 HDF5 schema 1.00 ."
    return text.ljust(116).encode("ascii") + b" " * 8 + b"\x00\x02IM"


def save_mat73(path: str, images: list[np.ndarray], points: list[np.ndarray], subjects: list[int],
               classes: list[int], names: list[str]) -> None:
    """Writes the authors' MATLAB v7.3 layout, as MATLAB does (feratt.md section 5).

    MATLAB stores arrays column-major, so HDF5 (and h5py) sees each one transposed: data [pixels x num]
    (column i = image i, column-major) reads as (num, pixels), points [68 x 2 x num] as (num, 2, 68),
    imsize [1 x 2] as (2, 1), iactor / iclass [num x 1] as (1, num), num as (1, 1); name is a cell array of
    char row vectors (object references into "#refs#"), and the file starts with MATLAB's 512-byte header.
    """
    import h5py

    height, width = images[0].shape
    fields = {"data": (np.stack([im.ravel(order="F") for im in images], axis=1), "uint8"),
              "points": (np.stack(points, axis=2).astype(np.float64), "double"),
              "imsize": (np.array([[height, width]], np.float64), "double"),
              "iactor": (np.array(subjects, np.float64)[:, None], "double"),
              "iclass": (np.array(classes, np.float64)[:, None], "double"),
              "num": (np.array([[len(images)]], np.float64), "double")}
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with h5py.File(path, "w", userblock_size=512) as f:
        for key, (value, matlab_class) in fields.items():
            f.create_dataset(key, data=value.T).attrs["MATLAB_class"] = np.bytes_(matlab_class)
        refs = f.create_group("#refs#")
        cells = []
        for k, text in enumerate(names):
            chars = refs.create_dataset(f"n{k}", data=np.frombuffer(text.encode("ascii"), np.uint8)[:, None]
                                        .astype(np.uint16))
            chars.attrs["MATLAB_class"], chars.attrs["MATLAB_int_decode"] = np.bytes_("char"), np.int32(2)
            cells.append(chars.ref)
        f.create_dataset("name", data=np.array([cells], dtype=h5py.ref_dtype)).attrs["MATLAB_class"] = \
            np.bytes_("cell")
    with open(path, "r+b") as f:
        f.write(_matlab_header())


def _write_feratt_mat(out: str, name: str, raw_order: tuple[str, ...], num_train: int, num_test: int, seed: int,
                      size: int) -> None:
    test_ids, train_ids = _subject_ids(num_train, num_test, seed)
    samples = []
    for split, (n, ids) in enumerate(((num_train, train_ids), (num_test, test_ids))):
        for i, raw in enumerate(_balanced_labels(n, len(raw_order), seed, split)):
            subject, rng = int(ids[i % len(ids)]), _rng(seed, split, i)
            background = _gray_background(rng, (size, size))
            image, points = _landmarked_face(raw_order[raw], 1.0, _identity(seed, subject), _pose(rng, size, size),
                                             background, rng)
            samples.append((subject, image, points, int(raw) + 1, f"S{subject:03d}_{split}{i:05d}"))
    samples.sort(key=lambda sample: sample[0])  # by subject, as the authors' files
    subjects, images, points, classes, names = zip(*samples)
    save_mat73(os.path.join(out, name, f"{name}.mat"), list(images), list(points), list(subjects), list(classes),
               list(names))


def _write_ck(out: str, num_train: int, num_test: int, seed: int, size: int, variant: str) -> None:
    _write_feratt_mat(out, "ck", label_tables.CK_RAW, num_train, num_test, seed, size)


def _write_bu3dfe(out: str, num_train: int, num_test: int, seed: int, size: int, variant: str) -> None:
    _write_feratt_mat(out, "bu3dfe", label_tables.BU3DFE_RAW[:7], num_train, num_test, seed, size)


def _write_sequence(out: str, subject: int, sequence: int, code: int | None, identity: dict,
                    frame: tuple[int, int], rng: np.random.Generator) -> None:
    """One CK+ sequence, neutral to apex: frames, a landmark file per frame, the emotion file if labelled."""
    folder = f"S{subject:03d}/{sequence:03d}"
    background, pose = _gray_background(rng, frame), _pose(rng, *frame)
    expression = label_tables.CK_RAW[code] if code else "Neutral"
    count = int(rng.integers(4, 8))
    for t, strength in enumerate(np.linspace(0.0, 1.0, count), start=1):
        drift = (pose[0] + rng.normal(0, 0.5), pose[1] + rng.normal(0, 0.5), pose[2], pose[3] + rng.normal(0, 0.5))
        image, points = _landmarked_face(expression, strength, identity, drift, background, rng)
        stem = f"S{subject:03d}_{sequence:03d}_{t:08d}"
        _save(Image.fromarray(image), os.path.join(out, "cohn-kanade-images", folder, f"{stem}.png"))
        os.makedirs(os.path.join(out, "Landmarks", folder), exist_ok=True)
        with open(os.path.join(out, "Landmarks", folder, f"{stem}_landmarks.txt"), "w") as f:
            f.writelines(f"   {x:.7e}   {y:.7e}\n" for x, y in points)
    os.makedirs(os.path.join(out, "Emotion", folder), exist_ok=True)  # the release has a folder per sequence
    if code:
        with open(os.path.join(out, "Emotion", folder, f"{stem}_emotion.txt"), "w") as f:
            f.write(f"   {float(code):.7e}\n")


def _write_ckplus_release(out: str, num_train: int, num_test: int, seed: int, size: int, variant: str) -> None:
    frame = (round(size * 640 / 490), size)
    test_ids, train_ids = _subject_ids(num_train, num_test, seed)
    sequences = collections.Counter()
    for split, (n, ids) in enumerate(((num_train, train_ids), (num_test, test_ids))):
        for i, code in enumerate(_balanced_labels(n, 7, seed, split) + 1):  # CK+ emotion codes 1..7
            subject = int(ids[i % len(ids)])
            sequences[subject] += 1
            _write_sequence(out, subject, sequences[subject], int(code), _identity(seed, subject), frame,
                            _rng(seed, split, i))
    for k, subject in enumerate(sorted(sequences)[::3]):  # sequences without an emotion label, as in CK+
        _write_sequence(out, subject, sequences[subject] + 1, None, _identity(seed, subject), frame, _rng(seed, 2, k))


def _write_backgrounds(out: str, num_train: int, num_test: int, seed: int, size: int, variant: str) -> None:
    """num_train pictures (a flat folder of .jpg, as FERAtt's COCO folder): cluttered colour, a light ramp."""
    height = max(32, round(size * 0.75))
    ramp_x, ramp_y = np.meshgrid(np.linspace(-1, 1, size), np.linspace(-1, 1, height))
    for i in range(num_train):
        rng = _rng(seed, 0, i)
        picture = np.asarray(synthetic.draw_background(rng, (size, height))[0], np.float32)
        angle = rng.uniform(0, 2 * np.pi)
        light = rng.uniform(-90, 60) + rng.uniform(0, 60) * (np.cos(angle) * ramp_x + np.sin(angle) * ramp_y)
        pixels = picture + light[..., None] + rng.normal(0, 8, picture.shape)
        _save(Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8)), os.path.join(out, f"{i:06d}.jpg"))


_WRITERS = {"rafdb": _write_rafdb, "affectnet": _write_affectnet, "celeba": _write_celeba, "expw": _write_expw,
            "afew": _write_afew, "ckplus": _write_ckplus, "ck": _write_ck, "bu3dfe": _write_bu3dfe,
            "ckplus_release": _write_ckplus_release, "backgrounds": _write_backgrounds}


def make_synthetic(layout: str, out: str, *, num_train: int = 1000, num_test: int = 200, seed: int = 0,
                   image_size: int | None = None, variant: str | None = None) -> str:
    """Writes a synthetic dataset into the new directory `out`, atomically (temp dir, then rename).

    Args:
        layout: "rafdb", "affectnet", "celeba", "expw", "afew", "ckplus", or FERAtt's "ck", "bu3dfe",
            "ckplus_release" and "backgrounds".
        out: target directory; must not exist or be empty.
        num_train, num_test: images (AFEW, CK+: videos; CK+ release: labelled sequences) per split (see the
            module table for CelebA's val, ExpW, CK+'s folds, FERAtt's subjects (num_test >= 10) and the
            background folder).
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
