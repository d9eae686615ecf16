"""Emotion-FAN's video datasets: AFEW 8.0 and CK+ (10 folds), as groups of frames or as single frames.

The root is Emotion-FAN's `data/` directory (shared/reference/emotion_fan.md, section 5):

    <root>/face/train_afew/<Emotion>/<video_id>/<frame>.jpg   faces of each AFEW training video
    <root>/face/val_afew/<Emotion>/<video_id>/<frame>.jpg     ... of each validation video
    <root>/txt/afew_train.txt, <root>/txt/afew_eval.txt        a line '<Emotion>/<video_id> <Emotion>' per video
    <root>/face/ck_face/<Sxxx>/<seq>/<frame>.png              faces of each CK+ sequence
    <root>/txt/CK+_10-fold_sample_IDascendorder_step10.txt    per fold a header '<k>-fold <count> <Emotion> <n>
                                                              ...', then <count> lines '<Sxxx>/<seq> <Emotion>'

Options point elsewhere (`train_faces`, `train_list`, ... for AFEW; `faces`, `list_file` for CK+; relative to
the root, or absolute). A video's frames are its image files sorted by name, as upstream sorts `os.listdir`.

Units (`unit`; the default follows upstream's FAN scripts: "group" to train, "frame" to evaluate):
- "frame": every frame of every video is one example {"image", "label", "video"} (evaluation, baselines);
- "group": T = `group_size` frames of one video, {"frames": [T, H, W, C], "label", "video"}. The groups
  are drawn once, when the source is built, from (`group_seed`, video name), so every epoch reuses them
  (as upstream) and a video's groups do not depend on the other videos of the split (e.g. the CK+ fold).
Draws: a group's frames are flipped independently (upstream), unless `shared_draws=True`.
"video" is the index of the example's video in `video_names` / `video_labels` (0 .. V-1).

Group sampling (`sample_groups`; exactly upstream's `load_imgs_tsn` / `load_imgs_tsn_tenfold` for T = 3):
with n frames, AFEW cuts the video into d = T parts and CK+ into d = T + 2 of which it uses the first T
(p = n // 5 for T = 3: only the first ~60 % of a sequence, which runs from neutral to the apex).
If n > d: p = n // d and n groups, member i uniform in [i*p, (i+1)*p], the last in [(T-1)*p, n-1] (AFEW)
or [(T-1)*p, T*p] (CK+), bounds inclusive. Otherwise one group per frame j: (j, T-1 uniform frames).

Videos without frames: face alignment creates a folder for every video and leaves it empty when it finds
no face. Upstream keeps such a video, and its video accuracy divides 0 by 0; here it is left out of the
split (so it has no video id) and one `EmptyVideoWarning` names the first of them.
"""

from __future__ import annotations

import collections
import hashlib
import os
import re
import warnings
from collections.abc import Sequence
from typing import Any, NamedTuple

import numpy as np

from fer_jax.data import labels as label_tables
from fer_jax.data.sources import (IMAGE_EXTENSIONS, MULTICLASS, Source, check_split, malformed, parse_int,
                                  read_lines, register, require_dir)
from fer_jax.errors import ConfigError, DatasetError

AFEW_LAYOUT = ("Emotion-FAN's data/ folder: <root>/face/{train_afew,val_afew}/<Emotion>/<video_id>/<frame>.jpg "
               "and <root>/txt/{afew_train,afew_eval}.txt with lines '<Emotion>/<video_id> <Emotion>'")
CKPLUS_LIST = "CK+_10-fold_sample_IDascendorder_step10.txt"
CKPLUS_LAYOUT = (f"Emotion-FAN's data/ folder: <root>/face/ck_face/<Sxxx>/<seq>/<frame>.png and <root>/txt/"
                 f"{CKPLUS_LIST}: per fold a line '<k>-fold <count> <Emotion> <n> ...', then <count> lines "
                 "'<Sxxx>/<seq> <Emotion>'")
UNITS = ("group", "frame")
_FOLD = re.compile(r"(\d+)-fold")


class EmptyVideoWarning(UserWarning):
    """Listed videos whose folders hold no frames were left out of the split."""


class Video(NamedTuple):
    name: str  # as listed, e.g. "Angry/000046280" or "S005/001"
    label: int
    frames: tuple[str, ...]  # paths, sorted by file name


class _Listed(NamedTuple):
    lineno: int
    line: str
    name: str
    label: int


