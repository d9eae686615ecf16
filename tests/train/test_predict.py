"""scripts/predict.py on a trained model directory."""

from __future__ import annotations

import glob
import os
import subprocess
import sys

from conftest import ROOT, load_recipe
from fer_jax.train.loop import train_and_evaluate


def test_predict_on_trained_model(synthetic, tmp_path):
    c = load_recipe("dan_rafdb", "smoke")
    c.data.root = synthetic["rafdb"]
    train_and_evaluate(c, str(tmp_path / "run"), log=lambda *a: None)
    images = sorted(glob.glob(os.path.join(synthetic["rafdb"], "Image", "aligned", "test_*")))[:2]
    script = str(ROOT / "scripts" / "predict.py")
    r = subprocess.run([sys.executable, script, "--model", str(tmp_path / "run" / "best"), *images, "--top", "2"],
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    lines = r.stdout.strip().splitlines()
    assert len(lines) == 2 and lines[0].startswith(images[0] + ": ")
    names = [part.rsplit(" ", 1)[0] for part in lines[0].split(": ", 1)[1].split(", ")]
    assert len(names) == 2 and set(names) <= {"Surprise", "Fear", "Disgust", "Happy", "Sad", "Anger", "Neutral"}
    r = subprocess.run([sys.executable, script, "--model", str(tmp_path / "run" / "best"), str(tmp_path / "no.jpg")],
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 1 and r.stderr.strip() == f"error: image not found: {tmp_path / 'no.jpg'}"
