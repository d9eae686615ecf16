"""FERAtt's datasets: CK+ and BU-3DFE faces with 68 landmarks, their "dark" crop, and the synthetic composites.

Readers (shared/reference/feratt.md, section 5; upstream pedrodiamel/ferattention `torchlib/datasets/fer.py`):

| name | layout |
|---|---|
| "ck", "bu3dfe" | the authors' MATLAB v7.3 files `<root>/ck/ck.mat`, `<root>/bu3dfe/bu3dfe.mat` (upstream's data dir) |
| "ckplus_release" | the official CK+ release: `cohn-kanade-images/`, `Emotion/`, `Landmarks/` |
| "<name>_synthetic" for each of them | its dark faces composited onto background pictures (`composition`) |

Examples: real faces {"image", "label", "landmarks": float32 [68, 2] (x, y) in the decoded image's pixels}
(+ "x_org", the same image, with `x_org=True`); composites {"image" (x_img), "x_org", "label"}, both
`FaceComposition`s that the preprocessing op `feratt_compose` renders (`shared_draws`: one geometry).

Labels follow FERAtt's FER+ order (`labels.FERPLUS`: Neutral, Happy, Surprise, Sad, Anger, Disgust, Fear,
Contempt), remapped from each file's raw order as upstream's `toferp` does; BU-3DFE has the first 7.

Folds (`kfold`, `nactor`, upstream's `--kfold --nactor`): the subjects at positions kfold*nactor ..
(kfold+1)*nactor - 1 of the sorted unique subject ids are the held-out split ("test", or "val"), all others
"train"; no subject is in both.

The dark crop (`dark_face`, upstream `FERDarkClassicDataset`): rotate so that the inner eye corners
(landmarks 39, 42) are level, crop the landmark box plus 0.2 * eye-corner distance, mask the convex hull of
the landmarks, pad to a square and resize to 128 (Lanczos; the mask bilinear), then
clip((img / 255 + 0.2) * mask, 0, 1) * 255: the face brightened by 0.2 on black. Unlike upstream, the image
and the landmarks are rotated about the same point (upstream turns the image about its centre but the
landmarks about their mean, which shifts the mask off the face unless the two coincide, and shears them on
non-square images), the landmarks are shifted by the crop's integer origin (upstream: by the float box
corner, up to 1 px off), the eye angle comes from atan2 (upstream's homogeneous-line formula flips by 180
degrees when the eye line passes below the landmark mean), and a box reaching past the image is padded with
black instead of clipped, so the crop depends on the landmarks only.
"""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from typing import Any

import cv2
import numpy as np
from PIL import Image

from fer_jax.data import composition
from fer_jax.data import labels as label_tables
from fer_jax.data.sources import (IMAGE_EXTENSIONS, MULTICLASS, Source, check_split, decode_image, register,
                                  require_dir)
from fer_jax.errors import ConfigError, DatasetError

MAT_FIELDS = ("data", "points", "imsize", "iactor", "iclass", "num")
MAT_LAYOUT = ("{root}/{file}: a MATLAB v7.3 (HDF5) file with data (num x pixels, each image stored column-"
              "major), points (num x 2 x 68 landmarks), imsize, iactor (subject), iclass (1-based class), num")
RELEASE_LAYOUT = ("the CK+ release: <root>/cohn-kanade-images/Sxxx/nnn/Sxxx_nnn_<frame>.png, "
                  "<root>/Emotion/Sxxx/nnn/Sxxx_nnn_<frame>_emotion.txt (one number, the emotion code 1..7) "
                  "and <root>/Landmarks/Sxxx/nnn/Sxxx_nnn_<frame>_landmarks.txt (68 lines 'x y')")
BACKGROUNDS_LAYOUT = "a folder of background pictures (e.g. COCO's .jpg), or backgrounds=None for a plain canvas"
CROPS = ("dark", "none")
SAMPLINGS = ("class_cycle", "sequential")
DARK_SIZE = 128
_HELD_OUT = {"train": "train", "test": "test", "val": "test", "validation": "test"}


# --- The dark crop -------------------------------------------------------------------------------------

