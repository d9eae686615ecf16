"""Datasets in their official layouts, torchvision-equivalent transforms, grain pipelines, synthetic data.

    from fer_jax import data
    source = data.create_source("rafdb", "/data/raf-basic", "train")
    it = data.train_iterator(source, data.transforms.DAN_RAFDB_TRAIN, global_batch=256, seed=0)
    batch = next(it)   # {"image": float32 [256, 224, 224, 3], "label": int32 [256]}

    videos = data.create_source("afew", "/data/Emotion-FAN/data", "train")   # groups of 3 frames
    batch = next(data.train_iterator(videos, "resize(224)|hflip(0.5)|to_float", global_batch=48, seed=0))
    # {"frames": float32 [48, 3, 224, 224, 3], "label": int32 [48], "video": int32 [48]}

A batch holds every entry of the source's examples (`sources` module docstring); evaluation adds a
boolean "mask". Datasets: "rafdb", "affectnet", "expw", "celeba" (images), "afew", "ckplus" (videos),
"ck", "bu3dfe", "ckplus_release" (FERAtt's faces) and their "*_synthetic" composites (`composition`).
Names are imported lazily, so that e.g. `scripts/make_synthetic.py` does not import grain (and jax).
"""

import importlib

_EXPORTS = {
    "DataIterator": "pipeline", "UnreadableImageWarning": "pipeline", "eval_iterator": "pipeline",
    "steps_per_epoch": "pipeline", "train_iterator": "pipeline",
    "ImageSource": "sources", "Source": "sources", "class_counts": "sources",
    "create_source": "datasets",
    "EmptyVideoWarning": "video_sources", "VideoSource": "video_sources",
    "make_synthetic": "synthetic_layouts",
}
__all__ = sorted([*_EXPORTS, "labels", "transforms"])


def __getattr__(name: str):
    if name in ("labels", "transforms"):
        return importlib.import_module(f"{__name__}.{name}")
    if name in _EXPORTS:
        return getattr(importlib.import_module(f"{__name__}.{_EXPORTS[name]}"), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
