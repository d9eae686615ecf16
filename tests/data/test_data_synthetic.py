"""Synthetic data: every layout (images and videos) is readable by its source; generation is atomic, deterministic,
learnable."""

from __future__ import annotations

import os
import subprocess
import sys

import numpy as np
import pytest

from fer_jax.data import labels as label_tables
from fer_jax.data import synthetic
from fer_jax.data.datasets import create_source
from fer_jax.data.synthetic_layouts import make_synthetic
from fer_jax.data.video_sources import CKPLUS_LIST
from fer_jax.errors import ConfigError

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


@pytest.mark.parametrize("layout, variant, options, held_out, size", [
    ("rafdb", None, {}, "test", (100, 100)),
    ("affectnet", None, {}, "val", (128, 128)),
    ("affectnet", "csv", {"layout": "csv"}, "val", (128, 128)),
    ("expw", None, {}, "test", (96, 96)),
])
def test_expression_layouts_are_readable_and_balanced(tmp_path, layout, variant, options, held_out, size):
    out = make_synthetic(layout, str(tmp_path / "d"), num_train=32, num_test=16, variant=variant)
    train = create_source(layout, out, "train", **options)
    test = create_source(layout, out, held_out, **options)
    if layout == "expw":  # one pool of faces, split by the reader's name hash
        assert len(train) + len(test) == 48
    elif variant == "csv":  # ~5 % of rows carry the excluded codes 8-10
        assert 28 <= len(train) <= 32 and 12 <= len(test) <= 16
    else:
        assert (len(train), len(test)) == (32, 16)
        counts = np.bincount(train.labels, minlength=train.num_classes)
        assert counts.max() - counts.min() <= 1
    assert train.decode(train[0]).size == size


def test_rafdb_layout_matches_the_official_names(tmp_path):
    out = make_synthetic("rafdb", str(tmp_path / "raf"), num_train=3, num_test=2, image_size=64)
    with open(os.path.join(out, "EmoLabel", "list_patition_label.txt")) as f:
        names = [line.split()[0] for line in f]
    assert names == ["train_00001.jpg", "train_00002.jpg", "train_00003.jpg", "test_0001.jpg", "test_0002.jpg"]
    assert sorted(os.listdir(os.path.join(out, "Image", "aligned")))[0] == "test_0001_aligned.jpg"
    assert create_source("rafdb", out, "test").decode(create_source("rafdb", out, "test")[0]).size == (64, 64)


@pytest.mark.parametrize("variant", ["official", "presplit"])
def test_celeba_layouts_are_readable(tmp_path, variant):
    out = make_synthetic("celeba", str(tmp_path / "c"), num_train=6, num_test=3, variant=variant)
    train = create_source("celeba", out, "train")
    assert len(train) == 6 and train.labels.shape == (6, 40)
    assert len(create_source("celeba", out, "test")) == 3
    assert train.decode(train[0]).size == (178, 218)
    if variant == "official":
        assert len(create_source("celeba", out, "val")) == 3
        with open(os.path.join(out, "list_attr_celeba.txt")) as f:
            assert f.readline().strip() == "12"


def test_celeba_attribute_dependencies():
    values = np.stack([synthetic.sample_celeba_attributes(np.random.default_rng(i)) for i in range(300)])
    a = {n: values[:, k] for k, n in enumerate(label_tables.CELEBA_ATTRIBUTES)}
    np.testing.assert_array_equal(a["No_Beard"], 1 - a["Male"])
    hair = a["Black_Hair"] + a["Blond_Hair"] + a["Brown_Hair"] + a["Gray_Hair"]
    assert hair.max() == 1 and (hair[a["Bald"] == 1] == 0).all() and (a["Bangs"][a["Bald"] == 1] == 0).all()
    assert 0.35 < a["Young"].mean() < 0.65  # a noise label: a fair coin


def test_generation_is_deterministic_by_seed(tmp_path):
    files = []
    for name, seed in (("a", 3), ("b", 3), ("c", 4)):
        out = make_synthetic("rafdb", str(tmp_path / name), num_train=2, num_test=1, seed=seed)
        with open(os.path.join(out, "Image", "aligned", "train_00002_aligned.jpg"), "rb") as f:
            files.append(f.read())
    assert files[0] == files[1] and files[0] != files[2]


def test_argument_errors_and_nothing_half_written(tmp_path, monkeypatch):
    taken = tmp_path / "taken"
    taken.mkdir()
    (taken / "x").write_text("keep me")
    with pytest.raises(ConfigError, match="exists and is not an empty directory"):
        make_synthetic("rafdb", str(taken), num_train=2, num_test=1)
    assert os.listdir(taken) == ["x"]
    with pytest.raises(ConfigError, match="unknown layout"):
        make_synthetic("fer2013", str(tmp_path / "o"))
    with pytest.raises(ConfigError, match="unknown variant"):
        make_synthetic("rafdb", str(tmp_path / "o"), variant="csv")
    with pytest.raises(ConfigError, match="178x218"):
        make_synthetic("celeba", str(tmp_path / "o"), image_size=64)
    with pytest.raises(ConfigError, match=">= 1"):
        make_synthetic("rafdb", str(tmp_path / "o"), num_train=0)

    calls = []

    def failing(*args, **kwargs):
        calls.append(1)
        if len(calls) == 3:
            raise RuntimeError("disk full")
        return original(*args, **kwargs)

    original = synthetic.draw_expression
    monkeypatch.setattr(synthetic, "draw_expression", failing)
    with pytest.raises(RuntimeError, match="disk full"):
        make_synthetic("rafdb", str(tmp_path / "o"), num_train=5, num_test=1)
    assert sorted(os.listdir(tmp_path)) == ["taken"]  # no output and no temp dir left behind


