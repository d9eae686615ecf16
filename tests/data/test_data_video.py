"""Emotion-FAN's videos (AFEW, CK+): readers, group sampling, multi-image examples in the pipelines."""

from __future__ import annotations

import os

import numpy as np
import pytest

import data_layouts
from data_fakes import FramesSource, read_back
from fer_jax.data import labels as label_tables
from fer_jax.data import pipeline, sources
from fer_jax.data.datasets import create_source
from fer_jax.data.video_sources import EmptyVideoWarning, sample_groups
from fer_jax.errors import ConfigError, DatasetError

LABELS = np.random.default_rng(0).integers(0, 5, 40)


def raises_one_line(error, match, fn, *args, **kwargs):
    with pytest.raises(error, match=match) as info:
        fn(*args, **kwargs)
    assert "\n" not in str(info.value)
    return str(info.value)


# --- AFEW ----------------------------------------------------------------------------------------------

def test_afew_videos_labels_frames_and_units(tmp_path):
    root = data_layouts.afew(str(tmp_path))
    train = create_source("afew", root, "train")  # groups by default, as upstream trains
    assert train.unit == "group" and train.image_entries == ("frames",) and not train.shared_draws
    assert train.video_names == ("Angry/000046280", "Happy/010404607", "Neutral/002640847")
    np.testing.assert_array_equal(train.video_labels, [1, 0, 5])  # Emotion-FAN: Happy 0, Angry 1, Neutral 5
    assert train.class_names == label_tables.AFEW and train.num_videos == 3
    assert len(train) == 5 + 2 + 7  # one group per frame, in both sampling branches
    np.testing.assert_array_equal(train.labels, np.repeat([1, 0, 5], [5, 2, 7]))
    frames = [os.path.relpath(p, root) for p in train.frame_paths[:5]]
    assert frames == [f"face/train_afew/Angry/000046280/{i:07d}.jpg" for i in range(1, 6)]  # sorted, no Thumbs.db
    example = train.example(6)
    assert set(example) == {"frames", "label", "video"} and example["video"] == 1 and example["label"] == 0
    assert all("Happy/010404607" in ref["path"] for ref in example["frames"])
    val = create_source("afew", root, "val")  # every frame by default, as upstream evaluates
    assert val.unit == "frame" and len(val) == 5 and set(val.example(0)) == {"image", "label", "video"}
    np.testing.assert_array_equal(val.example_video, [0, 0, 0, 0, 1])
    assert repr(create_source("afew", root, "test")) == repr(val)
    assert repr(train) == repr(create_source("afew", root, "train"))
    frame_train = create_source("afew", root, "train", unit="frame")
    assert len(frame_train) == 14 and frame_train.decode(frame_train.example(0)["image"]).size == (8, 6)


def test_afew_list_and_face_folders_can_live_elsewhere(tmp_path):
    root = data_layouts.afew(str(tmp_path / "data"))
    os.rename(os.path.join(root, "txt"), str(tmp_path / "lists"))
    os.rename(os.path.join(root, "face", "val_afew"), str(tmp_path / "faces_val"))
    val = create_source("afew", root, "val", eval_list=str(tmp_path / "lists" / "afew_eval.txt"),
                        eval_faces=str(tmp_path / "faces_val"))
    assert val.num_videos == 2 and val.frame_paths[0].startswith(str(tmp_path / "faces_val"))


@pytest.mark.parametrize("line, match", [
    ("Angry/000046280", "expected '<folder>/<video> <Emotion>'"),
    ("000046280 Angry", "expected '<folder>/<video> <Emotion>'"),
    ("Angry/000000001 Happy", "the emotion folder 'Angry' differs from the label 'Happy'"),
    ("Contempt/000000001 Contempt", r"'Contempt' is not one of the AFEW emotions \['Happy', 'Angry'"),
    ("Angry/000046280 Angry", r"video Angry/000046280 is listed twice \(also on line 1\)"),
    ("Angry/999999999 Angry", "video folder .*face/train_afew/Angry/999999999 not found"),
])
def test_afew_list_errors_name_the_list_file_and_line(tmp_path, line, match):
    root = data_layouts.afew(str(tmp_path))
    list_file = os.path.join(root, "txt", "afew_train.txt")
    with open(list_file, "a") as f:
        f.write("\n" + line + "\n")  # a blank line, then the bad one: line 5
    message = raises_one_line(DatasetError, match, create_source, "afew", root, "train")
    assert f"{list_file}:5:" in message


