"""Readers of the official layouts: parsing, label maps, remapping, and every error path."""

from __future__ import annotations

import os

import numpy as np
import pytest

import data_layouts
from fer_jax.data import labels as label_tables
from fer_jax.data.expression_sources import expw_split_of
from fer_jax.data.datasets import create_source
from fer_jax.data.sources import UnreadableImage, class_counts, decode_image
from fer_jax.errors import ConfigError, DatasetError


def raises_one_line(error, match, fn, *args, **kwargs):
    with pytest.raises(error, match=match) as info:
        fn(*args, **kwargs)
    assert "\n" not in str(info.value)
    return str(info.value)


# --- RAF-DB --------------------------------------------------------------------------------------------

def test_rafdb_splits_labels_and_paths(tmp_path):
    root = data_layouts.rafdb(str(tmp_path))
    train = create_source("rafdb", root, "train")
    test = create_source("rafdb", root, "test")
    assert len(train) == 4 and len(test) == 2
    np.testing.assert_array_equal(train.labels, [4, 0, 6, 2])  # file label - 1, file order
    np.testing.assert_array_equal(test.labels, [3, 1])
    assert train.class_names == label_tables.RAFDB and train.class_names[0] == "Surprise"
    assert train[0]["path"] == os.path.join(root, "Image", "aligned", "train_00001_aligned.jpg")
    assert train.decode(train[0]).size == (10, 10)
    assert train.task == "multiclass" and train.num_classes == 7
    assert repr(create_source("rafdb", root, "val")) == repr(test)  # one held-out split, two names
    assert repr(train) == repr(create_source("rafdb", root, "train"))


def test_rafdb_class_order_remaps_to_mftn_alphabetical(tmp_path):
    root = data_layouts.rafdb(str(tmp_path))
    source = create_source("rafdb", root, "train", class_order="mftn")
    assert source.class_names == label_tables.MFTN_7
    # official labels 5, 1, 7, 3 = Sad, Surprise, Neutral, Disgust -> alphabetical indices
    np.testing.assert_array_equal(source.labels, [5, 6, 4, 1])
    explicit = create_source("rafdb", root, "train", class_order=["angry", "Disgust", "fear", "happiness",
                                                                   "neutral", "sadness", "surprise"])
    np.testing.assert_array_equal(explicit.labels, source.labels)
    raises_one_line(ConfigError, "not a permutation", create_source, "rafdb", root, "train",
                    class_order=label_tables.MFTN_8)
    raises_one_line(ConfigError, "unknown class name", create_source, "rafdb", root, "train",
                    class_order=["Joy"] * 7)


@pytest.mark.parametrize("line, match", [
    ("train_00001.jpg", "expected 2 fields"),
    ("train_00001.jpg five", "not an integer"),
    ("train_00001.jpg 0", "outside 1..7"),
    ("train_00001.jpg 8", "outside 1..7"),
    ("val_00001.jpg 3", "train_ or test_"),
])
def test_rafdb_malformed_line_names_file_and_line(tmp_path, line, match):
    root = data_layouts.rafdb(str(tmp_path))
    list_file = os.path.join(root, "EmoLabel", "list_patition_label.txt")
    with open(list_file, "a") as f:
        f.write("\n" + line + "\n")  # a blank line, then the bad one: line 8
    message = raises_one_line(DatasetError, match, create_source, "rafdb", root, "train")
    assert f"{list_file}:8" in message and "list_patition_label.txt" in message


def test_rafdb_layout_errors(tmp_path):
    raises_one_line(DatasetError, "not found; expected .*list_patition_label", create_source, "rafdb",
                    str(tmp_path / "nowhere"), "train")
    os.makedirs(tmp_path / "empty")
    raises_one_line(DatasetError, "list file .* not found", create_source, "rafdb", str(tmp_path / "empty"),
                    "train")
    only_train = data_layouts.rafdb(str(tmp_path / "t"), lines=[("train_00001.jpg", 1)])
    raises_one_line(DatasetError, "'test' split .* is empty", create_source, "rafdb", only_train, "test")
    no_images = str(tmp_path / "n")
    data_layouts.write_text(os.path.join(no_images, "EmoLabel", "list_patition_label.txt"), "train_1.jpg 1\n")
    raises_one_line(DatasetError, "Image/aligned not found", create_source, "rafdb", no_images, "train")
    raises_one_line(ConfigError, "unknown split", create_source, "rafdb", only_train, "dev")


# --- AffectNet -----------------------------------------------------------------------------------------