def sample_groups(num_frames: int, group_size: int, rule: str, rng: np.random.Generator) -> np.ndarray:
    """Frame indices int [G, group_size] of one video's groups by upstream's rule ("afew" or "ckplus").

    See the module docstring: G = num_frames groups in both branches.
    """
    n, size = num_frames, group_size
    parts = size if rule == "afew" else size + 2
    if n > parts:
        p = n // parts
        low, high = np.arange(size) * p, np.arange(1, size + 1) * p
        if rule == "afew":
            high[-1] = n - 1
        return rng.integers(low, high + 1, size=(n, size))
    return np.column_stack([np.arange(n), rng.integers(0, n, size=(n, size - 1))])


def _name_seed(name: str) -> int:
    return int.from_bytes(hashlib.sha256(name.encode()).digest()[:8], "big")


class VideoSource(Source):
    """The videos of one split as examples: groups of frames (unit "group") or single frames ("frame").

    Attributes:
        unit: "group" (examples {"frames", "label", "video"}) or "frame" ({"image", "label", "video"}).
        video_names, video_labels (int32 [V]), num_videos: the split's videos, in list order.
        frame_paths: every frame of the split, video after video.
        members: int32 [N, T], the frames (indices into `frame_paths`) of each example; T = 1 for "frame".
        example_video: int32 [N], the video of each example; `labels` is `video_labels[example_video]`.
    """

    mask_fill = {"video": -1}

    def __init__(self, *, dataset: str, root: str, split: str, layout: str, videos: Sequence[Video],
                 class_names: Sequence[str], rule: str, unit: str, group_size: int, group_seed: int,
                 shared_draws: bool, extra: str = ""):
        self.unit = unit
        self.image_entries = ("frames",) if unit == "group" else ("image",)
        self.shared_draws = shared_draws
        self.video_names = tuple(v.name for v in videos)
        self.video_labels = np.array([v.label for v in videos], dtype=np.int32)
        self.frame_paths = [path for v in videos for path in v.frames]
        frame_video = np.repeat(np.arange(len(videos), dtype=np.int32), [len(v.frames) for v in videos])
        if unit == "frame":
            self.members = np.arange(len(self.frame_paths), dtype=np.int32)[:, None]
            options = "unit='frame'"
        else:
            self.members = _all_groups(videos, group_size, group_seed, rule)
            options = (f"unit='group', group_size={group_size}, group_seed={group_seed}, "
                       f"shared_draws={shared_draws}")
        self.example_video = frame_video[self.members[:, 0]]
        super().__init__(dataset=dataset, root=root, split=split, labels=self.video_labels[self.example_video],
                         class_names=class_names, task=MULTICLASS, layout=layout,
                         options=", ".join(filter(None, [options, extra])))

    @property
    def num_videos(self) -> int:
        return len(self.video_names)

    def __len__(self) -> int:
        return len(self.members)

    def __getitem__(self, index: int) -> dict[str, Any]:
        index = int(index)
        return {"index": index, "paths": [self.frame_paths[f] for f in self.members[index]],
                "label": self.labels[index], "video": self.example_video[index]}

    def example(self, index: int) -> dict[str, Any]:
        refs = [{"path": path} for path in self[index]["paths"]]
        images = {"frames": refs} if self.unit == "group" else {"image": refs[0]}
        return {**images, "label": self.labels[index], "video": self.example_video[index]}

    def _renumber(self, perm: np.ndarray) -> None:
        super()._renumber(perm)
        self.video_labels = perm[self.video_labels].astype(np.int32)


def _all_groups(videos: Sequence[Video], group_size: int, group_seed: int, rule: str) -> np.ndarray:
    groups, start = [np.zeros((0, group_size), dtype=np.int64)], 0
    for video in videos:
        rng = np.random.default_rng([group_seed, _name_seed(video.name)])
        groups.append(start + sample_groups(len(video.frames), group_size, rule, rng))
        start += len(video.frames)
    return np.concatenate(groups).astype(np.int32)


def _sampling(dataset: str, split: str, unit: str | None, group_size: int, group_seed: int,
              shared_draws: bool) -> dict[str, Any]:
    """Checks the options shared by the video readers; the unit defaults to "group" for training only."""
    unit = unit or ("group" if split == "train" else "frame")
    if unit not in UNITS:
        raise ConfigError(f"{dataset}: unit must be 'group' or 'frame', got {unit!r}")
    for name, value, low in (("group_size", group_size, 1), ("group_seed", group_seed, 0)):
        if isinstance(value, bool) or not isinstance(value, int) or value < low:
            raise ConfigError(f"{dataset}: {name} must be an integer >= {low}, got {value!r}")
    if not isinstance(shared_draws, bool):
        raise ConfigError(f"{dataset}: shared_draws must be True or False, got {shared_draws!r}")
    return {"unit": unit, "group_size": group_size, "group_seed": group_seed, "shared_draws": shared_draws}