def test_afew_empty_video_folders_are_left_out_with_a_warning(tmp_path):
    root = data_layouts.afew(str(tmp_path))
    empty = os.path.join(root, "face", "val_afew", "Surprise", "000000007")
    os.makedirs(empty)
    with open(os.path.join(root, "txt", "afew_eval.txt"), "a") as f:
        f.write("Surprise/000000007 Surprise\n")
    with pytest.warns(EmptyVideoWarning, match="1 listed video folder.*Surprise/000000007"):
        val = create_source("afew", root, "val")
    assert val.video_names == ("Fear/000633000", "Sad/001444527") and val.example_video.max() == 1
    data_layouts.write_text(os.path.join(root, "txt", "afew_eval.txt"), "Surprise/000000007 Surprise\n")
    with pytest.warns(EmptyVideoWarning):
        raises_one_line(DatasetError, "'val' split .* is empty", create_source, "afew", root, "val")


def test_afew_layout_and_option_errors(tmp_path):
    root = data_layouts.afew(str(tmp_path))
    raises_one_line(DatasetError, "list file .*txt/missing.txt not found", create_source, "afew",
                    root, "val", eval_list="txt/missing.txt")
    raises_one_line(DatasetError, "directory .*face/elsewhere not found; expected Emotion-FAN's data/",
                    create_source, "afew", root, "train", train_faces="face/elsewhere")
    raises_one_line(ConfigError, "unit must be 'group' or 'frame'", create_source, "afew", root, "train",
                    unit="clip")
    raises_one_line(ConfigError, "group_size must be an integer >= 1", create_source, "afew", root, "train",
                    group_size=0)
    raises_one_line(ConfigError, "unknown split 'dev'", create_source, "afew", root, "dev")
    raises_one_line(ConfigError, "afew: bad options", create_source, "afew", root, "train", fold=3)
    message = raises_one_line(ConfigError, "unknown dataset", create_source, "afew8", root, "train")
    assert "'afew'" in message and "'ckplus'" in message and "'rafdb'" in message
    with pytest.raises(ValueError, match="registered twice"):
        sources.register("afew")(lambda root, split: None)


# --- CK+ -----------------------------------------------------------------------------------------------

def test_ckplus_folds_labels_and_default_fold_10(tmp_path):
    root = data_layouts.ckplus(str(tmp_path))
    test = create_source("ckplus", root, "test")
    assert test.video_names == ("S034/003", "S034/005", "S073/006") and test.unit == "frame"
    np.testing.assert_array_equal(test.video_labels, [1, 0, 2])  # Angry, Happy, Disgust
    assert test.class_names == label_tables.CKPLUS_EMOTION_FAN and test.class_names[5] == "Contempt"
    assert len(test) == 7 + 3 + 12 and os.path.basename(test.frame_paths[0]) == "S034_003_00000001.png"
    train = create_source("ckplus", root, "train")
    assert train.video_names == tuple(f"S{100 + k:03d}/001" for k in range(1, 10))  # folds in order
    contempt = [k for k in range(1, 10) if k % 4 == 1]
    assert [train.video_labels[k - 1] for k in contempt] == [5] * len(contempt)
    fold3 = create_source("ckplus", root, "val", fold=3)
    assert fold3.video_names == ("S103/001",) and "fold=3" in repr(fold3)
    train3 = create_source("ckplus", root, "train", fold=3, unit="frame")
    assert train3.num_videos == 11 and "S103/001" not in train3.video_names