def test_affectnet_folders_imagefolder_order_and_7_class(tmp_path):
    root = data_layouts.affectnet_folders(str(tmp_path))
    data_layouts.write_text(os.path.join(root, "train", "3", "notes.txt"), "not an image")
    data_layouts.write_jpeg(os.path.join(root, "train", "9", "uncertain.jpg"))  # code 9: excluded
    eight = create_source("affectnet", root, "train")
    assert eight.class_names == label_tables.AFFECTNET and len(eight) == 16
    np.testing.assert_array_equal(eight.labels, np.repeat(np.arange(8), 2))
    assert [os.path.relpath(p, root) for p in eight.paths[:2]] == ["train/0/img_0.jpg", "train/0/img_1.jpg"]
    seven = create_source("affectnet", root, "val", num_class=7)
    assert seven.num_classes == 7 and len(seven) == 14 and seven.labels.max() == 6
    assert "Contempt" not in seven.class_names
    assert repr(create_source("affectnet", root, "test", num_class=7)) == repr(seven)


def test_affectnet_folder_errors(tmp_path):
    root = data_layouts.affectnet_folders(str(tmp_path), codes=[0, 1])
    os.makedirs(os.path.join(root, "train", "happy"))
    raises_one_line(DatasetError, "not an expression code", create_source, "affectnet", root, "train")
    raises_one_line(DatasetError, "directory .*val.* not found", create_source, "affectnet",
                    str(tmp_path / "x"), "val")
    raises_one_line(ConfigError, "num_class must be 7 or 8", create_source, "affectnet", root, "val",
                    num_class=6)
    raises_one_line(ConfigError, "layout must be", create_source, "affectnet", root, "val", layout="lmdb")
    raises_one_line(ConfigError, "bad options", create_source, "affectnet", root, "val", num_classes=7)


def test_affectnet_csv_excludes_codes_8_to_10_and_crops_the_face(tmp_path):
    rows = [("1/a.jpg", 3, (5, 4, 20, 16)), ("1/b.jpg", 8, (0, 0, 10, 10)), ("2/c.jpg", 7, (0, 0, 40, 30)),
            ("2/d.jpg", 10, (0, 0, 10, 10)), ("2/e.jpg", 0, (30, 20, 20, 20))]
    root = data_layouts.affectnet_csv(str(tmp_path), {"training.csv": rows, "validation.csv": rows[:1]})
    source = create_source("affectnet", root, "train", layout="csv")
    np.testing.assert_array_equal(source.labels, [3, 7, 0])
    np.testing.assert_array_equal(source[0]["box"], [5, 4, 25, 20])
    assert source.decode(source[0]).size == (20, 16)
    assert source.decode(source[2]).size == (10, 10)  # box clipped at the 40x30 border
    uncropped = create_source("affectnet", root, "train", layout="csv", crop_face=False)
    assert "box" not in uncropped[0] and uncropped.decode(uncropped[0]).size == (40, 30)
    assert len(create_source("affectnet", root, "train", layout="csv", num_class=7)) == 2
    assert len(create_source("affectnet", root, "val", layout="csv")) == 1


def test_affectnet_csv_errors(tmp_path):
    root = data_layouts.affectnet_csv(str(tmp_path), {"training.csv": [("1/a.jpg", 3, (0, 0, 5, 5))]})
    csv_file = os.path.join(root, "training.csv")
    with open(csv_file, "a") as f:
        f.write("1/a.jpg,0,0,5,5,1;2,happy,0,0\n")
    raises_one_line(DatasetError, r"training.csv:3: 'happy' is not an integer", create_source, "affectnet",
                    root, "train", layout="csv")
    data_layouts.write_text(csv_file, data_layouts.AFFECTNET_HEADER + "1/a.jpg,0,0,5,5,1;2,11,0,0\n")
    raises_one_line(DatasetError, "outside 0..10", create_source, "affectnet", root, "train", layout="csv")
    data_layouts.write_text(csv_file, "path,label\n1/a.jpg,3\n")
    raises_one_line(DatasetError, r"training.csv:1: header lacks", create_source, "affectnet", root,
                    "train", layout="csv")
    raises_one_line(DatasetError, "validation.csv not found", create_source, "affectnet", root, "val",
                    layout="csv")


# --- CelebA --------------------------------------------------------------------------------------------

def _celeba_values(n, seed=0):
    return np.where(np.random.default_rng(seed).random((n, 40)) < 0.5, -1, 1)


