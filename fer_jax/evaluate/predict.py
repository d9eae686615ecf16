"""Expressions (or attributes) of the faces in photographs, folders of photographs and videos.

As upstream's demo does (yaoing/DAN:demo.py: find faces with OpenCV's cascade, crop, preprocess, softmax over
the logits), for any registered network: every face of every image is found (`fer_jax.faces`), cropped with
the margin and preprocessed as the model directory says (`pretrained.preprocessing`), and classified. A
video network (Emotion-FAN) classifies a video file or a folder of frames as one video, from the largest face
of each frame, and reports its per-frame attention weights; an image network classifies each sampled frame.

    predictor = Predictor("runs/dan/best")
    for result in predict_inputs(predictor, ["photo.jpg", "folder/", "clip.mp4"], on_problem=print):
        ...

A file that cannot be read, an image without a face or a video without frames is reported through
`on_problem` and skipped; the rest are still processed.
"""

from __future__ import annotations

import csv
import dataclasses
import functools
import json
import os
import shutil
import tempfile
import warnings
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import jax.numpy as jnp
import numpy as np
from PIL import Image, UnidentifiedImageError

from fer_jax import faces, models, pretrained, tasks, xla
from fer_jax.data import labels as labels_lib
from fer_jax.data import transforms
from fer_jax.errors import ConfigError, DatasetError, check_output_path, honour_umask, remove_stale_temporaries

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp", ".gif", ".ppm", ".pgm", ".jfif")
VIDEO_SUFFIXES = (".mp4", ".avi", ".mov", ".mkv", ".webm", ".m4v", ".mpg", ".mpeg", ".wmv", ".flv")


def class_names(meta: dict[str, Any], num_outputs: int, order: str | None) -> list[str]:
    """Names of the model's outputs: `--labels ORDER`, else those recorded at training, else indices."""
    if order:
        if order not in labels_lib.ORDERS:
            raise ConfigError(f"--labels {order!r}: use one of {', '.join(labels_lib.ORDERS)}")
        names = list(labels_lib.ORDERS[order])
    else:
        names = meta.get("trained", {}).get("class_names") or [str(i) for i in range(num_outputs)]
    if len(names) != num_outputs:
        raise ConfigError(f"the model has {num_outputs} outputs but --labels {order} names {len(names)} classes")
    return names


@dataclasses.dataclass
class Prediction:
    """What the model says about one face (or one whole image, or one video).

    Attributes:
      source: the file (a video frame: `path@frame N`; a folder of frames: the folder).
      face: 1 for the largest face of the image, 2 for the next, ...; None when the whole image was classified.
      box: (x, y, width, height) of the face in the image; None when the whole image was classified.
      probabilities: {class or attribute name: probability}, in the model's output order (softmax over the
        classes; a multi-label model: each attribute's sigmoid).
      frames: a video: the frame numbers used, in order.
      frame_weights: a video: the network's per-frame attention weights (Emotion-FAN's alpha).
    """

    source: str
    face: int | None
    box: tuple[int, int, int, int] | None
    probabilities: dict[str, float]
    multilabel: bool = False
    frames: list[int] | None = None
    frame_weights: list[float] | None = None

    def ranked(self, top: int) -> list[tuple[str, float]]:
        """The `top` likeliest classes; a multi-label model: every attribute with p > 0.5, likeliest first."""
        pairs = sorted(self.probabilities.items(), key=lambda t: -t[1])
        return [(n, p) for n, p in pairs if p > 0.5] if self.multilabel else pairs[:top]

    @property
    def label(self) -> str:
        """The predicted class (a multi-label model: the attributes with p > 0.5, joined by '+', or 'none')."""
        return "+".join(n for n, _ in self.ranked(1)) or "none"


