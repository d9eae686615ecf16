"""Datasets in their official layouts, torchvision-equivalent transforms, grain pipelines, synthetic data.

    from fer_jax import data
    source = data.create_source("rafdb", "/data/raf-basic", "train")
    it = data.train_iterator(source, data.transforms.DAN_RAFDB_TRAIN, global_batch=256, seed=0)
    batch = next(it)   # {"image": float32 [256, 224, 224, 3], "label": int32 [256]}

Names are imported lazily, so that e.g. `scripts/make_synthetic.py` does not import grain (and jax).
"""

import importlib

_EXPORTS = {
    "DataIterator": "pipeline", "UnreadableImageWarning": "pipeline", "eval_iterator": "pipeline",
    "steps_per_epoch": "pipeline", "train_iterator": "pipeline",
    "ImageSource": "sources", "class_counts": "sources", "create_source": "sources",
    "make_synthetic": "synthetic_layouts",
}
__all__ = sorted([*_EXPORTS, "labels", "transforms"])


def __getattr__(name: str):
    if name in ("labels", "transforms"):
        return importlib.import_module(f"{__name__}.{name}")
    if name in _EXPORTS:
        return getattr(importlib.import_module(f"{__name__}.{_EXPORTS[name]}"), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