def test_celeba_official_partitions_and_labels(tmp_path):
    values = _celeba_values(6)
    root = data_layouts.celeba_official(str(tmp_path), values, [0, 0, 1, 2, 0, 2])
    train = create_source("celeba", root, "train")
    assert train.task == "multilabel" and train.num_classes == 40
    assert train.labels.shape == (3, 40) and train.labels.dtype == np.int32
    np.testing.assert_array_equal(train.labels, (values[[0, 1, 4]] > 0).astype(np.int32))
    assert [os.path.basename(p) for p in train.paths] == ["000001.jpg", "000002.jpg", "000005.jpg"]
    assert len(create_source("celeba", root, "val")) == 1
    test = create_source("celeba", root, "test", layout="official")
    np.testing.assert_array_equal(test.labels, (values[[3, 5]] > 0).astype(np.int32))
    np.testing.assert_array_equal(class_counts(test), test.labels.sum(0))
    assert train.decode(train[0]).size == (22, 27)


def test_celeba_column_reorder(tmp_path):
    values = _celeba_values(3)
    root = data_layouts.celeba_official(str(tmp_path), values, [0, 0, 0])
    order = list(reversed(label_tables.CELEBA_ATTRIBUTES))
    source = create_source("celeba", root, "train", class_order=order)
    assert source.class_names == tuple(order)
    np.testing.assert_array_equal(source.labels, (values[:, ::-1] > 0).astype(np.int32))


def test_celeba_presplit_faer_layout(tmp_path):
    rows = {"train": [("a.jpg", [2] + [0] * 38 + [-1])], "test": [("b.jpg", [1] * 40), ("c.jpg", [-1] * 40)]}
    for split, entries in rows.items():
        data_layouts.write_text(str(tmp_path / f"{split}_label.txt"),
                                "".join(f"{n} {' '.join(map(str, v))}\n" for n, v in entries))
        for name, _ in entries:
            data_layouts.write_jpeg(str(tmp_path / split / name))
    train = create_source("celeba", str(tmp_path), "train")
    np.testing.assert_array_equal(train.labels[0], [1] + [0] * 39)  # value > 0 -> 1, else 0
    test = create_source("celeba", str(tmp_path), "test", layout="presplit")
    np.testing.assert_array_equal(test.labels.sum(1), [40, 0])
    assert test.paths[1] == str(tmp_path / "test" / "c.jpg")
    raises_one_line(ConfigError, "unknown split", create_source, "celeba", str(tmp_path), "val")


def test_celeba_errors(tmp_path):
    root = str(tmp_path)
    values = _celeba_values(3)
    data_layouts.celeba_official(root, values, [0, 1, 2])
    attr = os.path.join(root, "list_attr_celeba.txt")
    with open(attr) as f:
        lines = f.read().splitlines(keepends=True)

    data_layouts.write_text(attr, "".join(["4\n"] + lines[1:]))
    raises_one_line(DatasetError, "announces 4 images but lists 3", create_source, "celeba", root, "train")
    data_layouts.write_text(attr, "".join(lines[:1] + [lines[1].replace("Smiling", "Smile")] + lines[2:]))
    raises_one_line(DatasetError, r"list_attr_celeba.txt:2: line 2 is not the 40 official", create_source,
                    "celeba", root, "train")
    data_layouts.write_text(attr, "".join(lines[:3] + [lines[3].replace(" 1", " x", 1)] + lines[4:]))
    raises_one_line(DatasetError, r"list_attr_celeba.txt:4: 'x' is not an integer", create_source, "celeba",
                    root, "train")
    data_layouts.write_text(attr, "".join(lines[:4] + ["000003.jpg 1 -1\n"]))
    raises_one_line(DatasetError, r"list_attr_celeba.txt:5: expected a file name and 40 values",
                    create_source, "celeba", root, "train")
    data_layouts.write_text(attr, "".join(lines))
    partition = os.path.join(root, "list_eval_partition.txt")
    data_layouts.write_text(partition, "000001.jpg 0\n000002.jpg 3\n")
    raises_one_line(DatasetError, r"list_eval_partition.txt:2: partition 3", create_source, "celeba", root,
                    "train")
    data_layouts.write_text(partition, "000001.jpg 0\n000009.jpg 0\n")
    raises_one_line(DatasetError, "000009.jpg\\) are not in", create_source, "celeba", root, "train")
    raises_one_line(DatasetError, "neither list_attr_celeba.txt nor", create_source, "celeba",
                    str(tmp_path / "img_align_celeba"), "train")
    raises_one_line(ConfigError, "layout must be", create_source, "celeba", root, "train", layout="zip")