def _emotion(dataset: str, classes: Sequence[str], token: str, path: str, lineno: int, line: str,
             layout: str) -> int:
    """The class index of an emotion name as the list files spell it (aliases accepted)."""
    try:
        name = label_tables.canonical(token)
    except ConfigError:
        name = None
    if name not in classes:
        spelled = [label_tables.EMOTION_FAN_SPELLING.get(c, c) for c in classes]
        raise malformed(dataset, path, lineno, line, f"{token!r} is not one of the {dataset} emotions {spelled}",
                        layout)
    return classes.index(name)


def _listed_video(dataset: str, classes: Sequence[str], path: str, lineno: int, line: str, layout: str,
                  seen: dict[str, int]) -> _Listed:
    """Parses '<a>/<b> <Emotion>' and refuses a video listed twice in the same file."""
    fields = line.split()
    if _FOLD.fullmatch(fields[0]):
        raise malformed(dataset, path, lineno, line, "a fold header where a video line is expected (the "
                        "previous header announces more videos than it has)", layout)
    if len(fields) != 2 or len(fields[0].split("/")) != 2 or "" in fields[0].split("/"):
        raise malformed(dataset, path, lineno, line, "expected '<folder>/<video> <Emotion>'", layout)
    if fields[0] in seen:
        raise malformed(dataset, path, lineno, line, f"video {fields[0]} is listed twice (also on line "
                        f"{seen[fields[0]]})", layout)
    seen[fields[0]] = lineno
    return _Listed(lineno, line, fields[0], _emotion(dataset, classes, fields[1], path, lineno, line, layout))


def _read_videos(dataset: str, faces: str, list_file: str, listed: Sequence[_Listed], layout: str) -> list[Video]:
    """The listed videos with their sorted frames; a listed folder that is missing is a DatasetError."""
    require_dir(faces, dataset, layout)
    videos, empty = [], []
    for entry in listed:
        folder = os.path.join(faces, entry.name)
        if not os.path.isdir(folder):
            raise malformed(dataset, list_file, entry.lineno, entry.line, f"video folder {folder} not found",
                            layout)
        frames = sorted(f for f in os.listdir(folder) if f.lower().endswith(IMAGE_EXTENSIONS))
        if frames:
            videos.append(Video(entry.name, entry.label, tuple(os.path.join(folder, f) for f in frames)))
        else:
            empty.append(folder)
    if empty:
        warnings.warn(f"{dataset}: {len(empty)} listed video folder(s) hold no frames (no face was found) and "
                      f"are left out of the split, e.g. {empty[0]}", EmptyVideoWarning, stacklevel=3)
    return videos


@register("afew")
def afew(root: str, split: str, *, unit: str | None = None, group_size: int = 3, group_seed: int = 0,
         shared_draws: bool = False, train_faces: str = "face/train_afew", eval_faces: str = "face/val_afew",
         train_list: str = "txt/afew_train.txt", eval_list: str = "txt/afew_eval.txt") -> VideoSource:
    """AFEW 8.0 as Emotion-FAN prepares it; classes in Emotion-FAN's order (`labels.AFEW`).

    Args:
        root: Emotion-FAN's `data/` directory.
        split: "train", or "val" (AFEW's validation set, on which the paper reports; "test" is accepted).
        unit, group_size, group_seed, shared_draws: see the module docstring.
        train_faces, eval_faces, train_list, eval_list: upstream's root_train, root_eval, list_train,
            list_eval, relative to `root` (or absolute).
    """
    split = check_split("AFEW", split, {"train": "train", "val": "val", "validation": "val", "test": "val"})
    sampling = _sampling("AFEW", split, unit, group_size, group_seed, shared_draws)
    require_dir(root, "AFEW", AFEW_LAYOUT)
    list_file = os.path.join(root, train_list if split == "train" else eval_list)
    listed, seen = [], {}
    for lineno, line in read_lines(list_file, "AFEW", AFEW_LAYOUT):
        entry = _listed_video("AFEW", label_tables.AFEW, list_file, lineno, line, AFEW_LAYOUT, seen)
        folder = entry.name.split("/")[0]
        if _canonical_or_none(folder) != label_tables.AFEW[entry.label]:
            raise malformed("AFEW", list_file, lineno, line, f"the emotion folder {folder!r} differs from the "
                            f"label {line.split()[1]!r}", AFEW_LAYOUT)
        listed.append(entry)
    faces = os.path.join(root, train_faces if split == "train" else eval_faces)
    return VideoSource(dataset="AFEW", root=root, split=split, layout=AFEW_LAYOUT, class_names=label_tables.AFEW,
                       videos=_read_videos("AFEW", faces, list_file, listed, AFEW_LAYOUT), rule="afew", **sampling)


