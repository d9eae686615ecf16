"""Predict expressions of face images: python scripts/predict.py --model DIR face1.jpg [face2.jpg ...] [--labels rafdb]

`--model` is a fer-jax model directory (`porting/convert.py` output or a run's `best/`). Class names come
from `--labels` (rafdb, affectnet, expw, afew, ckplus_emotion_fan, ferplus) or from the training run.
Images are resized as the model expects; crop the face first. They are read `--batch_size` at a time.
"""

from __future__ import annotations

import sys

from absl import app, flags

from fer_jax import cli

_MODEL = flags.DEFINE_string("model", None, "fer-jax model directory")
_LABELS = flags.DEFINE_string("labels", None, "class order of the model's outputs, e.g. rafdb or affectnet")
_TOP = flags.DEFINE_integer("top", 3, "classes shown per image (at least 1)", lower_bound=1)
_BATCH = flags.DEFINE_integer("batch_size", 16, "images decoded and run at a time", lower_bound=1)


def main(argv: list[str]) -> None:
    images = argv[1:]
    if not images:
        print("error: give one or more image files (see --help)", file=sys.stderr)
        sys.exit(2)

    def run():
        from fer_jax.evaluate.predict import predict

        return predict(_MODEL.value, images, order=_LABELS.value, top=_TOP.value, batch_size=_BATCH.value)

    for path, ranked in zip(images, cli.run_user(run)):
        print(f"{path}: " + ", ".join(f"{name} {p:.3f}" for name, p in ranked))


if __name__ == "__main__":
    app.run(main, flags_parser=cli.flags_parser(["model"], positional=True))
