"""Finding faces in photographs, and the crops a model classifies.

The default detector is OpenCV's frontal-face Haar cascade. Its model file ships inside
`opencv-python-headless` below 5 (the 5.x wheels no longer bundle the cascades), so nothing is downloaded at
run time. The optional `dlib` extra (`pip install 'fer-jax[dlib]'`: dlib's wheels and the
`face_recognition_models` package, which ships dlib's 5-point landmark model) adds dlib's HOG detector with
5-point landmarks, and aligned face chips (`align`) like Emotion-FAN's preprocessing.

    faces = detect(image)                    # every face, largest first
    crops = [crop(image, f, margin=0.2, size=224) for f in faces]
    chips = [align(image, f, size=224, padding=0.25) for f in detect(image, detector="dlib")]

Images are NumPy arrays, H x W (grayscale), H x W x 1, H x W x 3 (RGB) or H x W x 4 (RGBA, alpha dropped),
uint8 or uint16 (16-bit levels scaled to 8 bits); `as_rgb8` states what it accepts.
"""

from __future__ import annotations

import dataclasses
import functools
import os

import numpy as np

CASCADE = "haarcascade_frontalface_default.xml"
DETECTORS = ("opencv", "dlib")
LANDMARKS = "shape_predictor_5_face_landmarks.dat"  # in face_recognition_models/models/


@dataclasses.dataclass(frozen=True)
class Face:
    """A detected face: its box in image pixels (x, y of the top-left corner, width, height), the detector's
    confidence (OpenCV: the cascade's final-stage vote; dlib: the HOG detector's score; larger is surer) and,
    from dlib, five landmarks (x, y) in image pixels (eye corners and the base of the nose)."""

    x: int
    y: int
    width: int
    height: int
    score: float
    landmarks: tuple[tuple[float, float], ...] | None = None

    @property
    def box(self) -> tuple[int, int, int, int]:
        return self.x, self.y, self.width, self.height


def levels16_to_uint8(levels: np.ndarray) -> np.ndarray:
    """16-bit levels (0..65535) as 8-bit ones, rounded (65535 -> 255); clipping them instead would turn a 16-bit
    image white."""
    return np.clip(np.round(np.asarray(levels, np.float64) / 257.0), 0, 255).astype(np.uint8)


def as_rgb8(image: np.ndarray) -> np.ndarray:
    """`image` as H x W x 3 uint8 RGB.

    Raises:
      ValueError: not a 2-D image with 1, 3 or 4 channels, or not uint8 / uint16.
    """
    image = np.asarray(image)
    if image.ndim == 3 and image.shape[2] == 1:
        image = image[:, :, 0]
    if image.ndim not in (2, 3) or (image.ndim == 3 and image.shape[2] not in (3, 4)) or 0 in image.shape[:2]:
        raise ValueError(f"expected an H x W, H x W x 3 (RGB) or H x W x 4 (RGBA) image, got shape {image.shape}")
    if image.dtype == np.uint16:
        image = levels16_to_uint8(image)
    elif image.dtype != np.uint8:
        raise ValueError(f"expected uint8 or uint16 pixels, got {image.dtype}")
    if image.ndim == 2:
        return np.repeat(image[:, :, None], 3, axis=2)
    return np.ascontiguousarray(image[:, :, :3])


@functools.cache
def _cascade(name: str):
    import cv2

    path = os.path.join(cv2.data.haarcascades, name)
    classifier = cv2.CascadeClassifier(path)
    if classifier.empty():
        raise RuntimeError(f"OpenCV's {name} is missing ({path}); install opencv-python-headless<5, whose wheels "
                           "ship the Haar cascades")
    return classifier


@functools.cache
def _dlib():
    """(dlib module, frontal HOG detector, 5-point shape predictor), or a one-line error naming the extra."""
    import importlib.util

    from fer_jax.errors import ConfigError

    spec = importlib.util.find_spec("face_recognition_models")
    try:
        import dlib
    except ImportError:
        dlib = None
    if dlib is None or spec is None:
        raise ConfigError("the dlib detector needs the dlib extra: pip install 'fer-jax[dlib]' (dlib-bin and "
                          "face_recognition_models, which ships the 5-point landmark model)")
    # the package's own __init__ needs pkg_resources; only its data file is used
    path = os.path.join(spec.submodule_search_locations[0], "models", LANDMARKS)
    return dlib, dlib.get_frontal_face_detector(), dlib.shape_predictor(path)


def check_detector(detector: str) -> None:
    """Raises ConfigError for an unknown detector, or dlib without its extra installed."""
    from fer_jax.errors import ConfigError

    if detector not in DETECTORS:
        raise ConfigError(f"unknown face detector {detector!r}; use one of {', '.join(DETECTORS)}")
    if detector == "dlib":
        _dlib()