def _canonical_or_none(name: str) -> str | None:
    try:
        return label_tables.canonical(name)
    except ConfigError:
        return None


def _fold_header(path: str, lineno: int, line: str) -> tuple[int, int, collections.Counter]:
    """Parses '<k>-fold <count> <Emotion> <n> ...' into (k, count, class index -> n)."""
    tokens = line.split()
    match = _FOLD.fullmatch(tokens[0])
    if not match or len(tokens) % 2:
        raise malformed("CK+", path, lineno, line, "expected a fold header '<k>-fold <count> <Emotion> <n> ...'",
                        CKPLUS_LAYOUT)
    count = parse_int(tokens[1], "CK+", path, lineno, line, CKPLUS_LAYOUT)
    tally = collections.Counter()
    for emotion, n in zip(tokens[2::2], tokens[3::2]):
        index = _emotion("CK+", label_tables.CKPLUS_EMOTION_FAN, emotion, path, lineno, line, CKPLUS_LAYOUT)
        tally[index] += parse_int(n, "CK+", path, lineno, line, CKPLUS_LAYOUT)
    if count < 0 or min(tally.values(), default=0) < 0 or sum(tally.values()) != count:
        raise malformed("CK+", path, lineno, line, f"the emotion counts add up to {sum(tally.values())}, not to "
                        f"the fold's count {count}", CKPLUS_LAYOUT)
    return int(match.group(1)), count, tally


def _ckplus_folds(path: str) -> dict[int, list[_Listed]]:
    """Every fold of the 10-fold list file; each fold's lines must match its header's counts."""
    lines = list(read_lines(path, "CK+", CKPLUS_LAYOUT))
    folds, seen, i = {}, {}, 0
    while i < len(lines):
        lineno, line = lines[i]
        fold, count, tally = _fold_header(path, lineno, line)
        if fold in folds:
            raise malformed("CK+", path, lineno, line, f"fold {fold} appears twice", CKPLUS_LAYOUT)
        body = lines[i + 1:i + 1 + count]
        if len(body) < count:
            raise malformed("CK+", path, lineno, line, f"the header announces {count} videos but {len(body)} "
                            "lines follow", CKPLUS_LAYOUT)
        entries = [_listed_video("CK+", label_tables.CKPLUS_EMOTION_FAN, path, n, text, CKPLUS_LAYOUT, seen)
                   for n, text in body]
        found = collections.Counter(e.label for e in entries)
        if found != tally:
            names = label_tables.CKPLUS_EMOTION_FAN
            raise malformed("CK+", path, lineno, line, f"the fold's lines hold "
                            f"{ {names[k]: v for k, v in sorted(found.items())} }, not the header's counts",
                            CKPLUS_LAYOUT)
        folds[fold] = entries
        i += 1 + count
    return folds


@register("ckplus")
def ckplus(root: str, split: str, *, fold: int = 10, unit: str | None = None, group_size: int = 3,
           group_seed: int = 0, shared_draws: bool = False, faces: str = "face/ck_face",
           list_file: str = f"txt/{CKPLUS_LIST}") -> VideoSource:
    """CK+ as Emotion-FAN uses it: 10 subject folds, 7 classes in its order (`labels.CKPLUS_EMOTION_FAN`).

    Args:
        root: Emotion-FAN's `data/` directory.
        split: "test" (fold `fold`; "val" is accepted) or "train" (every other fold, in fold order).
        fold: the held-out fold (upstream `--fold`, default 10).
        unit, group_size, group_seed, shared_draws: see the module docstring.
        faces, list_file: upstream's video_root and video_list, relative to `root` (or absolute).
    """
    split = check_split("CK+", split, {"train": "train", "test": "test", "val": "test"})
    sampling = _sampling("CK+", split, unit, group_size, group_seed, shared_draws)
    if isinstance(fold, bool) or not isinstance(fold, int):
        raise ConfigError(f"CK+: fold must be an integer such as 1..10, got {fold!r}")
    require_dir(root, "CK+", CKPLUS_LAYOUT)
    path = os.path.join(root, list_file)
    folds = _ckplus_folds(path)
    if fold not in folds:
        raise DatasetError(f"CK+: {path} has no fold {fold} (it has {sorted(folds)}); expected {CKPLUS_LAYOUT}")
    listed = folds[fold] if split == "test" else [e for k in sorted(folds) if k != fold for e in folds[k]]
    videos = _read_videos("CK+", os.path.join(root, faces), path, listed, CKPLUS_LAYOUT)
    return VideoSource(dataset="CK+", root=root, split=split, layout=CKPLUS_LAYOUT, videos=videos,
                       class_names=label_tables.CKPLUS_EMOTION_FAN, rule="ckplus", extra=f"fold={fold}",
                       **sampling)
