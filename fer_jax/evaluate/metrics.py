"""Metrics derived from summed evaluation counts (confusion matrix, per-attribute hits).

Evaluation steps return sums over real (unpadded) examples; every reported number comes from them, so a
metric is exact whatever the batch size, padding or device count.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np

from fer_jax.errors import ConfigError

# Every headline metric an evaluation reports, and which way is better: "max" (accuracy-like) or "min"
# (losses). `best_metric` (which model `<workdir>/best` keeps) must be one of them.
DIRECTIONS = {
    "accuracy": "max",
    "balanced_accuracy": "max",
    "mean_attribute_accuracy": "max",
    "precision": "max",
    "recall": "max",
    "f1": "max",
    "loss": "min",
    "ce": "min",
    "att": "min",
}
# The headline metrics of each kind of task (`Task.kind`): what `from_sums` returns as floats.
BY_KIND = {
    "multiclass": ("accuracy", "balanced_accuracy", "loss"),
    "multilabel": ("mean_attribute_accuracy", "loss"),
    # FERAtt: the paper's table columns and its loss terms (att only when the data carries the clean face)
    "feratt": ("accuracy", "balanced_accuracy", "loss", "precision", "recall", "f1", "ce", "att"),
}


def check_best_metric(name: str, kind: str | None = None) -> str:
    """The direction ("max" or "min") of the metric `name`, checked before any training.

    Args:
      name: `config.best_metric`.
      kind: the task's kind (`Task.kind`); if given, `name` must be one of its metrics.

    Raises:
      ConfigError: an unknown metric, or one the task does not report (the message lists the known ones).
    """
    if name not in DIRECTIONS:
        known = ", ".join(f"{k} ({'higher' if v == 'max' else 'lower'} is better)" for k, v in DIRECTIONS.items())
        raise ConfigError(f"best_metric={name!r} is not an evaluation metric; use one of {known}")
    if kind is not None and name not in BY_KIND.get(kind, ()):
        raise ConfigError(f"best_metric={name!r} is not reported by a {kind} task; use one of "
                          f"{', '.join(BY_KIND.get(kind, ()))}")
    return DIRECTIONS[name]


def improves(name: str, value: float, best: float | None) -> bool:
    """Whether `value` of the metric `name` beats `best` (None: nothing to beat) in its direction; a NaN
    never does, and anything beats a NaN."""
    if math.isnan(value):
        return False
    if best is None or math.isnan(best):
        return True
    return value > best if DIRECTIONS[name] == "max" else value < best


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


def per_class(confusion: np.ndarray, class_names: Sequence[str]) -> list[dict[str, Any]]:
    """Per-class precision, recall (the class-wise accuracy) and F1 from a confusion matrix [true, predicted].

    sklearn's definitions (`precision_recall_fscore_support` with `zero_division=0`): precision = TP / predicted,
    recall = TP / support, F1 = their harmonic mean; 0 where a denominator is 0.

    Returns:
      One row per class, in class order: {"class", "support", "predicted", "precision", "recall", "f1"}.
    """
    confusion = np.asarray(confusion, np.int64)
    tp = np.diag(confusion).astype(np.float64)
    support, predicted = confusion.sum(axis=1), confusion.sum(axis=0)
    precision = np.divide(tp, predicted, out=np.zeros_like(tp), where=predicted > 0)
    recall = np.divide(tp, support, out=np.zeros_like(tp), where=support > 0)
    both = precision + recall
    f1 = np.divide(2 * precision * recall, both, out=np.zeros_like(tp), where=both > 0)
    return [{"class": str(n), "support": int(s), "predicted": int(p), "precision": float(pr), "recall": float(r),
             "f1": float(f)} for n, s, p, pr, r, f in zip(class_names, support, predicted, precision, recall, f1)]


def format_per_class(rows: Sequence[dict[str, Any]]) -> str:
    """`per_class` rows as a plain-text table."""
    width = max(8, *(len(r["class"]) for r in rows))
    head = f"{'class':>{width}}  precision  recall     f1  support"
    return "\n".join([head, *(f"{r['class'][:width]:>{width}}  {r['precision']:9.4f}  {r['recall']:6.4f}  "
                              f"{r['f1']:.4f}  {r['support']:7d}" for r in rows)])


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