def _square(image: np.ndarray, size: int, interpolation: int) -> tuple[np.ndarray, tuple[int, int], int]:
    """pytvision `resize_image(..., 'square')`: pad the short side (black, floor before), resize to size.

    Returns the image, the (left, top) padding and the padded side.
    """
    h, w = image.shape[:2]
    side, left, top = max(h, w), (max(h, w) - w) // 2, (max(h, w) - h) // 2
    if (h, w) == (size, size):
        return image, (0, 0), size
    if h != w:
        image = cv2.copyMakeBorder(image, top, side - h - top, left, side - w - left, cv2.BORDER_CONSTANT, value=0)
    return cv2.resize(image, (size, size), interpolation=interpolation), (left, top), side


def dark_geometry(landmarks: np.ndarray) -> tuple[np.ndarray, tuple[int, int], np.ndarray]:
    """The crop as a 2x3 matrix from image to crop pixels, the crop's (width, height), and the landmarks there.

    Raises:
        ValueError: the landmarks are degenerate (inner eye corners coincide).
    """
    inner_right, inner_left = landmarks[39], landmarks[42]
    distance = float(np.hypot(*(inner_left - inner_right)))
    if not distance > 0:
        raise ValueError("the inner eye corners (landmarks 39 and 42) coincide")
    angle = math.degrees(math.atan2(inner_left[1] - inner_right[1], inner_left[0] - inner_right[0]))
    center = landmarks.mean(axis=0)
    matrix = cv2.getRotationMatrix2D((float(center[0]), float(center[1])), angle, 1.0)
    turned = landmarks @ matrix[:, :2].T + matrix[:, 2]
    low = np.floor(turned.min(axis=0) - 0.2 * distance)
    high = np.floor(turned.max(axis=0) + 0.2 * distance)
    matrix[:, 2] -= low
    return matrix, (int(high[0] - low[0]), int(high[1] - low[1])), turned - low


def dark_face(image: np.ndarray, landmarks: np.ndarray, size: int = DARK_SIZE) -> tuple[np.ndarray, np.ndarray]:
    """Upstream's dark face: uint8 gray [size, size] (face brightened on black) and its landmarks there.

    Args:
        image: uint8 gray [H, W].
        landmarks: float [68, 2] (x, y) in `image` pixels.
    """
    matrix, (width, height), points = dark_geometry(landmarks)
    crop = cv2.warpAffine(image, matrix, (width, height), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT,
                          borderValue=0)
    mask = np.zeros((height, width), np.float64)
    cv2.fillPoly(mask, [cv2.convexHull(points.astype(np.int32))], 1.0)
    crop, pad, side = _square(crop, size, cv2.INTER_LANCZOS4)
    mask, _, _ = _square(mask, size, cv2.INTER_LINEAR)
    dark = (np.clip((crop / 255.0 + 0.2) * mask, 0.0, 1.0) * 255.0).astype(np.uint8)
    return dark, dark_landmarks(points, pad, side, size)


def dark_landmarks(points: np.ndarray, pad: tuple[int, int], side: int, size: int = DARK_SIZE) -> np.ndarray:
    """Crop-pixel landmarks -> dark-face pixels (padding, then OpenCV's half-pixel resize mapping)."""
    return (points + np.asarray(pad) + 0.5) * (size / side) - 0.5


