"""Metrics derived from summed evaluation counts (confusion matrix, per-attribute hits).

Evaluation steps return sums over real (unpadded) examples; every reported number comes from them, so a
metric is exact whatever the batch size, padding or device count.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np


def classification(confusion: np.ndarray, class_names: Sequence[str] | None = None) -> dict[str, Any]:
    """Accuracy, balanced accuracy and per-class recall from a confusion matrix [true, predicted].

    Balanced accuracy follows sklearn's `balanced_accuracy_score` (what DAN reports): the mean recall over
    the classes that occur in the ground truth.
    """
    confusion = np.asarray(confusion, np.int64)
    support = confusion.sum(axis=1)
    total = int(support.sum())
    recall = np.divide(np.diag(confusion), support, out=np.zeros(len(support)), where=support > 0)
    present = support > 0
    names = list(class_names) if class_names is not None else [str(i) for i in range(len(support))]
    return {
        "accuracy": float(np.trace(confusion) / total) if total else 0.0,
        "balanced_accuracy": float(recall[present].mean()) if present.any() else 0.0,
        "per_class_recall": {n: float(r) for n, r, p in zip(names, recall, present) if p},
        "count": total,
    }


def multilabel(hits: np.ndarray, count: int, attribute_names: Sequence[str] | None = None) -> dict[str, Any]:
    """Mean attribute accuracy (FAER's CelebA metric) and per-attribute accuracy from per-attribute hits."""
    acc = np.asarray(hits, np.float64) / max(count, 1)
    names = list(attribute_names) if attribute_names is not None else [str(i) for i in range(len(acc))]
    return {"mean_attribute_accuracy": float(acc.mean()), "per_attribute_accuracy": dict(zip(names, acc.tolist())),
            "count": int(count)}


def format_confusion(confusion: np.ndarray, class_names: Sequence[str]) -> str:
    """A plain-text confusion matrix (rows: true class, columns: predicted)."""
    width = max(6, *(len(n) for n in class_names))
    head = " " * (width + 2) + " ".join(f"{n[:width]:>{width}}" for n in class_names)
    rows = [f"{n[:width]:>{width}}  " + " ".join(f"{v:>{width}d}" for v in row)
            for n, row in zip(class_names, np.asarray(confusion, np.int64))]
    return "\n".join([head, *rows])


def from_sums(totals: dict, names: Sequence[str]) -> dict[str, Any]:
    """Metrics from an evaluation's summed counts (`Task.eval_sums` over every batch).

    Args:
      totals: {"confusion" [K, K] or "hits" [A], "loss_sum", "count"} as host arrays.
      names: class or attribute names.
    """
    count = int(totals["count"])
    if "confusion" in totals:
        result = classification(totals["confusion"], names)
        result["confusion"] = np.asarray(totals["confusion"]).tolist()
    else:
        result = multilabel(totals["hits"], count, names)
    result["loss"] = float(totals["loss_sum"]) / max(count, 1)
    return result


def summary_line(result: dict[str, Any]) -> str:
    """The headline numbers of `from_sums`' result."""
    if "confusion" in result:
        counted = (f"{result['count']} videos, {result['frames']} frames" if "frames" in result
                   else f"{result['count']} images")
        return (f"accuracy {result['accuracy']:.4f}, balanced accuracy {result['balanced_accuracy']:.4f}, "
                f"loss {result['loss']:.4f} ({counted})")
    return f"mean attribute accuracy {result['mean_attribute_accuracy']:.4f}, loss {result['loss']:.4f} " \
           f"({result['count']} images)"