@pytest.mark.parametrize("edit, match", [
    (lambda t: t.replace("1-fold 1", "1-folds 1"), r":1: expected a fold header"),
    (lambda t: t.replace("1-fold 1 Contempt 1", "1-fold 1 Contempt"), r":1: expected a fold header"),
    (lambda t: t.replace("1-fold 1 Contempt 1", "1-fold 1 Contempt 2"), r":1: the emotion counts add up to 2"),
    (lambda t: t.replace("1-fold 1 Contempt 1", "1-fold 1 Angry 1"), r":1: the fold's lines hold \{'Contempt'"),
    (lambda t: t.replace("1-fold 1 Contempt 1", "1-fold 2 Contempt 2"), r":3: a fold header where a video line"),
    (lambda t: t.replace("1-fold 1 Contempt 1", "1-fold 1 Neutral 1"), r":1: 'Neutral' is not one of the CK\+"),
    (lambda t: t.replace("2-fold", "1-fold"), r":3: fold 1 appears twice"),
    (lambda t: t.replace("S102/001", "S101/001"), r":4: video S101/001 is listed twice \(also on line 2\)"),
    (lambda t: t + "11-fold 2 Happy 2\nS999/001 Happy\n", r":\d+: the header announces 2 videos but 1 lines"),
])
def test_ckplus_list_errors(tmp_path, edit, match):
    root = data_layouts.ckplus(str(tmp_path))
    list_file = os.path.join(root, "txt", data_layouts.CKPLUS_FILE)
    with open(list_file) as f:
        text = f.read()
    data_layouts.write_text(list_file, edit(text))
    raises_one_line(DatasetError, data_layouts.CKPLUS_FILE.replace("+", r"\+") + match, create_source, "ckplus",
                    root, "test")


def test_ckplus_fold_and_folder_errors(tmp_path):
    root = data_layouts.ckplus(str(tmp_path))
    raises_one_line(DatasetError, r"has no fold 11 \(it has \[1, 2, .*10\]\)", create_source, "ckplus", root,
                    "test", fold=11)
    raises_one_line(ConfigError, "fold must be an integer", create_source, "ckplus", root, "test", fold="10")
    os.rename(os.path.join(root, "face", "ck_face", "S073"), os.path.join(root, "S073"))
    raises_one_line(DatasetError, r"step10.txt:\d+: video folder .*ck_face/S073/006 not found", create_source,
                    "ckplus", root, "test")
    assert create_source("ckplus", root, "test", fold=1).num_videos == 1  # only the folds asked for are read


# --- group sampling ------------------------------------------------------------------------------------

@pytest.mark.parametrize("rule, n, low, high", [
    ("afew", 10, [0, 3, 6], [3, 6, 9]),  # p = 3: [0, p], [p, 2p], [2p, n-1]
    ("afew", 4, [0, 1, 2], [1, 2, 3]),
    ("ckplus", 20, [0, 4, 8], [4, 8, 12]),  # p = 4: [0, p], [p, 2p], [2p, 3p], the first 60 %
    ("ckplus", 6, [0, 1, 2], [1, 2, 3]),
])
def test_group_bounds_are_upstreams_and_inclusive(rule, n, low, high):
    groups = np.concatenate([sample_groups(n, 3, rule, np.random.default_rng(s)) for s in range(100)])
    assert groups.shape == (100 * n, 3)  # n groups per video
    np.testing.assert_array_equal(groups.min(0), low)  # 100 n draws per column: every bound is reached
    np.testing.assert_array_equal(groups.max(0), high)


@pytest.mark.parametrize("rule, n", [("afew", 1), ("afew", 3), ("ckplus", 2), ("ckplus", 5)])
def test_short_videos_get_one_group_per_frame(rule, n):
    groups = np.concatenate([sample_groups(n, 3, rule, np.random.default_rng(s)) for s in range(50)])
    np.testing.assert_array_equal(groups[:, 0], np.tile(np.arange(n), 50))  # (frame j, random, random)
    assert groups.min() == 0 and groups.max() == n - 1


