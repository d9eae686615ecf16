"""Evaluation figures as PNG files (matplotlib, Agg backend), written next to the JSON report: the confusion
matrix (counts and row-normalised) and per-class precision / recall / F1 bars for single-label tasks, the
per-attribute accuracy chart for multi-label ones (FAER's CelebA figures). Each is written to a temporary
and renamed, so a failed write leaves no partial PNG."""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib import pyplot as plt

    return plt


def attribute_accuracy_chart(per_attribute: Mapping[str, float], path: str, title: str = "") -> str:
    """A bar chart of per-attribute accuracy (in %, attributes in label order) with the mean as a line.

    Args:
      per_attribute: attribute name -> accuracy in [0, 1].
      path: the PNG to write (its folder must exist).
      title: figure title (the mean accuracy is appended).

    Returns:
      `path`.
    """
    plt = _pyplot()
    names = list(per_attribute)
    acc = 100 * np.asarray([per_attribute[n] for n in names], np.float64)
    mean = float(acc.mean()) if len(acc) else 0.0
    fig, ax = plt.subplots(figsize=(max(6.0, 0.32 * len(names) + 1.5), 4.8), dpi=110)
    x = np.arange(len(names))
    bars = ax.bar(x, acc, color="#3b75af", width=0.75)
    ax.axhline(mean, color="#c0392b", linewidth=1.2, linestyle="--")  # the mean, given in the title
    low = max(0.0, min(float(acc.min()) if len(acc) else 0.0, mean) - 5.0)
    ax.set_ylim(np.floor(low / 5) * 5, 100.5)
    ax.set_xticks(x)
    ax.set_xticklabels([n.replace("_", " ") for n in names], rotation=90, fontsize=8)
    ax.set_xlim(-0.6, len(names) - 0.4)
    ax.set_ylabel("accuracy (%)")
    ax.grid(axis="y", alpha=0.3)
    ax.set_axisbelow(True)
    if len(names) <= 12:  # values on the bars only where they fit
        for bar, a in zip(bars, acc):
            ax.text(bar.get_x() + bar.get_width() / 2, a + 0.3, f"{a:.1f}", ha="center", va="bottom", fontsize=7)
    ax.set_title((title + " — " if title else "") + f"per-attribute accuracy (dashed: mean {mean:.2f} %)", fontsize=10)
    return _save(plt, fig, path)


def _save(plt, fig, path: str) -> str:
    fig.tight_layout()
    tmp = f"{path}.tmp-{os.getpid()}.png"
    try:
        fig.savefig(tmp)
        os.replace(tmp, path)
    finally:
        plt.close(fig)
        if os.path.exists(tmp):
            os.remove(tmp)
    return path


def confusion_matrix(confusion: np.ndarray, class_names: Sequence[str], path: str, title: str = "") -> str:
    """Two panels: the counts, and the row-normalised matrix (each true class's share of predictions, so the
    diagonal is the class-wise accuracy); rows are true classes, columns predictions.

    Args:
      confusion: [K, K] counts, [true, predicted].
      class_names: the K class names, in label order.
      path: the PNG to write (its folder must exist).
      title: figure title.

    Returns:
      `path`.
    """
    plt = _pyplot()
    counts = np.asarray(confusion, np.int64)
    k = len(class_names)
    rows = counts.sum(axis=1, keepdims=True)
    norm = np.divide(counts, rows, out=np.zeros(counts.shape), where=rows > 0)
    side = max(3.2, 0.62 * k + 1.6)
    fig, axes = plt.subplots(1, 2, figsize=(2 * side + 1.2, side + 0.9), dpi=110)
    fontsize = 9 if k <= 8 else 7
    panels = ((axes[0], counts, max(int(counts.max()), 1), "d", "counts"),
              (axes[1], norm, 1.0, ".2f", "row-normalised (recall)"))
    for ax, values, top, fmt, name in panels:
        image = ax.imshow(values, cmap="Blues", vmin=0, vmax=top)
        for (i, j), v in np.ndenumerate(values):
            ax.text(j, i, format(v, fmt), ha="center", va="center", fontsize=fontsize,
                    color="white" if v / top > 0.55 else "black")
        ax.set_xticks(range(k), class_names, rotation=45, ha="right", fontsize=fontsize)
        ax.set_yticks(range(k), class_names, fontsize=fontsize)
        ax.set_xlabel("predicted")
        ax.set_ylabel("true")
        ax.set_title(name, fontsize=10)
        fig.colorbar(image, ax=ax, fraction=0.046, pad=0.04)
    if title:
        fig.suptitle(title, fontsize=10)
    return _save(plt, fig, path)


def per_class_chart(rows: Sequence[Mapping[str, Any]], path: str, title: str = "") -> str:
    """Grouped bars of per-class precision, recall (class-wise accuracy) and F1 in %, classes in label order,
    with each class's support under its name (`metrics.per_class` rows).

    Returns:
      `path`.
    """
    plt = _pyplot()
    names = [f"{r['class']}\n(n={r['support']})" for r in rows]
    x = np.arange(len(rows))
    fig, ax = plt.subplots(figsize=(max(6.0, 0.9 * len(rows) + 2.0), 4.6), dpi=110)
    for offset, key, colour in ((-0.27, "precision", "#3b75af"), (0.0, "recall", "#e1812c"), (0.27, "f1", "#3a923a")):
        values = 100 * np.asarray([r[key] for r in rows], np.float64)
        bars = ax.bar(x + offset, values, width=0.26, color=colour, label="recall (class-wise accuracy)"
                      if key == "recall" else key.replace("f1", "F1"))
        if len(rows) <= 10:
            for bar, v in zip(bars, values):
                ax.text(bar.get_x() + bar.get_width() / 2, v + 0.8, f"{v:.0f}", ha="center", va="bottom", fontsize=7)
    ax.set_xticks(x, names, fontsize=8)
    ax.set_xlim(-0.6, len(rows) - 0.4)
    ax.set_ylim(0, 112)
    ax.set_yticks(range(0, 101, 20))
    ax.set_ylabel("%")
    ax.grid(axis="y", alpha=0.3)
    ax.set_axisbelow(True)
    ax.legend(fontsize=8, ncol=3, loc="upper center", frameon=False)
    ax.set_title((title + " — " if title else "") + "per-class precision, recall and F1", fontsize=10)
    return _save(plt, fig, path)