def test_celeba_tfds_layout_without_tensorflow_datasets_is_a_clear_error(tmp_path):
    try:
        import tensorflow_datasets  # noqa: F401
    except ImportError:
        raises_one_line(ConfigError, "needs tensorflow_datasets", create_source, "celeba", str(tmp_path),
                        "train", layout="tfds")
    else:
        raises_one_line(DatasetError, "dataset_info.json not found", create_source, "celeba", str(tmp_path),
                        "train", layout="tfds")


def test_celeba_tfds_array_record_layout(tmp_path):
    pytest.importorskip("tensorflow_datasets")
    values = {s: np.random.default_rng(k).integers(0, 2, (n, 40)) for k, (s, n) in
              enumerate([("train", 3), ("validation", 1), ("test", 2)])}
    root = data_layouts.celeba_tfds(str(tmp_path), values)
    source = create_source("celeba", root, "val", layout="tfds")
    np.testing.assert_array_equal(source.labels, values["validation"])
    test = create_source("celeba", root, "test", layout="tfds")
    np.testing.assert_array_equal(test.labels, values["test"])
    assert isinstance(test[1]["image"], bytes) and test.decode(test[1]).size == (178, 218)
    assert repr(test) == repr(create_source("celeba", root, "test", layout="tfds"))


# --- ExpW ----------------------------------------------------------------------------------------------

def test_expw_boxes_and_hash_split(tmp_path):
    names = [f"img_{i}.jpg" for i in range(40)]
    # box columns are top left right bottom
    lines = [f"{n} {k} 2 3 13 22 {50 + i}.5 {i % 7}" for i, n in enumerate(names) for k in range(2)]
    root = data_layouts.expw(str(tmp_path), lines, {n: (30, 25) for n in names})
    train = create_source("expw", root, "train")
    test = create_source("expw", root, "test")
    assert len(train) + len(test) == 80 and len(test) > 0 and len(train) > len(test)
    np.testing.assert_array_equal(train[0]["box"], [3, 2, 13, 22])  # (left, top, right, bottom)
    assert train.decode(train[0]).size == (10, 20)
    test_images = {os.path.basename(p) for p in test.paths}
    assert test_images == {n for n in names if expw_split_of(n, 0.1, 0) == "test"}
    assert test_images.isdisjoint(os.path.basename(p) for p in train.paths)  # both faces in one split
    other = create_source("expw", root, "test", split_seed=1)
    assert {os.path.basename(p) for p in other.paths} != test_images
    assert train.class_names == label_tables.EXPW
    assert repr(train) == repr(create_source("expw", root, "train"))


def test_expw_hash_split_ratio():
    tests = sum(expw_split_of(f"face_{i}.jpg", 0.1, 0) == "test" for i in range(20000))
    assert 0.09 < tests / 20000 < 0.11  # binomial sd 0.002: 5 sd either side


@pytest.mark.parametrize("line, match", [
    ("a.jpg 0 2 3 13 22 50.5", "expected 8 fields"),
    ("a.jpg 0 2 3 13 22 high 1", "confidence is not a number"),
    ("a.jpg 0 2 3 1x 22 50.5 1", "'1x' is not an integer"),
    ("a.jpg 0 2 3 13 22 50.5 7", "expression 7 is outside 0..6"),
])
def test_expw_malformed_lines(tmp_path, line, match):
    root = data_layouts.expw(str(tmp_path), ["a.jpg 0 2 3 13 22 50.5 1", line], {"a.jpg": (30, 25)})
    raises_one_line(DatasetError, rf"label.lst:2: {match}", create_source, "expw", root, "train")


def test_factory_rejects_unknown_dataset(tmp_path):
    raises_one_line(ConfigError, "unknown dataset 'fer2013'", create_source, "fer2013", str(tmp_path), "train")


# --- decoding ------------------------------------------------------------------------------------------

def test_decode_missing_corrupt_and_empty_box(tmp_path):
    path = str(tmp_path / "bad.jpg")
    data_layouts.write_corrupt(path)
    with pytest.raises(UnreadableImage, match="bad.jpg"):
        decode_image(path)
    with pytest.raises(UnreadableImage, match="FileNotFoundError"):
        decode_image(str(tmp_path / "missing.jpg"))
    good = str(tmp_path / "good.jpg")
    data_layouts.write_jpeg(good, (12, 10))
    with pytest.raises(UnreadableImage, match="outside"):
        decode_image(good, np.array([20, 0, 30, 5]))
    assert decode_image(good, np.array([-5, 2, 4, 40])).size == (4, 8)
    with open(good, "rb") as f:
        assert decode_image(f.read()).mode == "RGB"