def test_empty_existing_directory_is_filled(tmp_path):
    (tmp_path / "empty").mkdir()
    out = make_synthetic("expw", str(tmp_path / "empty"), num_train=3, num_test=1)
    assert sorted(os.listdir(out)) == ["image", "label"] and sorted(os.listdir(tmp_path)) == ["empty"]


def test_script_end_to_end(tmp_path):
    command = [sys.executable, os.path.join(REPO, "scripts", "make_synthetic.py"), "--layout", "rafdb",
               "--out", str(tmp_path / "raf"), "--num_train", "7", "--num_test", "7"]
    done = subprocess.run(command, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert len(create_source("rafdb", str(tmp_path / "raf"), "test")) == 7
    again = subprocess.run(command, capture_output=True, text=True, timeout=120)
    assert again.returncode == 1
    assert again.stderr.startswith("error: output ") and again.stderr.count("\n") == 1


@pytest.mark.parametrize("layout, held_out, short", [("afew", "val", 3), ("ckplus", "test", 5)])
def test_synthetic_video_layouts_are_readable(tmp_path, layout, held_out, short):
    out = make_synthetic(layout, str(tmp_path / layout), num_train=28, num_test=7)
    train, test = create_source(layout, out, "train"), create_source(layout, out, held_out)
    assert (train.num_videos, test.num_videos) == (28, 7)
    assert np.bincount(train.video_labels, minlength=7).tolist() == [4] * 7  # balanced
    lengths = np.bincount(train.example_video)  # group unit: one group per frame
    assert lengths.min() <= short < lengths.max()  # both of upstream's sampling branches occur
    assert train.decode(train.example(0)["frames"][0]).size == (64, 64)
    assert len(test) == sum(np.bincount(test.example_video))
    if layout == "ckplus":
        with open(os.path.join(out, "txt", CKPLUS_LIST)) as f:
            headers = [line for line in f if "-fold" in line]
        assert [h.split()[0] for h in headers] == [f"{k}-fold" for k in range(1, 11)]
        assert create_source(layout, out, "test", fold=1).num_videos == 4  # 28 videos over folds 1-9


def test_synthetic_videos_are_deterministic_by_seed(tmp_path):
    def frame(name, seed):
        out = make_synthetic("afew", str(tmp_path / name), num_train=2, num_test=1, seed=seed)
        source = create_source("afew", out, "train", unit="frame")
        with open(source.frame_paths[-1], "rb") as f:
            return source.video_names, f.read()
    a, b, c = frame("a", 3), frame("b", 3), frame("c", 4)
    assert a == b and a[1] != c[1]


@pytest.mark.parametrize("layout", ["afew", "ckplus"])
def test_make_synthetic_script_writes_video_layouts(tmp_path, layout):
    command = [sys.executable, os.path.join(REPO, "scripts", "make_synthetic.py"), "--layout", layout,
               "--out", str(tmp_path / layout), "--num_train", "9", "--num_test", "2", "--image_size", "32"]
    done = subprocess.run(command, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    source = create_source(layout, str(tmp_path / layout), "train", unit="frame")
    assert source.num_videos == 9 and source.decode(source.example(0)["image"]).size == (32, 32)


def _hog(image, cells=6, bins=8):
    """A small histogram-of-gradients descriptor: shapes, not colours."""
    gray = np.asarray(image.convert("L").resize((48, 48)), dtype=np.float32)
    gy, gx = np.gradient(gray)
    magnitude = np.hypot(gx, gy)
    orientation = np.minimum(((np.arctan2(gy, gx) % np.pi) / np.pi * bins).astype(int), bins - 1)
    c = 48 // cells
    hist = [np.bincount(orientation[i:i + c, j:j + c].ravel(), magnitude[i:i + c, j:j + c].ravel(), bins)
            for i in range(0, 48, c) for j in range(0, 48, c)]
    hist = np.concatenate(hist)
    return hist / (np.linalg.norm(hist) + 1e-6)


def _nearest_centroid_accuracy(features, train, test):
    x_train = np.stack([features(train.decode(train[i])) for i in range(len(train))])
    x_test = np.stack([features(test.decode(test[i])) for i in range(len(test))])
    centroids = np.stack([x_train[train.labels == c].mean(0) for c in range(train.num_classes)])
    predictions = ((x_test[:, None] - centroids[None]) ** 2).sum(-1).argmin(1)
    return (predictions == test.labels).mean()


def test_expressions_are_separable_by_shape_not_by_pixels(tmp_path):
    out = make_synthetic("rafdb", str(tmp_path / "raf"), num_train=350, num_test=140)
    train, test = create_source("rafdb", out, "train"), create_source("rafdb", out, "test")
    pixels = _nearest_centroid_accuracy(
        lambda img: np.asarray(img.resize((16, 16)), dtype=np.float32).ravel() / 255, train, test)
    shapes = _nearest_centroid_accuracy(_hog, train, test)
    # chance is 1/7 = 0.14. Measured with these seeds: pixels ~0.2 (position, colour and clutter hide
    # the class), gradient histograms ~0.75 (the drawn shapes carry it); a CNN reaches > 0.95.
    assert pixels < 0.35
    assert 0.5 < shapes < 0.98
