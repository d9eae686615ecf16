"""Name the expression (or attributes) of every face in photographs, folders and videos.

    python scripts/predict.py --model DIR photo.jpg [more.png folder/ clip.mp4 ...] [--out results/]

`--model` is a fer-jax model directory (`porting/convert.py` output or a run's `best/`). Faces are found with
OpenCV's frontal-face cascade (every face, largest first), cropped with the margin and preprocessed as the
model directory's `preprocess` entry says (`--faces none` classifies images that are already face crops, whole).
A video network (Emotion-FAN) classifies a video file or a folder of frames as one video from the largest face
of each frame (up to `--max_frames` spread over it) and reports its per-frame attention weights; an image
network classifies the sampled frames one by one. Class names come from `--labels` (rafdb, affectnet, ...) or
from the training run.

One line per face on stdout. An input that cannot be used (missing, unreadable, no face) gets one line on
stderr and the rest are still processed; the exit code is 1 only when nothing could be classified.
`--out DIR` also writes annotated copies of the images (boxes and labels), predictions.csv and
predictions.json.
"""

from __future__ import annotations

import os
import sys

from absl import app, flags

from fer_jax import cli

_MODEL = flags.DEFINE_string("model", None, "fer-jax model directory")
_LABELS = flags.DEFINE_string("labels", None, "class order of the model's outputs, e.g. rafdb or affectnet")
_TOP = flags.DEFINE_integer("top", 3, "classes shown per face (at least 1)", lower_bound=1)
_BATCH = flags.DEFINE_integer("batch_size", 16, "faces run at a time", lower_bound=1)
_FACES = flags.DEFINE_enum("faces", "detect", ["detect", "none"],
                           "detect: find every face and classify each; none: the images are face crops already")
_DETECTOR = flags.DEFINE_enum("detector", "opencv", ["opencv", "dlib"],
                               "face detector: OpenCV's Haar cascade, or dlib's HOG detector with 5-point landmarks "
                               "(aligned faces where the model's preprocessing aligns; pip install 'fer-jax[dlib]')")
_MARGIN = flags.DEFINE_float("margin", None, "context around each face box, as a fraction of its side (default: "
                                             "the model directory's)", lower_bound=0.0)
_MAX_FRAMES = flags.DEFINE_integer("max_frames", 64, "frames used per video, spread over its length", lower_bound=1)
_OUT = flags.DEFINE_string("out", None, "directory for annotated images, predictions.csv and predictions.json")
_OVERWRITE = flags.DEFINE_bool("overwrite", False, "replace an earlier predict.py --out")


def main(argv: list[str]) -> None:
    paths = argv[1:]
    if not paths:
        print("error: give one or more images, folders or videos (see --help)", file=sys.stderr)
        sys.exit(2)
    skipped = cli.Skipped()

    def run():
        from fer_jax.evaluate import predict

        predictor = predict.Predictor(_MODEL.value, order=_LABELS.value, batch_size=_BATCH.value,
                                      margin=_MARGIN.value, detector=_DETECTOR.value)
        out = predict.OutputDir(_OUT.value, _OVERWRITE.value) if _OUT.value else None
        results = []
        try:
            for p in predict.predict_inputs(predictor, paths, detect=_FACES.value == "detect",
                                            max_frames=_MAX_FRAMES.value, on_problem=skipped,
                                            on_image=out.annotate if out else None):
                skipped.release()
                results.append(p)
                print(_line(p, _TOP.value), flush=True)
            if out is not None and results:
                header = {"model": os.path.abspath(_MODEL.value), "arch": predictor.meta["arch"],
                          "preprocess": {"pp": predictor.pp, "margin": predictor.margin, "align": predictor.align},
                          "detector": predictor.detector,
                          "faces": _FACES.value,
                          "skipped": skipped.as_json()}
                print(f"wrote {out.finish(results, header)}", file=sys.stderr)
        finally:
            if out is not None:
                out.abandon()
        return results

    results = cli.run_user(run)
    if not results:
        skipped.fail("classified")

def _line(p, top: int) -> str:
    where = p.source
    if p.face is not None:
        x, y, w, h = p.box
        where += f" [face {p.face} at x={x} y={y} {w}x{h}]"
    if p.frames is not None:
        where += f" [video, {len(p.frames)} frames]"
    line = f"{where}: " + (", ".join(f"{n} {q:.3f}" for n, q in p.ranked(top)) or "no attribute above 0.5")
    if p.frame_weights is not None:
        line += "\n  frame weights: " + " ".join(f"{f}:{w:.3f}" for f, w in zip(p.frames, p.frame_weights))
    return line


if __name__ == "__main__":
    cli.huge_pages()
    cli.keep_memory()
    app.run(main, flags_parser=cli.flags_parser(["model"], positional=True))
