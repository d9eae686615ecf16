"""scripts/predict.py: face crops, faces found in a real photograph, folders, videos, --out."""

from __future__ import annotations

import csv
import glob
import json
import os
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from conftest import ROOT, load_recipe
from fer_jax.train.loop import train_and_evaluate

SCRIPT = str(ROOT / "scripts" / "predict.py")
CLASSES = {"Surprise", "Fear", "Disgust", "Happy", "Sad", "Anger", "Neutral"}
# skimage's astronaut photograph: OpenCV's cascade finds one face there (tests/test_faces.py)
ASTRONAUT_FACE = (177, 67, 93, 93)


def predict(*args) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, SCRIPT, *map(str, args)], capture_output=True, text=True, timeout=300)


@pytest.fixture(scope="module")
def dan(synthetic, tmp_path_factory):
    c = load_recipe("dan_rafdb", "smoke")
    c.data.root = synthetic["rafdb"]
    run = tmp_path_factory.mktemp("predict") / "run"
    train_and_evaluate(c, str(run), log=lambda *a: None)
    return run / "best"


@pytest.fixture(scope="module")
def astronaut(tmp_path_factory):
    skimage_data = pytest.importorskip("skimage.data")
    path = tmp_path_factory.mktemp("photos") / "astronaut.png"
    Image.fromarray(skimage_data.astronaut()).save(path)
    return path


def parse(line: str) -> tuple[str, list[tuple[str, float]]]:
    where, ranked = line.split(": ", 1)
    return where, [(part.rsplit(" ", 1)[0], float(part.rsplit(" ", 1)[1])) for part in ranked.split(", ")]


def test_predict_face_crops_whole(synthetic, dan, tmp_path):
    images = sorted(glob.glob(os.path.join(synthetic["rafdb"], "Image", "aligned", "test_*")))[:2]
    r = predict("--model", dan, *images, "--top", "2", "--faces", "none")
    assert r.returncode == 0, r.stderr
    lines = r.stdout.strip().splitlines()
    assert [parse(line)[0] for line in lines] == images
    names = [n for n, _ in parse(lines[0])[1]]
    assert len(names) == 2 and set(names) <= CLASSES
    r = predict("--model", dan, tmp_path / "no.jpg")
    assert r.returncode == 1 and r.stderr.strip() == f"error: {tmp_path / 'no.jpg'}: not found"


def test_predict_finds_faces_in_a_photograph(dan, astronaut, tmp_path):
    """The face in a real photograph is found, cropped as the model directory says and classified exactly as
    that crop given whole; inputs that cannot be used are reported one line each and the rest still run;
    --out holds an annotated copy, CSV and JSON, and is not replaced without --overwrite."""
    blank, text = tmp_path / "blank.png", tmp_path / "notes.png"
    Image.fromarray(np.full((120, 160, 3), 128, np.uint8)).save(blank)
    text.write_text("not an image")
    out = tmp_path / "out"
    r = predict("--model", dan, blank, astronaut, text, tmp_path / "missing.jpg", "--top", "7", "--out", out)
    assert r.returncode == 0, r.stderr
    where, ranked = parse(r.stdout.strip())
    x, y, w, h = ASTRONAUT_FACE
    assert where == f"{astronaut} [face 1 at x={x} y={y} {w}x{h}]" and {n for n, _ in ranked} == CLASSES
    skipped = [line for line in r.stderr.splitlines() if line.startswith("skipped ")]
    assert skipped == [f"skipped {blank}: no face found",
                       f"skipped {text}: not a readable image (cannot identify image file '{text}')",
                       f"skipped {tmp_path / 'missing.jpg'}: not found"], r.stderr

    # the same crop, given whole: DAN's margin is 0 (upstream's demo classifies the cascade's box as it is)
    meta = json.loads((dan / "fer_jax.json").read_text())
    assert meta["preprocess"] == {"pp": "resize(32,32)|to_float|normalize('imagenet')", "margin": 0.0, "align": None}
    crop = tmp_path / "crop.png"
    Image.fromarray(np.asarray(Image.open(astronaut))[y:y + h, x:x + w]).save(crop)
    r = predict("--model", dan, crop, "--faces", "none", "--top", "7")
    assert r.returncode == 0, r.stderr
    whole = dict(parse(r.stdout.strip())[1])
    assert all(abs(p - whole[n]) <= 5e-4 for n, p in ranked), (ranked, whole)  # 3 printed decimals

    report = json.loads((out / "predictions.json").read_text())
    assert [p["box"] for p in report["predictions"]] == [list(ASTRONAUT_FACE)]
    assert report["preprocess"] == meta["preprocess"] and len(report["skipped"]) == 3
    with open(out / "predictions.csv") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 1 and rows[0]["label"] == ranked[0][0] and rows[0]["x"] == str(x)
    annotated = np.asarray(Image.open(out / report["predictions"][0]["annotated"]))
    photo = np.asarray(Image.open(astronaut))
    changed = np.any(annotated != photo, axis=-1)
    assert changed[y, x:x + w].all() and changed[y + h - 1, x:x + w].all()  # the box
    assert not changed[y + 5:y + h - 5, x + 5:x + w - 5].any() and not changed[300:].any()  # face and the rest kept
    r = predict("--model", dan, astronaut, "--out", out)
    assert r.returncode == 1 and r.stderr.strip().endswith("already holds predict.py results; choose another --out or "
                                                           "pass --overwrite"), r.stderr