def _dark_landmarks_of(landmarks: np.ndarray) -> np.ndarray:
    _, (width, height), points = dark_geometry(landmarks)
    side = max(width, height)
    return dark_landmarks(points, ((side - width) // 2, (side - height) // 2), side)


# --- Real faces ----------------------------------------------------------------------------------------

class FaceSource(Source):
    """Gray face images with 68 landmarks, a subject and a label each; raw or dark-cropped.

    Attributes:
        names: per example, an image path (release) or '<file>#<index>' (MATLAB file).
        subjects: int [N], the subject id of each example.
        raw_landmarks: float64 [N, 68, 2] in the stored image's pixels.
        crop: "dark" or "none".
        options_text: the reader options, as the repr shows them.
    """

    def __init__(self, *, dataset: str, root: str, split: str, layout: str, names: Sequence[str],
                 labels: np.ndarray, subjects: np.ndarray, landmarks: np.ndarray, class_names: Sequence[str],
                 crop: str, images: np.ndarray | None = None, x_org: bool = False, options: str = ""):
        """`images`: uint8 [N, h, w] held in memory (MATLAB file), or None to read the files `names`."""
        self.names = list(names)
        self.subjects = np.asarray(subjects, dtype=np.int64)
        self.raw_landmarks = np.asarray(landmarks, dtype=np.float64)
        self.crop = crop
        self.options_text = options
        self.image_entries = ("image", "x_org") if x_org else ("image",)
        self._images = images
        self._landmarks = self.raw_landmarks
        if crop == "dark" and len(self.names):
            self._landmarks = np.stack([self._dark_landmarks(k, dataset, layout) for k in range(len(self.names))])
        super().__init__(dataset=dataset, root=root, split=split, labels=labels, class_names=class_names,
                         task=MULTICLASS, layout=layout, options=options)

    def _dark_landmarks(self, index: int, dataset: str, layout: str) -> np.ndarray:
        try:
            return _dark_landmarks_of(self.raw_landmarks[index])
        except ValueError as e:
            raise DatasetError(f"{dataset}: {self.names[index]}: no dark crop, {e}; expected {layout}") from None

    def __len__(self) -> int:
        return len(self.names)

    def __getitem__(self, index: int) -> dict[str, Any]:
        index = int(index)
        return {"index": index, "path": self.names[index], "label": self.labels[index],
                "subject": self.subjects[index], "landmarks": self._landmarks[index].astype(np.float32)}

    def example(self, index: int) -> dict[str, Any]:
        item = self[index]
        ref = {"index": item["index"], "path": item["path"]}
        return {**{key: ref for key in self.image_entries}, "label": item["label"], "landmarks": item["landmarks"]}

    def face(self, index: int) -> np.ndarray:
        """uint8 gray [H, W]: the stored image (crop "none") or its dark face. Raises `UnreadableImage`."""
        image = self._images[index] if self._images is not None else _read_gray(self.names[index])
        return image if self.crop == "none" else dark_face(image, self.raw_landmarks[index])[0]

    def decode(self, ref: dict[str, Any]) -> Image.Image:
        return Image.fromarray(cv2.cvtColor(self.face(ref["index"]), cv2.COLOR_GRAY2RGB))


def held_out_subjects(subjects: np.ndarray, kfold: int, nactor: int, dataset: str) -> np.ndarray:
    """Upstream's fold: the sorted unique subject ids at positions kfold*nactor .. (kfold+1)*nactor - 1."""
    for name, value in (("kfold", kfold), ("nactor", nactor)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 0:
            raise ConfigError(f"{dataset}: {name} must be an integer >= 0, got {value!r}")
    actors = np.unique(subjects)
    if (kfold + 1) * nactor > len(actors):
        raise ConfigError(f"{dataset}: kfold={kfold} with nactor={nactor} needs {(kfold + 1) * nactor} subjects, "
                          f"the data has {len(actors)}")
    return actors[kfold * nactor:(kfold + 1) * nactor]


def _fer_labels(raw: np.ndarray, raw_order: Sequence[str], class_names: Sequence[str], dataset: str,
                where: str) -> np.ndarray:
    """0-based raw classes -> FER+ indices (upstream's `toferp`), refusing classes the dataset lacks."""
    perm = label_tables.remap_permutation(raw_order, label_tables.FERPLUS)
    labels = perm[raw]
    bad = labels >= len(class_names)
    if bad.any():
        raise DatasetError(f"{dataset}: {where}: class {raw_order[raw[bad][0]]} (raw class {raw[bad][0] + 1}) is "
                           f"not one of the {len(class_names)} classes {list(class_names)}")
    return labels


def _check_crop(dataset: str, crop: str) -> None:
    if crop not in CROPS:
        raise ConfigError(f"{dataset}: crop must be one of {CROPS}, got {crop!r}")


def _path(root: str, relative: str) -> str:
    return os.path.join(root, os.path.expanduser(relative))


# --- MATLAB v7.3 files ---------------------------------------------------------------------------------

def read_mat(path: str, dataset: str, layout: str) -> dict[str, np.ndarray]:
    """The fields of the authors' .mat file as upstream reads them (h5py sees MATLAB arrays transposed).

    Returns {"images": uint8 [N, h, w], "landmarks": float64 [N, 68, 2], "subjects": int [N],
    "classes": int [N] (0-based raw)}; image i is data[i].reshape(imsize).T, as upstream.

    Raises:
        DatasetError: missing file, not HDF5, missing field, or a field of the wrong shape or range.
    """
    import h5py

    if not os.path.isfile(path):
        raise DatasetError(f"{dataset}: file {path} not found; expected {layout}")
    if not h5py.is_hdf5(path):
        raise DatasetError(f"{dataset}: {path} is not a MATLAB v7.3 (HDF5) file; save it in MATLAB with "
                           f"save(..., '-v7.3'); expected {layout}")
    try:
        with h5py.File(path, "r") as f:
            missing = [k for k in MAT_FIELDS if k not in f]
            if missing:
                raise DatasetError(f"{dataset}: {path} lacks the field(s) {missing}; expected {layout}")
            fields = {k: np.asarray(f[k]) for k in MAT_FIELDS}
    except OSError as e:
        raise DatasetError(f"{dataset}: cannot read {path} ({e}); expected {layout}") from None
    return _mat_arrays(fields, f"{dataset}: {path}", layout)


def _mat_arrays(fields: dict[str, np.ndarray], where: str, layout: str) -> dict[str, np.ndarray]:
    def bad(field: str, what: str) -> DatasetError:
        return DatasetError(f"{where}: field '{field}' {what}; expected {layout}")

    num = fields["num"].ravel()
    if num.size != 1 or num[0] != int(num[0]) or num[0] < 1:
        raise bad("num", f"is {num.tolist()}, not one positive count")
    n = int(num[0])
    imsize = fields["imsize"].ravel()
    if imsize.size != 2 or np.any(imsize < 1) or np.any(imsize != np.round(imsize)):
        raise bad("imsize", f"is {imsize.tolist()}, not two positive sizes")
    rows, cols = (int(v) for v in imsize)
    data = fields["data"]
    if data.ndim != 2 or data.shape != (n, rows * cols):
        raise bad("data", f"has shape {data.shape}, not (num, prod(imsize)) = {(n, rows * cols)}")
    if not np.issubdtype(data.dtype, np.number) or data.min() < 0 or data.max() > 255:
        raise bad("data", "is not gray levels 0..255")
    points = fields["points"]
    if points.shape[:1] != (n,) or [d for d in points.shape[1:] if d != 1] != [2, 68]:
        raise bad("points", f"has shape {points.shape}, not (num, 2, 68) (a 68x2xnum MATLAB array)")
    if not np.all(np.isfinite(points)):
        raise bad("points", "holds values that are not finite")
    columns = {}
    for key in ("iactor", "iclass"):
        values = fields[key].ravel()
        if values.size != n or np.any(values != np.round(values)):
            raise bad(key, f"has {values.size} values, not num = {n} integers")
        columns[key] = values.astype(np.int64)
    images = data.reshape(n, rows, cols).transpose(0, 2, 1).astype(np.uint8)  # upstream: reshape(imsize).T
    landmarks = points.reshape(n, 2, 68).transpose(0, 2, 1).astype(np.float64)
    return {"images": np.ascontiguousarray(images), "landmarks": landmarks, "subjects": columns["iactor"],
            "classes": columns["iclass"] - 1}


def _mat_source(dataset: str, root: str, split: str, *, mat_file: str, raw_order: Sequence[str],
                class_names: Sequence[str], kfold: int, nactor: int, crop: str, x_org: bool) -> FaceSource:
    split = check_split(dataset, split, _HELD_OUT)
    _check_crop(dataset, crop)
    layout = MAT_LAYOUT.format(root="<root>", file=mat_file)
    require_dir(root, dataset, layout)
    path = _path(root, mat_file)
    arrays = read_mat(path, dataset, layout)
    classes = arrays["classes"]
    if classes.min() < 0 or classes.max() >= len(raw_order):
        value = int(classes[(classes < 0) | (classes >= len(raw_order))][0]) + 1
        raise DatasetError(f"{dataset}: {path}: field 'iclass' holds {value}, outside 1..{len(raw_order)}; "
                           f"expected {layout}")
    labels = _fer_labels(classes, raw_order, class_names, dataset, path)
    held = np.isin(arrays["subjects"], held_out_subjects(arrays["subjects"], kfold, nactor, dataset))
    keep = np.flatnonzero(held if split == "test" else ~held)
    images = arrays["images"][keep]
    return FaceSource(dataset=dataset, root=root, split=split, layout=layout,
                      names=[f"{path}#{i}" for i in keep], labels=labels[keep], subjects=arrays["subjects"][keep],
                      landmarks=arrays["landmarks"][keep], class_names=class_names, crop=crop,
                      images=images, x_org=x_org,
                      options=f"kfold={kfold}, nactor={nactor}, crop={crop!r}, mat_file={mat_file!r}")


@register("ck")
def ck(root: str, split: str, *, kfold: int = 0, nactor: int = 10, crop: str = "dark",
       mat_file: str = "ck/ck.mat", x_org: bool = False) -> FaceSource:
    """CK+ from the authors' `ck.mat` (upstream `ck`; with crop="dark", the default, upstream `ckdark`).

    Args:
        root: upstream's data directory (the one holding `ck/ck.mat`).
        split: "train", or the held-out fold "test" ("val" is accepted; upstream calls it "val").
        kfold, nactor: the fold (module docstring); the recipes use kfold 0, nactor 10.
        crop: "dark" (FERAtt's training faces) or "none" (the stored images, which upstream evaluates on).
        mat_file: the file, relative to `root` or absolute.
        x_org: also give the image as "x_org" (the reconstruction target for FERAtt's loss on real faces).
    """
    return _mat_source("CK+", root, split, mat_file=mat_file, raw_order=label_tables.CK_RAW,
                       class_names=label_tables.FERPLUS, kfold=kfold, nactor=nactor, crop=crop, x_org=x_org)


@register("bu3dfe")
def bu3dfe(root: str, split: str, *, kfold: int = 0, nactor: int = 10, crop: str = "dark",
           mat_file: str = "bu3dfe/bu3dfe.mat", x_org: bool = False) -> FaceSource:
    """BU-3DFE from the authors' `bu3dfe.mat`, 7 classes (no Contempt); options as `ck`."""
    return _mat_source("BU-3DFE", root, split, mat_file=mat_file, raw_order=label_tables.BU3DFE_RAW,
                       class_names=label_tables.FERPLUS[:7], kfold=kfold, nactor=nactor, crop=crop, x_org=x_org)


# --- The official CK+ release --------------------------------------------------------------------------

def _read_numbers(path: str, count: int, what: str) -> np.ndarray:
    """The whitespace-separated numbers of a CK+ text file; DatasetError unless there are `count`."""
    if not os.path.isfile(path):
        raise DatasetError(f"CK+: {what} file {path} not found; expected {RELEASE_LAYOUT}")
    try:
        with open(path, encoding="utf-8") as f:
            values = np.array([float(token) for token in f.read().split()])
    except (OSError, UnicodeDecodeError, ValueError) as e:
        raise DatasetError(f"CK+: cannot read {path} ({e}); expected {RELEASE_LAYOUT}") from None
    if values.size != count or not np.all(np.isfinite(values)):
        raise DatasetError(f"CK+: {path} holds {values.size} numbers, not {count}; expected {RELEASE_LAYOUT}")
    return values


def _release_sequences(emotions: str) -> list[tuple[str, str, str]]:
    """(subject, sequence, labelled frame stem) of every sequence with an emotion file, sorted."""
    found = []
    for subject in sorted(os.listdir(emotions)):
        subject_dir = os.path.join(emotions, subject)
        if not os.path.isdir(subject_dir):
            continue
        for sequence in sorted(os.listdir(subject_dir)):
            labelled = sorted(f for f in os.listdir(os.path.join(subject_dir, sequence))
                              if f.endswith("_emotion.txt")) if os.path.isdir(os.path.join(subject_dir, sequence)) \
                else []
            if len(labelled) > 1:
                raise DatasetError(f"CK+: {os.path.join(subject_dir, sequence)} holds {len(labelled)} emotion "
                                   f"files, not one; expected {RELEASE_LAYOUT}")
            if labelled:
                found.append((subject, sequence, labelled[0][:-len("_emotion.txt")]))
    return found


def _subject_id(subject: str, where: str) -> int:
    if len(subject) < 2 or subject[0] != "S" or not subject[1:].isdigit():
        raise DatasetError(f"CK+: {where}: subject folder {subject!r} is not 'S<number>'; expected {RELEASE_LAYOUT}")
    return int(subject[1:])


def _release_frames(root_images: str, root_emotions: str, root_landmarks: str, peak_frames: int,
                    neutral_frames: int) -> tuple[list[str], list[int], list[int], list[str]]:
    """Paths, 0-based raw classes (CK+ codes), subject ids and landmark files of the chosen frames."""
    paths, classes, subjects, marks = [], [], [], []
    for subject, sequence, stem in _release_sequences(root_emotions):
        emotion_file = os.path.join(root_emotions, subject, sequence, f"{stem}_emotion.txt")
        code = _read_numbers(emotion_file, 1, "emotion")[0]
        if code != int(code) or not 1 <= code <= 7:
            raise DatasetError(f"CK+: {emotion_file} holds {code:g}, not an emotion code 1..7; "
                               f"expected {RELEASE_LAYOUT}")
        folder = os.path.join(root_images, subject, sequence)
        frames = sorted(f for f in os.listdir(folder) if f.lower().endswith(IMAGE_EXTENSIONS)) \
            if os.path.isdir(folder) else []
        stems = [os.path.splitext(f)[0] for f in frames]
        if stem not in stems:
            raise DatasetError(f"CK+: {emotion_file} labels frame {stem}, which {folder} does not hold; "
                               f"expected {RELEASE_LAYOUT}")
        peak = stems.index(stem)
        chosen = [(k, 0) for k in range(min(neutral_frames, len(frames)))]
        chosen += [(k, int(code)) for k in range(max(peak + 1 - peak_frames, 0), peak + 1) if k >= neutral_frames]
        for k, raw in chosen:
            paths.append(os.path.join(folder, frames[k]))
            classes.append(raw)
            subjects.append(_subject_id(subject, emotion_file))
            marks.append(os.path.join(root_landmarks, subject, sequence, f"{stems[k]}_landmarks.txt"))
    return paths, classes, subjects, marks


def _read_gray(path: str) -> np.ndarray:
    return np.asarray(decode_image(path).convert("L"))


@register("ckplus_release")
def ckplus_release(root: str, split: str, *, kfold: int = 0, nactor: int = 10, crop: str = "dark",
                   peak_frames: int = 1, neutral_frames: int = 1, images: str = "cohn-kanade-images",
                   emotions: str = "Emotion", landmarks: str = "Landmarks", x_org: bool = False) -> FaceSource:
    """CK+ as released: the labelled sequences' last `peak_frames` frames with their emotion and first
    `neutral_frames` frames as Neutral; 8 classes in FER+ order. Color frames are read as gray.

    Args:
        root: the folder holding the three release folders.
        split, kfold, nactor, crop, x_org: as `ck`; the subject of a frame is its `Sxxx` folder.
        peak_frames, neutral_frames: frames per labelled sequence (the emotion file names the last frame).
        images, emotions, landmarks: the release folders, relative to `root` or absolute.
    """
    split = check_split("CK+", split, _HELD_OUT)
    _check_crop("CK+", crop)
    for name, value, low in (("peak_frames", peak_frames, 1), ("neutral_frames", neutral_frames, 0)):
        if isinstance(value, bool) or not isinstance(value, int) or value < low:
            raise ConfigError(f"CK+: {name} must be an integer >= {low}, got {value!r}")
    require_dir(root, "CK+", RELEASE_LAYOUT)
    folders = [require_dir(_path(root, p), "CK+", RELEASE_LAYOUT) for p in (images, emotions, landmarks)]
    paths, classes, subjects, marks = _release_frames(*folders, peak_frames, neutral_frames)
    if not paths:
        raise DatasetError(f"CK+: {folders[1]} holds no emotion file; expected {RELEASE_LAYOUT}")
    subjects = np.array(subjects)
    labels = _fer_labels(np.array(classes), label_tables.CK_RAW, label_tables.FERPLUS, "CK+", folders[1])
    held = np.isin(subjects, held_out_subjects(subjects, kfold, nactor, "CK+"))
    keep = np.flatnonzero(held if split == "test" else ~held)
    points = np.stack([_read_numbers(marks[i], 136, "landmarks").reshape(68, 2) for i in keep]) if len(keep) \
        else np.zeros((0, 68, 2))
    kept = [paths[i] for i in keep]
    return FaceSource(dataset="CK+", root=root, split=split, layout=RELEASE_LAYOUT, names=kept,
                      labels=labels[keep], subjects=subjects[keep], landmarks=points,
                      class_names=label_tables.FERPLUS, crop=crop, x_org=x_org,
                      options=f"kfold={kfold}, nactor={nactor}, crop={crop!r}, peak_frames={peak_frames}, "
                              f"neutral_frames={neutral_frames}")


# --- Synthetic composites ------------------------------------------------------------------------------

def background_files(folder: str, dataset: str) -> list[str]:
    """The pictures of a flat background folder, sorted; DatasetError if missing or without pictures."""
    if not os.path.isdir(folder):
        raise DatasetError(f"{dataset}: background folder {folder} not found; expected {BACKGROUNDS_LAYOUT}")
    files = sorted(f for f in os.listdir(folder) if f.lower().endswith(IMAGE_EXTENSIONS)
                   and os.path.isfile(os.path.join(folder, f)))
    if not files:
        raise DatasetError(f"{dataset}: background folder {folder} holds no pictures ({', '.join(IMAGE_EXTENSIONS)}); "
                           f"expected {BACKGROUNDS_LAYOUT}")
    return [os.path.join(folder, f) for f in files]


class CompositeSource(Source):
    """`count` synthetic samples: example i composites one dark face onto one background picture.

    Which face and picture example i uses is fixed by (`sample_seed`, i); the composition's random
    draws come from the pipeline (`feratt_compose`). Sampling "class_cycle" (upstream's
    `SecuencialSyntheticFaceDataset`, training) gives example i the class i mod C (C = classes present)
    and a face of that class; "sequential" (upstream's `SyntheticFaceDataset`, eval.py) uses face i mod N.
    Pictures are drawn uniformly from the whole folder (upstream's `random.randint(1, n - 1)` never picks
    the first one, and fails on a folder of one picture).
    """

    image_entries = ("image", "x_org")
    shared_draws = True

    def __init__(self, faces: FaceSource, *, dataset: str, backgrounds: list[str] | None, count: int,
                 sampling: str, sample_seed: int, options: composition.GeneratorOptions, extra: str):
        self.faces, self.backgrounds, self.options = faces, backgrounds, options
        present = np.unique(faces.labels)
        if sampling == "class_cycle":
            labels = present[np.arange(count) % len(present)]
            draw = np.random.default_rng([sample_seed, 0]).integers(0, 2**31, count)
            members = {c: np.flatnonzero(faces.labels == c) for c in present}
            self.face_index = np.empty(count, np.int64)
            for c, idx in members.items():
                chosen = labels == c
                self.face_index[chosen] = idx[draw[chosen] % len(idx)]
        else:
            self.face_index = np.arange(count) % len(faces)
            labels = faces.labels[self.face_index]
        self.background_index = (np.random.default_rng([sample_seed, 1]).integers(0, len(backgrounds), count)
                                 if backgrounds else None)
        self._cache: dict[int, np.ndarray] = {}
        super().__init__(dataset=dataset, root=faces.root, split=faces.split, labels=labels,
                         class_names=faces.class_names, task=MULTICLASS, layout=faces.layout, options=extra)

    def __getstate__(self):
        return {**self.__dict__, "_cache": {}}

    def __len__(self) -> int:
        return len(self.face_index)

    def __getitem__(self, index: int) -> dict[str, Any]:
        index = int(index)
        background = None if self.background_index is None else self.backgrounds[self.background_index[index]]
        return {"index": index, "face": int(self.face_index[index]), "background": background,
                "label": self.labels[index]}

    def example(self, index: int) -> dict[str, Any]:
        item = self[index]
        face = {"face": item["face"], "path": self.faces.names[item["face"]]}
        return {"image": {**face, "role": "image", "background": item["background"],
                          "path": item["background"] or face["path"]},
                "x_org": {**face, "role": "x_org"}, "label": item["label"]}

    def decode(self, ref: dict[str, Any]) -> composition.FaceComposition:
        face = self._cache.get(ref["face"])
        if face is None:
            face = self._cache.setdefault(ref["face"], self.faces.face(ref["face"]))
        background = None
        if ref["role"] == "image" and ref["background"] is not None:
            background = np.asarray(decode_image(ref["background"]))
        return composition.FaceComposition(face, background, ref["role"], self.options,
                                           self.faces.names[ref["face"]])


def _synthetic(dataset: str, faces: FaceSource, root: str, backgrounds: str | None, count: int | None,
               sampling: str, sample_seed: int, options: dict[str, Any]) -> CompositeSource:
    if sampling not in SAMPLINGS:
        raise ConfigError(f"{dataset}: sampling must be one of {SAMPLINGS}, got {sampling!r}")
    for name, value, low in (("count", count, 1), ("sample_seed", sample_seed, 0)):
        if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < low):
            raise ConfigError(f"{dataset}: {name} must be an integer >= {low}, got {value!r}")
    try:
        generator = composition.GeneratorOptions(**options)
    except ConfigError as e:
        raise ConfigError(f"{dataset}: {e}") from None
    folder = None if backgrounds is None else _path(root, backgrounds)
    files = None if folder is None else background_files(folder, dataset)
    count = len(faces) if count is None else count
    extra = (f"{faces.options_text}, backgrounds={folder!r}, count={count}, sampling={sampling!r}, "
             f"sample_seed={sample_seed}, {generator}")
    return CompositeSource(faces, dataset=dataset, backgrounds=files, count=count, sampling=sampling,
                           sample_seed=sample_seed, options=generator, extra=extra)


@register("ck_synthetic")
def ck_synthetic(root: str, split: str, *, backgrounds: str | None, count: int | None = None,
                 sampling: str = "class_cycle", sample_seed: int = 0, angle: float = 30.0, translation: float = 0.2,
                 warp: float = 0.1, factor: float = 0.2, illuminate: bool = True, kfold: int = 0,
                 nactor: int = 10, mat_file: str = "ck/ck.mat") -> CompositeSource:
    """Synthetic CK+: dark faces of `ck` (this split's subjects) on background pictures.

    Args:
        root, split, kfold, nactor, mat_file: the faces, as `ck`.
        backgrounds: the picture folder (relative to `root` or absolute), or None for upstream's plain
            canvas; required, so that a recipe never composites onto nothing by accident.
        count: examples (upstream's --trainiteration / --testiteration; default: the number of faces).
        sampling: "class_cycle" (training) or "sequential" (upstream's eval.py); see `CompositeSource`.
        sample_seed: fixes which face and picture each example uses.
        angle, translation, warp, factor, illuminate: `composition.GeneratorOptions` (train.py's values).
    """
    faces = ck(root, split, kfold=kfold, nactor=nactor, crop="dark", mat_file=mat_file)
    return _synthetic("CK+ synthetic", faces, root, backgrounds, count, sampling, sample_seed,
                      dict(angle=angle, translation=translation, warp=warp, factor=factor, illuminate=illuminate))


@register("bu3dfe_synthetic")
def bu3dfe_synthetic(root: str, split: str, *, backgrounds: str | None, count: int | None = None,
                     sampling: str = "class_cycle", sample_seed: int = 0, angle: float = 30.0,
                     translation: float = 0.2, warp: float = 0.1, factor: float = 0.2, illuminate: bool = True,
                     kfold: int = 0, nactor: int = 10, mat_file: str = "bu3dfe/bu3dfe.mat") -> CompositeSource:
    """Synthetic BU-3DFE: dark faces of `bu3dfe` on background pictures; options as `ck_synthetic`."""
    faces = bu3dfe(root, split, kfold=kfold, nactor=nactor, crop="dark", mat_file=mat_file)
    return _synthetic("BU-3DFE synthetic", faces, root, backgrounds, count, sampling, sample_seed,
                      dict(angle=angle, translation=translation, warp=warp, factor=factor, illuminate=illuminate))


@register("ckplus_release_synthetic")
def ckplus_release_synthetic(root: str, split: str, *, backgrounds: str | None, count: int | None = None,
                             sampling: str = "class_cycle", sample_seed: int = 0, angle: float = 30.0,
                             translation: float = 0.2, warp: float = 0.1, factor: float = 0.2,
                             illuminate: bool = True, kfold: int = 0, nactor: int = 10, peak_frames: int = 1,
                             neutral_frames: int = 1, images: str = "cohn-kanade-images", emotions: str = "Emotion",
                             landmarks: str = "Landmarks") -> CompositeSource:
    """Synthetic CK+ from the official release's dark faces; options as `ck_synthetic` and `ckplus_release`."""
    faces = ckplus_release(root, split, kfold=kfold, nactor=nactor, crop="dark", peak_frames=peak_frames,
                           neutral_frames=neutral_frames, images=images, emotions=emotions, landmarks=landmarks)
    return _synthetic("CK+ synthetic", faces, root, backgrounds, count, sampling, sample_seed,
                      dict(angle=angle, translation=translation, warp=warp, factor=factor, illuminate=illuminate))