def detect(image: np.ndarray, *, detector: str = "opencv", min_size: int = 24, scale_factor: float = 1.1,
           min_neighbors: int = 5, max_side: int = 1600) -> list[Face]:
    """Every frontal face in `image`, largest first.

    Args:
      image: see `as_rgb8`.
      detector: "opencv" (the Haar cascade) or "dlib" (HOG detector with 5-point landmarks; the dlib extra).
      min_size: the smallest face side searched, in pixels of `image` (OpenCV).
      scale_factor, min_neighbors: the cascade's search step and the overlapping detections a face needs
        (OpenCV's `detectMultiScale`).
      max_side: larger images are searched at this longest side (boxes are mapped back), which bounds the time
        a huge photograph takes.

    Returns:
      The faces, by decreasing area; boxes lie inside the image.

    Raises:
      ConfigError: an unknown detector, or dlib without its extra installed.
    """
    import cv2

    check_detector(detector)
    rgb = as_rgb8(image)
    h, w = rgb.shape[:2]
    scale = min(1.0, max_side / max(h, w))
    if detector == "dlib":
        return _detect_dlib(rgb, scale)
    gray = cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY)
    if scale < 1.0:
        gray = cv2.resize(gray, (max(1, round(w * scale)), max(1, round(h * scale))), interpolation=cv2.INTER_AREA)
    gray = cv2.equalizeHist(gray)
    side = max(1, round(min_size * scale))
    boxes, _, weights = _cascade(CASCADE).detectMultiScale3(
        gray, scaleFactor=scale_factor, minNeighbors=min_neighbors, minSize=(side, side), outputRejectLevels=True)
    faces = []
    for (x, y, bw, bh), weight in zip(np.asarray(boxes).reshape(-1, 4), np.asarray(weights).reshape(-1)):
        x0, y0 = max(0, round(x / scale)), max(0, round(y / scale))
        x1, y1 = min(w, round((x + bw) / scale)), min(h, round((y + bh) / scale))
        faces.append(Face(int(x0), int(y0), int(x1 - x0), int(y1 - y0), float(weight)))
    return sorted(faces, key=lambda f: f.width * f.height, reverse=True)


def _detect_dlib(rgb: np.ndarray, scale: float) -> list[Face]:
    """dlib's HOG detector (upsampled once, threshold 0, as upstream Emotion-FAN's alignment calls it) and the
    5-point landmarks of each face, at `scale` of the image and mapped back."""
    import cv2

    dlib, detector, predictor = _dlib()
    h, w = rgb.shape[:2]
    small = rgb if scale == 1.0 else cv2.resize(rgb, (max(1, round(w * scale)), max(1, round(h * scale))),
                                                interpolation=cv2.INTER_AREA)
    rects, scores, _ = detector.run(small, 1, 0.0)
    faces = []
    for rect, score in zip(rects, scores):
        points = tuple((p.x / scale, p.y / scale) for p in predictor(small, rect).parts())
        x0, y0 = max(0, round(rect.left() / scale)), max(0, round(rect.top() / scale))
        x1, y1 = min(w, round((rect.right() + 1) / scale)), min(h, round((rect.bottom() + 1) / scale))
        if x1 > x0 and y1 > y0:
            faces.append(Face(int(x0), int(y0), int(x1 - x0), int(y1 - y0), float(score), points))
    return sorted(faces, key=lambda f: f.width * f.height, reverse=True)


def align(image: np.ndarray, face: Face, *, size: int, padding: float = 0.25) -> np.ndarray:
    """The face rotated upright and scaled from its five landmarks (dlib's `get_face_chip`), size x size RGB
    uint8 with `padding` of context: Emotion-FAN's preprocessing (size 224, padding 0.25).

    Raises:
      ValueError: the face has no landmarks (it was not found by the dlib detector).
    """
    if face.landmarks is None:
        raise ValueError("aligning a face needs its landmarks: detect it with detector='dlib'")
    dlib, _, _ = _dlib()
    rect = dlib.rectangle(face.x, face.y, face.x + face.width - 1, face.y + face.height - 1)
    shape = dlib.full_object_detection(rect, [dlib.point(round(x), round(y)) for x, y in face.landmarks])
    return np.ascontiguousarray(dlib.get_face_chip(as_rgb8(image), shape, size=size, padding=padding))


def crop(image: np.ndarray, face: Face, *, margin: float = 0.2, size: int | None = None) -> np.ndarray:
    """The square region around `face`, widened by `margin` of the box's longer side on every side, as RGB uint8.

    Where the square leaves the image, the border pixels are repeated (so a face at the edge keeps its
    position in the crop). `size` resizes the crop to size x size (area averaging when shrinking).
    """
    import cv2

    rgb = as_rgb8(image)
    if margin < 0:
        raise ValueError(f"margin must be >= 0, got {margin}")
    side = max(1, round(max(face.width, face.height) * (1 + 2 * margin)))
    cx, cy = face.x + face.width / 2, face.y + face.height / 2
    x0, y0 = round(cx - side / 2), round(cy - side / 2)
    h, w = rgb.shape[:2]
    pad = (max(0, -y0), max(0, y0 + side - h), max(0, -x0), max(0, x0 + side - w))
    if any(pad):
        rgb = cv2.copyMakeBorder(rgb, *pad, cv2.BORDER_REPLICATE)
        x0, y0 = x0 + pad[2], y0 + pad[0]
    out = rgb[y0:y0 + side, x0:x0 + side]
    if size is not None and size != side:
        out = cv2.resize(out, (size, size), interpolation=cv2.INTER_AREA if size < side else cv2.INTER_LINEAR)
    return np.ascontiguousarray(out)