@pytest.fixture(scope="module")
def emotion_fan(tmp_path_factory):
    """An Emotion-FAN model directory (random weights) taking 64 px frames."""
    import jax

    from fer_jax import models, pretrained

    spec = models.spec("emotion_fan")
    module = models.create("emotion_fan")
    inputs = {k: np.zeros(s.shape, s.dtype) for k, s in spec.example_inputs(1, 64).items()}
    path = tmp_path_factory.mktemp("fan") / "model"
    pretrained.save_pretrained(path, "emotion_fan", {}, spec.init(module, jax.random.key(0), inputs),
                               {"trained": {"image_size": 64, "task": "classification"}})
    return path


def test_predict_video_network(emotion_fan, astronaut, tmp_path):
    """Emotion-FAN classifies a folder of frames and a video file as one video each, with per-frame weights.
    A video of identical frames is the single frame's video: the attention-weighted means of equal features
    are that feature (self and relation attention alike)."""
    import cv2

    photo = np.asarray(Image.open(astronaut))
    frames = tmp_path / "frames"
    frames.mkdir()
    for i in range(4):
        Image.fromarray(photo).save(frames / f"{i:03d}.png")
    clip = tmp_path / "clip.avi"
    writer = cv2.VideoWriter(str(clip), cv2.VideoWriter_fourcc(*"MJPG"), 10, photo.shape[1::-1])
    for i in range(10):
        writer.write(cv2.cvtColor(np.roll(photo, 2 * i, axis=1), cv2.COLOR_RGB2BGR))
    writer.release()
    r = predict("--model", emotion_fan, astronaut, frames, clip, "--max_frames", "4", "--top", "7")
    assert r.returncode == 0, r.stderr
    lines = r.stdout.strip().splitlines()
    assert len(lines) == 5, r.stdout
    single, video = dict(parse(lines[0])[1]), dict(parse(lines[1])[1])
    assert parse(lines[1])[0] == f"{frames} [video, 4 frames]" and set(single) == set(map(str, range(7)))
    assert all(abs(video[n] - p) <= 1e-3 for n, p in single.items()), (single, video)  # printed to 3 decimals
    weights = [float(w.split(":")[1]) for w in lines[2].split(": ", 1)[1].split()]
    assert lines[2].startswith("  frame weights: 0:") and len(weights) == 4 and max(weights) - min(weights) < 1e-3
    assert parse(lines[3])[0] == f"{clip} [video, 4 frames]"
    assert [int(w.split(":")[0]) for w in lines[4].split(": ", 1)[1].split()] == [0, 3, 6, 9]


EXPLAIN = str(ROOT / "scripts" / "explain.py")


def explain(*args) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, EXPLAIN, *map(str, args)], capture_output=True, text=True, timeout=300)


