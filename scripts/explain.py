"""Show what a network looks at: Grad-CAM / Grad-CAM++ maps and the network's own attention, per face.

    python scripts/explain.py --model DIR photo.jpg [folder/ clip.mp4 ...] --out explained/
    python scripts/explain.py --model DIR --list_layers

For every face found (as `scripts/predict.py` finds and crops them; `--faces none` for face crops), one row
of pictures: the face, Grad-CAM and Grad-CAM++ maps (JET colour map over the face) of the predicted class or
`--class`, at the network's declared layer or `--layer`, and the network's attention views: DAN's spatial
attention per head, FERAtt's attention image and attention map. A video network (Emotion-FAN) explains a
video file or a folder of frames as one video: a row per frame (maps of the video's class) and bars of the
per-frame self-attention and aggregation weights. One PNG per image or video in `--out`, and
explanations.json.
"""

from __future__ import annotations

import json
import os
import sys

from absl import app, flags

from fer_jax import cli

_MODEL = flags.DEFINE_string("model", None, "fer-jax model directory")
_OUT = flags.DEFINE_string("out", None, "directory for the figures and explanations.json")
_OVERWRITE = flags.DEFINE_bool("overwrite", False, "replace an earlier explain.py --out")
_LAYER = flags.DEFINE_string("layer", None, "module whose output map is explained (default: the network's; "
                                            "see --list_layers)")
_LIST = flags.DEFINE_bool("list_layers", False, "print the layers --layer accepts and exit")
_CLASS = flags.DEFINE_string("class", None, "class to explain, by name or index (default: the predicted one)")
_METHOD = flags.DEFINE_list("method", ["gradcam", "gradcam++"], "gradcam and/or gradcam++")
_LABELS = flags.DEFINE_string("labels", None, "class order of the model's outputs, e.g. rafdb or affectnet")
_FACES = flags.DEFINE_enum("faces", "detect", ["detect", "none"],
                           "detect: find every face; none: the images are face crops already")
_DETECTOR = flags.DEFINE_enum("detector", "opencv", ["opencv", "dlib"],
                               "face detector: OpenCV's Haar cascade, or dlib's HOG detector with 5-point landmarks "
                               "(aligned faces where the model's preprocessing aligns; pip install 'fer-jax[dlib]')")
_MARGIN = flags.DEFINE_float("margin", None, "context around each face box (default: the model directory's)",
                             lower_bound=0.0)
_MAX_FRAMES = flags.DEFINE_integer("max_frames", 8, "frames shown per video, spread over its length", lower_bound=1)
_BATCH = flags.DEFINE_integer("batch_size", 8, "faces explained at a time", lower_bound=1)


def main(argv: list[str]) -> None:
    paths = argv[1:]
    if not _LIST.value and (not paths or not _OUT.value):
        print("error: give one or more images, folders or videos and --out (see --help)", file=sys.stderr)
        sys.exit(2)
    skipped = cli.Skipped()

    def run():
        import numpy as np

        from fer_jax import pretrained
        from fer_jax.errors import ConfigError
        from fer_jax.evaluate import explain, predict

        predictor = predict.Predictor(_MODEL.value, order=_LABELS.value, batch_size=_BATCH.value,
                                      margin=_MARGIN.value, detector=_DETECTOR.value)
        if _LIST.value:
            h, w = pretrained.input_size(predictor.meta)
            shape = predictor.prepare(np.zeros((h, w, 3), np.uint8)).shape
            for path, calls in explain.layer_outputs(predictor, shape).items():
                if calls == 1:
                    print(path + ("   (default)" if path == predictor.spec.cam_layer else ""))
            return None
        explainer = explain.Explainer(predictor, _LAYER.value)
        target = None
        if _CLASS.value is not None:
            names = predictor.names or []
            if _CLASS.value in names:
                target = names.index(_CLASS.value)
            elif _CLASS.value.isdigit() and int(_CLASS.value) < len(names):
                target = int(_CLASS.value)
            else:
                raise ConfigError(f"--class {_CLASS.value!r}: not a class of the model ({', '.join(names)}, or "
                                  f"an index below {len(names)})")
        out = predict.OutputDir(_OUT.value, _OVERWRITE.value, marker="explanations.json", script="explain.py")
        try:
            records = explain.explain_inputs(
                explainer, paths, out, detect=_FACES.value == "detect", target=target, methods=_METHOD.value,
                max_frames=_MAX_FRAMES.value, on_problem=skipped,
                on_figure=lambda path, record: (skipped.release(),
                                                print(f"{os.path.basename(path)}: {_summary(record)}", flush=True)))
            if records:
                with open(os.path.join(out.tmp, "explanations.json"), "w") as f:
                    json.dump({"model": os.path.abspath(_MODEL.value), "arch": predictor.meta["arch"],
                               "layer": explainer.layer, "methods": _METHOD.value, "figures": records,
                               "skipped": skipped.as_json()}, f, indent=1)
                    f.write("\n")
                print(f"wrote {out.commit()}", file=sys.stderr)
        finally:
            out.abandon()
        return records

    records = cli.run_user(run)
    if records is not None and not records:
        skipped.fail("explained")

def _summary(record: dict) -> str:
    if "faces" in record:
        return "; ".join(f"{'face ' + str(f['face']) if f['face'] else record['source']} {f['label']} "
                         f"{f['probability']:.3f} (maps: {f['explained']})" for f in record["faces"])
    return f"video {record['label']} {record['probability']:.3f} over {len(record['frames'])} frames " \
           f"(maps: {record['explained']})"


if __name__ == "__main__":
    cli.huge_pages()
    cli.keep_memory()
    app.run(main, flags_parser=cli.flags_parser(["model"], positional=True))