def test_groups_are_drawn_once_reproducibly_per_video(tmp_path):
    root = data_layouts.ckplus(str(tmp_path))
    a = create_source("ckplus", root, "train")
    np.testing.assert_array_equal(a.members, create_source("ckplus", root, "train").members)
    other_seed = create_source("ckplus", root, "train", group_seed=1)
    assert not np.array_equal(a.members, other_seed.members)
    # A video's groups do not depend on which fold is held out.
    fold1 = create_source("ckplus", root, "train", fold=1)
    paths = lambda s, v: [[s.frame_paths[f] for f in g] for g in s.members[s.example_video == v]]
    assert paths(a, 1) == paths(fold1, 0)  # S102/001: second video with fold 10 out, first with fold 1 out
    five = create_source("ckplus", root, "train", group_size=5)
    assert five.members.shape == (len(a), 5) and "group_size=5" in repr(five)
    for members, video in zip(a.members, a.example_video):  # a group's frames come from its own video
        folders = {os.path.dirname(a.frame_paths[f]) for f in members}
        assert len(folders) == 1 and folders.pop().endswith(a.video_names[video])


# --- multi-image examples in the pipelines ---------------------------------------------------------------

def _frames_stream(source, steps=6, **kwargs):
    it = pipeline.train_iterator(source, "hflip(0.5)|to_float", global_batch=8, seed=0, **kwargs)
    return [next(it) for _ in range(steps)]


def test_frames_batch_carries_every_entry_and_draws_independently_per_frame():
    batches = _frames_stream(FramesSource(LABELS))
    assert set(batches[0]) == {"frames", "label", "video"}
    assert batches[0]["frames"].shape == (8, 3, 6, 6, 3) and batches[0]["frames"].dtype == np.float32
    assert batches[0]["video"].dtype == np.int32 and batches[0]["label"].dtype == np.int32
    index, flipped = read_back(np.concatenate([b["frames"] for b in batches]))
    np.testing.assert_array_equal(index, (index[:, :1] + np.arange(3)) % len(LABELS))  # frames in order
    np.testing.assert_array_equal(np.concatenate([b["label"] for b in batches]), LABELS[index[:, 0]])
    np.testing.assert_array_equal(np.concatenate([b["video"] for b in batches]), index[:, 0] % 5)
    mixed = flipped.any(1) & ~flipped.all(1)
    assert mixed.sum() > 10  # 48 groups; independent fair coins give mixed groups 3/4 of the time
    again = _frames_stream(FramesSource(LABELS))
    for x, y in zip(batches, again):
        np.testing.assert_array_equal(x["frames"], y["frames"])  # a function of (seed, q) only


def test_shared_draws_flip_every_image_of_an_example_alike():
    batches = _frames_stream(FramesSource(LABELS, shared_draws=True))
    _, flipped = read_back(np.concatenate([b["frames"] for b in batches]))
    assert flipped.any() and not flipped.all()
    np.testing.assert_array_equal(flipped, np.repeat(flipped[:, :1], 3, axis=1))


def test_shards_of_frame_groups_are_blocks_of_the_global_batch():
    whole = _frames_stream(FramesSource(LABELS), steps=3)
    shards = [_frames_stream(FramesSource(LABELS), steps=3, process_index=p, process_count=2) for p in range(2)]
    for step, batch in enumerate(whole):
        for p in range(2):
            for key in ("frames", "label", "video"):
                np.testing.assert_array_equal(shards[p][step][key], batch[key][4 * p:4 * p + 4])


def test_an_unreadable_frame_replaces_the_whole_example_and_names_the_file():
    source = FramesSource(LABELS, bad={6})  # in the groups of examples 4, 5 and 6
    it = pipeline.train_iterator(source, "to_float", global_batch=8, seed=0)
    with pytest.warns(pipeline.UnreadableImageWarning, match="unreadable image /fake/00006.jpg") as record:
        batches = [next(it) for _ in range(10)]  # two epochs of 40
    index, _ = read_back(np.concatenate([b["frames"] for b in batches]))
    assert 6 not in index  # examples 4, 5 and 6 all fall through to 7, the next readable example
    assert np.sum(index[:, 0] == 7) == 8 and it.num_substituted == 6
    assert it.unreadable_files == ["/fake/00006.jpg"] and len(record) == 1