def test_explain_on_trained_model(dan, astronaut, tmp_path):
    """Grad-CAM, Grad-CAM++ and DAN's four head maps for the face of a real photograph, for the predicted class
    and for a chosen one; a layer that is not a map is refused in one line; --list_layers marks the default."""
    r = explain("--model", dan, astronaut, "--out", tmp_path / "a")
    assert r.returncode == 0, r.stderr
    assert r.stdout.startswith("0001_astronaut.png: face 1 "), r.stdout
    report = json.loads((tmp_path / "a" / "explanations.json").read_text())
    assert report["layer"] == "features.7" and report["methods"] == ["gradcam", "gradcam++"]
    (figure,) = report["figures"]
    assert figure["faces"][0]["box"] == list(ASTRONAUT_FACE) and figure["faces"][0]["explained"] in CLASSES
    width, height = Image.open(tmp_path / "a" / figure["figure"]).size
    assert width > 4 * height > 600  # one row of 7 pictures: face, 2 maps, 4 heads

    r = explain("--model", dan, astronaut, "--out", tmp_path / "b", "--class", "Happy", "--method", "gradcam")
    assert r.returncode == 0, r.stderr
    face = json.loads((tmp_path / "b" / "explanations.json").read_text())["figures"][0]["faces"][0]
    assert face["explained"] == "Happy"
    r = explain("--model", dan, astronaut, "--out", tmp_path / "c", "--layer", "fc")
    assert r.returncode == 1 and r.stderr.strip().startswith("error: --layer 'fc' is not a module of dan whose "
                                                             "output is an image map"), r.stderr
    assert not (tmp_path / "c").exists()
    r = explain("--model", dan, "--list_layers")
    assert r.returncode == 0 and "features.7   (default)" in r.stdout.splitlines() and "features.6" in r.stdout


def test_explain_video_network(emotion_fan, astronaut, tmp_path):
    """Emotion-FAN: one figure per video, a row per frame, its self-attention and aggregation weights."""
    frames = tmp_path / "frames"
    frames.mkdir()
    for i in range(3):
        Image.open(astronaut).save(frames / f"{i:03d}.png")
    r = explain("--model", emotion_fan, frames, "--out", tmp_path / "out")
    assert r.returncode == 0, r.stderr
    (figure,) = json.loads((tmp_path / "out" / "explanations.json").read_text())["figures"]
    weights = figure["frame_weights"]
    assert figure["frames"] == [0, 1, 2] and set(weights) == {"self-attention", "aggregation"}
    # identical frames: equal weights; relation attention's aggregation factor is alpha / sum(alpha * beta)
    for values in weights.values():
        assert len(values) == 3 and max(values) - min(values) < 1e-6
    width, height = Image.open(tmp_path / "out" / figure["figure"]).size
    assert height > width  # three rows of pictures and the weight bars


def test_explain_feratt_views(astronaut, tmp_path):
    """FERAtt's attention image and attention map are drawn beside the class-activation maps."""
    import jax

    from fer_jax import models, pretrained

    spec, module = models.spec("feratt"), models.create("feratt")
    inputs = {k: np.zeros(s.shape, s.dtype) for k, s in spec.example_inputs(1, 64).items()}
    pretrained.save_pretrained(tmp_path / "model", "feratt", {}, spec.init(module, jax.random.key(0), inputs))
    r = explain("--model", tmp_path / "model", astronaut, "--out", tmp_path / "out", "--method", "gradcam++")
    assert r.returncode == 0, r.stderr
    report = json.loads((tmp_path / "out" / "explanations.json").read_text())
    assert report["layer"] == "netclass.layer4" and len(report["figures"][0]["faces"]) == 1


def test_predict_aligned_faces_with_dlib(emotion_fan, astronaut):
    """--detector dlib: Emotion-FAN's preprocessing aligns the face from its landmarks (get_face_chip, padding
    0.25, as upstream's AFEW / CK+ alignment), recorded in the model directory."""
    meta = json.loads((emotion_fan / "fer_jax.json").read_text())
    assert meta["preprocess"] == {"pp": "resize(64,64)|to_float", "margin": 0.1, "align": 0.25}
    r = predict("--model", emotion_fan, astronaut, "--detector", "dlib", "--top", "1")
    assert r.returncode == 0, r.stderr
    first = r.stdout.splitlines()[0]
    assert first.startswith(f"{astronaut} [face 1 at x=17") and " 91x91]: " in first, r.stdout