class Predictor:
    """A model directory ready to classify face crops and videos (compiled once per batch shape).

    Args:
      model_dir: a fer-jax model directory (`porting/convert.py` output or a run's `best/`).
      order: label order naming the outputs (`--labels`), else the names recorded at training.
      batch_size: crops run at a time (the last batch is padded, so one compiled program serves all).
      margin: crop margin overriding the model directory's.
      detector: "opencv" or "dlib" (`fer_jax.faces.detect`); with dlib, a model whose preprocessing aligns
        faces (Emotion-FAN) gets aligned chips instead of box crops.

    Raises:
      UserError: unreadable model, bad label order or preprocessing, batch_size below 1, dlib missing.
    """

    def __init__(self, model_dir: str, *, order: str | None = None, batch_size: int = 16,
                 margin: float | None = None, detector: str = "opencv"):
        faces.check_detector(detector)  # a missing extra is reported before any work
        self.detector = detector
        if batch_size < 1:
            raise ConfigError(f"batch_size {batch_size} must be positive")
        if margin is not None and margin < 0:
            raise ConfigError(f"--margin {margin} must be >= 0")
        self.meta, self.module, self.variables = pretrained.load_with_metadata(model_dir)
        self.spec = models.spec(self.meta["arch"])
        trained = self.meta.get("trained", {})
        self.multilabel = trained.get("task") == "multilabel"
        pre = pretrained.preprocessing(self.meta)
        self.margin = pre["margin"] if margin is None else float(margin)
        self.align = pre["align"]
        self.input_size = pretrained.input_size(self.meta)
        self.pp = pre["pp"]
        self.chain = transforms.parse(self.pp)
        self.batch_size = batch_size
        outputs = self.spec.num_classes(self.meta["hparams"])
        self.order = order
        self.names = class_names(self.meta, outputs, order) if outputs is not None else None
        self._step = xla.jit(functools.partial(_logits, self.module, self.spec), "eval")
        if self.spec.video is not None:
            self._frames = xla.jit(functools.partial(_frame_values, self.module, self.spec), "eval")
            self._aggregate = xla.jit(functools.partial(_aggregate, self.module, self.spec), "eval",
                                      static_argnums=(2,))

    @property
    def is_video_model(self) -> bool:
        return self.spec.video is not None

    def find_faces(self, rgb: np.ndarray, largest_only: bool = False) -> list[tuple[int, faces.Face, np.ndarray]]:
        """(number from 1, face, RGB crop) for the faces in `rgb`, largest first: aligned chips where the
        detector gives landmarks and the model's preprocessing aligns, else square crops with the margin."""
        found = faces.detect(rgb, detector=self.detector)[:1 if largest_only else None]
        out = []
        for i, f in enumerate(found, start=1):
            if f.landmarks is not None and self.align is not None:
                crop = faces.align(rgb, f, size=max(self.input_size), padding=self.align)
            else:
                crop = faces.crop(rgb, f, margin=self.margin)
            out.append((i, f, crop))
        return out

    def prepare(self, crop: np.ndarray) -> np.ndarray:
        """An RGB uint8 crop as the network's input (the directory's preprocessing)."""
        return np.asarray(self.chain(Image.fromarray(crop), np.random.default_rng(0)), np.float32)

    def _padded_batches(self, inputs: np.ndarray) -> Iterator[tuple[np.ndarray, int]]:
        size = self.batch_size
        for i in range(0, len(inputs), size):
            chunk = inputs[i:i + size]
            yield np.concatenate([chunk, np.zeros((size - len(chunk), *chunk.shape[1:]), chunk.dtype)]), len(chunk)

    def logits(self, inputs: np.ndarray) -> np.ndarray:
        """Declared prediction per preprocessed input [N, H, W, C] (a video network: each a one-frame video)."""
        out = [np.asarray(self._step(self.variables, b), np.float64)[:n] for b, n in self._padded_batches(inputs)]
        return np.concatenate(out)

    def video_logits(self, inputs: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(logits [classes], per-frame attention weights [N], NaN if the network declares none) of one video
        of preprocessed frames."""
        values = []
        for b, n in self._padded_batches(inputs):
            values.append(tuple(np.asarray(v)[:n] for v in self._frames(self.variables, b)))
        stacked = tuple(np.concatenate(parts) for parts in zip(*values))
        index = self.spec.video.weight
        weights = (np.asarray(stacked[index], np.float64).reshape(len(inputs), -1)[:, 0] if index is not None
                   else np.full(len(inputs), np.nan))
        # padded to a multiple of the batch (ids -1 are ignored), so videos of similar length share a program
        pad = -len(inputs) % self.batch_size
        stacked = tuple(np.concatenate([v, np.zeros((pad, *v.shape[1:]), v.dtype)]) for v in stacked)
        video = np.concatenate([np.zeros(len(inputs), np.int32), np.full(pad, -1, np.int32)])
        logits = np.asarray(self._aggregate(self.variables, stacked, 1, video), np.float64)[0]
        return logits, weights

    def probabilities(self, logits: np.ndarray) -> list[dict[str, float]]:
        """{name: probability} per row of logits."""
        logits = np.atleast_2d(logits)
        names = self.names or class_names(self.meta, logits.shape[-1], self.order)
        if self.multilabel:
            probs = 1 / (1 + np.exp(-logits))
        else:
            probs = np.exp(logits - logits.max(-1, keepdims=True))
            probs /= probs.sum(-1, keepdims=True)
        return [dict(zip(names, map(float, row))) for row in probs]


def _logits(module, spec: models.ModelSpec, variables, images):
    """The declared prediction for each image; a video network sees each image as a one-frame video."""
    forward = tasks.Forward(module, spec, variables)
    if spec.video is None:
        return forward({"image": images})[1]
    values = forward.method(spec.video.frame, images)
    values = values if isinstance(values, tuple) else (values,)
    video = jnp.arange(images.shape[0], dtype=jnp.int32)
    return module.apply(variables, *values, video, images.shape[0], method=spec.video.aggregate)


def _frame_values(module, spec: models.ModelSpec, variables, images):
    values = tasks.Forward(module, spec, variables).method(spec.video.frame, images)
    return values if isinstance(values, tuple) else (values,)


def _aggregate(module, spec: models.ModelSpec, variables, values, num_videos, video):
    return module.apply(variables, *values, video, num_videos, method=spec.video.aggregate)


# ---------------------------------------------------------------------------------------------------------
# Inputs: files, folders and videos, each decoded lazily.


@dataclasses.dataclass(frozen=True)
class Input:
    """One thing to classify: an image file, a video file, or (video networks) a folder of frames."""

    path: str
    kind: str  # "image", "video" or "frames"


def expand(paths: Sequence[str], video_model: bool, on_problem: Callable[[str, str], None]) -> Iterator[Input]:
    """The inputs named by `paths`, in order: image and video files as given; a folder gives its images
    (sorted, with its sub-folders'), or for a video network the folder itself as one video of frames, then
    its videos. Paths that do not exist, and folders without images or videos, are reported (when reached)
    and skipped."""
    for path in paths:
        if os.path.isdir(path):
            images = sorted(os.path.join(d, f) for d, _, files in os.walk(path) for f in files
                            if f.lower().endswith(IMAGE_SUFFIXES))
            videos = sorted(os.path.join(d, f) for d, _, files in os.walk(path) for f in files
                            if f.lower().endswith(VIDEO_SUFFIXES))
            if not images and not videos:
                on_problem(path, "no images or videos in this folder")
            if images:
                yield from [Input(path, "frames")] if video_model else [Input(p, "image") for p in images]
            yield from (Input(p, "video") for p in videos)
        elif os.path.isfile(path):
            yield Input(path, "video" if path.lower().endswith(VIDEO_SUFFIXES) else "image")
        else:
            on_problem(path, "not found")


def read_image(path: str) -> np.ndarray:
    """The image as H x W x 3 uint8 RGB: grayscale, palette, RGBA (alpha dropped), CMYK and 16-bit
    (levels scaled, not clipped) accepted.

    Raises:
      DatasetError: not a readable image, or one too large to decode safely (PIL's decompression-bomb guard).
    """
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            with Image.open(path) as im:
                if im.mode.startswith("I;16") or im.mode == "I":
                    return faces.as_rgb8(faces.levels16_to_uint8(np.asarray(im)))
                return np.asarray(im.convert("RGB"))
    except Image.DecompressionBombError as e:
        raise DatasetError(f"too large to decode safely ({e})") from None
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError) as e:
        raise DatasetError(f"not a readable image ({e})") from None


def read_video(path: str, max_frames: int) -> Iterator[tuple[int, np.ndarray]]:
    """(frame number, RGB uint8 frame) for up to `max_frames` frames spread evenly over the video.

    Raises:
      DatasetError: OpenCV cannot open or decode the file.
    """
    import cv2

    capture = cv2.VideoCapture(path)
    try:
        if not capture.isOpened():
            raise DatasetError("not a readable video (OpenCV cannot open it)")
        count = int(capture.get(cv2.CAP_PROP_FRAME_COUNT))
        wanted = (set(np.linspace(0, count - 1, min(count, max_frames)).round().astype(int).tolist())
                  if count > 0 else None)
        index, given = 0, 0
        while wanted is None or index <= max(wanted):
            ok, frame = capture.read()
            if not ok:
                break
            if wanted is None or index in wanted:
                yield index, cv2.cvtColor(frame, cv2.COLOR_BGR2RGB)
                given += 1
                if wanted is None and given >= max_frames:
                    break
            index += 1
        if given == 0:
            raise DatasetError("not a readable video (no frame could be decoded)")
    finally:
        capture.release()


# ---------------------------------------------------------------------------------------------------------
# The driver.


@dataclasses.dataclass
class _Pending:
    source: str
    face: int | None
    box: tuple[int, int, int, int] | None
    image: np.ndarray


def predict_inputs(predictor: Predictor, paths: Sequence[str], *, detect: bool = True, max_frames: int = 64,
                   on_problem: Callable[[str, str], None], on_image: Callable[[str, np.ndarray, list], None]
                   | None = None) -> Iterator[Prediction]:
    """Predictions for every face (or whole image, `detect=False`) of every input, in input order (problems
    are reported as they are reached, so a problem may be heard before the results of earlier images).

    Crops are run `predictor.batch_size` at a time; besides them, one decoded image (a video network: one
    video's preprocessed frames) is held, and with `on_image` the images whose faces are waiting in the batch.
    `on_problem(path, reason)` hears of every input skipped; `on_image(source, rgb, predictions)` receives each
    image with its predictions (for annotated copies).
    """
    inputs = expand(paths, predictor.is_video_model, on_problem)
    queue: list[_Pending] = []
    images: dict[str, np.ndarray] = {}  # decoded images whose faces are still queued (for on_image)
    done: dict[str, list[Prediction]] = {}

    def flush() -> Iterator[Prediction]:
        if not queue:
            return
        batch = np.stack([predictor.prepare(p.image) for p in queue])
        for p, probs in zip(queue, predictor.probabilities(predictor.logits(batch))):
            result = Prediction(p.source, p.face, p.box, probs, predictor.multilabel)
            done.setdefault(p.source, []).append(result)
            yield result
        for source in dict.fromkeys(p.source for p in queue):
            if on_image is not None and source in images:
                on_image(source, images.pop(source), done.pop(source))
            done.pop(source, None)
        queue.clear()

    def crops(source: str, rgb: np.ndarray, largest_only: bool) -> list[_Pending]:
        if not detect:
            return [_Pending(source, None, None, rgb)]
        return [_Pending(source, i, f.box, crop) for i, f, crop in predictor.find_faces(rgb, largest_only)]

    for item in inputs:
        try:
            if item.kind == "image" or (item.kind == "video" and not predictor.is_video_model):
                frames = ([(item.path, read_image(item.path))] if item.kind == "image" else
                          ((f"{item.path}@frame {i}", rgb) for i, rgb in read_video(item.path, max_frames)))
                for source, rgb in frames:
                    pending = crops(source, rgb, largest_only=False)
                    if not pending:
                        on_problem(source, "no face found")
                        continue
                    if on_image is not None:
                        images[source] = rgb
                    queue.extend(pending)
                    if len(queue) >= predictor.batch_size:
                        yield from flush()
                continue
            # a video network: the largest face of every frame, as one video (after the queued images, so that
            # results come in input order)
            yield from flush()
            frames = (read_video(item.path, max_frames) if item.kind == "video" else
                      _folder_frames(item.path, max_frames, on_problem))
            numbers, inputs_ = [], []
            for number, rgb in frames:
                pending = crops(item.path, rgb, largest_only=True)
                if pending:
                    numbers.append(number)
                    inputs_.append(predictor.prepare(pending[0].image))
            if not inputs_:
                on_problem(item.path, "no face found in any frame" if detect else "no frames")
                continue
            logits, weights = predictor.video_logits(np.stack(inputs_))
            yield Prediction(item.path, None, None, predictor.probabilities(logits)[0], predictor.multilabel,
                             frames=numbers, frame_weights=[float(w) for w in weights])
        except DatasetError as e:
            on_problem(item.path, str(e))
    yield from flush()


def _folder_frames(folder: str, max_frames: int, on_problem) -> Iterator[tuple[int, np.ndarray]]:
    """The images of a folder of frames (sorted), up to `max_frames` spread evenly; unreadable ones reported."""
    files = sorted(os.path.join(d, f) for d, _, names in os.walk(folder) for f in names
                   if f.lower().endswith(IMAGE_SUFFIXES))
    keep = np.unique(np.linspace(0, len(files) - 1, min(len(files), max_frames)).round().astype(int))
    for i in keep:
        try:
            yield int(i), read_image(files[i])
        except DatasetError as e:
            on_problem(files[i], str(e))


# ---------------------------------------------------------------------------------------------------------
# --out: annotated images, predictions.csv and predictions.json.

OUTPUT_FILES = ("predictions.json", "predictions.csv")


class OutputDir:
    """`--out DIR`, filled in a temporary sibling that replaces DIR only when `finish` is called, so that an
    interrupted run leaves nothing half-written. DIR must be new or empty, or (with `overwrite`) an earlier
    output of the same script (one that holds `marker`).

    Raises:
      UserError: DIR cannot be written, or may not be replaced.
    """

    def __init__(self, out: str, overwrite: bool = False, marker: str = OUTPUT_FILES[0], script: str = "predict.py"):
        self.out = check_output_path(out, "--out", directory=True)
        if os.path.isdir(self.out) and os.listdir(self.out):
            if not os.path.isfile(os.path.join(self.out, marker)):
                raise ConfigError(f"{self.out} is not empty and holds no {marker} (not a {script} output); choose "
                                  "another --out")
            if not overwrite:
                raise ConfigError(f"{self.out} already holds {script} results; choose another --out or pass "
                                  "--overwrite")
        parent = os.path.dirname(self.out)
        os.makedirs(parent, exist_ok=True)
        remove_stale_temporaries(self.out)
        self.tmp = tempfile.mkdtemp(prefix=os.path.basename(self.out) + ".tmp-", dir=parent)
        self.images: dict[str, str] = {}

    def annotate(self, source: str, rgb: np.ndarray, predictions: Sequence[Prediction]) -> None:
        """A copy of the image with every face's box and label, as annotated/NNNN_<name>.png."""
        name = output_name("annotated", len(self.images) + 1, source)
        os.makedirs(os.path.join(self.tmp, "annotated"), exist_ok=True)
        Image.fromarray(draw(rgb, predictions)).save(os.path.join(self.tmp, name))
        self.images[source] = name

    def finish(self, predictions: Sequence[Prediction], header: dict[str, Any]) -> str:
        """Writes predictions.json and predictions.csv and moves the directory into place; returns its path."""
        self._write_predictions(predictions, header)
        return self.commit()

    def _write_predictions(self, predictions: Sequence[Prediction], header: dict[str, Any]) -> None:
        rows = [{**dataclasses.asdict(p), "label": p.label, "annotated": self.images.get(p.source)}
                for p in predictions]
        with open(os.path.join(self.tmp, "predictions.json"), "w") as f:
            json.dump({**header, "predictions": rows}, f, indent=1)
            f.write("\n")
        names = list(predictions[0].probabilities) if predictions else []
        with open(os.path.join(self.tmp, "predictions.csv"), "w", newline="") as f:
            writer = csv.writer(f)
            writer.writerow(["source", "face", "x", "y", "width", "height", "label", "frames", *names])
            for p in predictions:
                writer.writerow([p.source, p.face or "", *(p.box or ("",) * 4), p.label,
                                 len(p.frames) if p.frames else "", *(f"{p.probabilities[n]:.6f}" for n in names)])

    def commit(self) -> str:
        """Moves the filled directory into place (replacing an earlier output); returns its path."""
        for d, _, files in os.walk(self.tmp):
            honour_umask(d, directory=True)
            for name in files:
                honour_umask(os.path.join(d, name), directory=False)
        if os.path.exists(self.out):
            old = tempfile.mkdtemp(prefix=os.path.basename(self.out) + ".tmp-old-", dir=os.path.dirname(self.out))
            os.replace(self.out, old)
            os.replace(self.tmp, self.out)
            shutil.rmtree(old)
        else:
            os.replace(self.tmp, self.out)
        return self.out

    def abandon(self) -> None:
        shutil.rmtree(self.tmp, ignore_errors=True)


def output_name(out_dir: str, index: int, source: str) -> str:
    """`out_dir/NNNN_<name>[_frameK].png` for an input (a video frame's source is `path@frame K`)."""
    stem = os.path.splitext(os.path.basename(source.rstrip(os.sep).split("@frame ")[0]))[0]
    suffix = f"_frame{source.rsplit('@frame ', 1)[1]}" if "@frame " in source else ""
    return os.path.join(out_dir, f"{index:04d}_{stem}{suffix}.png")


def draw(rgb: np.ndarray, predictions: Sequence[Prediction]) -> np.ndarray:
    """`rgb` with a box and "N label p" over each face (a whole-image prediction: the label in a corner)."""
    import cv2

    out = np.ascontiguousarray(rgb.copy())
    side = max(out.shape[:2])
    thickness, scale = max(1, round(side / 400)), max(0.4, side / 1200)
    for p in predictions:
        top = p.ranked(1)
        text = (f"{p.face} " if p.face else "") + (f"{top[0][0]} {top[0][1]:.2f}" if top else "none")
        x, y, w, h = p.box or (0, 0, out.shape[1], out.shape[0])
        if p.box:
            cv2.rectangle(out, (x, y), (x + w - 1, y + h - 1), (0, 255, 0), thickness)
        (tw, th), base = cv2.getTextSize(text, cv2.FONT_HERSHEY_SIMPLEX, scale, thickness)
        ty = y - base - 2 if p.box and y - th - base - 4 >= 0 else y + th + 2
        cv2.rectangle(out, (x, ty - th - 2), (x + tw + 4, ty + base), (0, 255, 0), cv2.FILLED)
        cv2.putText(out, text, (x + 2, ty), cv2.FONT_HERSHEY_SIMPLEX, scale, (0, 0, 0), thickness, cv2.LINE_AA)
    return out