def test_eval_masks_padding_and_unreadable_examples_and_fills_their_video():
    source = FramesSource(LABELS, bad={2})  # examples 0, 1, 2 hold record 2
    it = pipeline.eval_iterator(source, "to_float", global_batch=16)
    with pytest.warns(pipeline.UnreadableImageWarning, match="00002.jpg"):
        batches = list(it)
    mask = np.concatenate([b["mask"] for b in batches])
    video = np.concatenate([b["video"] for b in batches])
    np.testing.assert_array_equal(mask, (np.arange(48) < 40) & (np.arange(48) > 2))
    np.testing.assert_array_equal(video, np.where(mask, np.arange(48) % 5, -1))
    assert it.num_substituted == 3 and set(batches[0]) == {"frames", "label", "video", "mask"}


def test_eval_over_every_frame_of_a_video_split(tmp_path):
    root = data_layouts.afew(str(tmp_path))
    data_layouts.write_corrupt(os.path.join(root, "face", "val_afew", "Fear", "000633000", "0000003.jpg"))
    val = create_source("afew", root, "val")
    it = pipeline.eval_iterator(val, "resize(4)|to_float", global_batch=4)
    with pytest.warns(pipeline.UnreadableImageWarning, match="Fear/000633000/0000003.jpg"):
        batches = list(it)
    assert it.num_batches == 2 and set(batches[0]) == {"image", "label", "video", "mask"}
    assert batches[0]["image"].shape == (4, 4, 5, 3)  # shorter side 4, aspect kept
    np.testing.assert_array_equal(np.concatenate([b["mask"] for b in batches]), [1, 1, 0, 1, 1, 0, 0, 0])
    np.testing.assert_array_equal(np.concatenate([b["video"] for b in batches]), [0, 0, -1, 0, 1, -1, -1, -1])
    np.testing.assert_array_equal(np.concatenate([b["label"] for b in batches])[:5], [3, 3, 3, 3, 4])


def test_train_batches_of_groups_from_a_video_reader(tmp_path):
    root = data_layouts.ckplus(str(tmp_path))
    train = create_source("ckplus", root, "train")
    it = pipeline.train_iterator(train, "resize(6)|hflip(0.5)|to_float", global_batch=6, seed=0)
    batch = next(it)
    assert batch["frames"].shape == (6, 3, 6, 8, 3) and set(batch) == {"frames", "label", "video"}
    np.testing.assert_array_equal(batch["label"], train.video_labels[batch["video"]])


def test_class_order_renumbers_video_labels_too(tmp_path):
    root = data_layouts.ckplus(str(tmp_path))
    source = create_source("ckplus", root, "test", class_order="alphabetical")
    assert source.class_names == ("Anger", "Contempt", "Disgust", "Fear", "Happy", "Sad", "Surprise")
    np.testing.assert_array_equal(source.video_labels, [0, 4, 2])  # Angry, Happy, Disgust
    np.testing.assert_array_equal(source.labels, source.video_labels[source.example_video])


def test_frame_groups_do_not_depend_on_the_worker_count(tmp_path):
    root = data_layouts.ckplus(str(tmp_path))
    train = create_source("ckplus", root, "train")
    with_worker = pipeline.train_iterator(train, "hflip(0.5)|to_float", global_batch=6, seed=1, num_workers=1)
    try:
        got = [next(with_worker) for _ in range(3)]  # one spawned grain worker: 1-3 s start-up
    finally:
        with_worker.close()
    alone = pipeline.train_iterator(train, "hflip(0.5)|to_float", global_batch=6, seed=1)
    for x, y in zip([next(alone) for _ in range(3)], got):
        for key in ("frames", "label", "video"):
            np.testing.assert_array_equal(x[key], y[key])
