"""Evaluation figures as PNG files (matplotlib, Agg backend): per-attribute accuracy charts for multi-label
tasks (FAER's CelebA figures), written next to the JSON report."""

from __future__ import annotations

import os
from collections.abc import Mapping

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
    fig.tight_layout()
    tmp = f"{path}.tmp-{os.getpid()}.png"
    fig.savefig(tmp)
    plt.close(fig)
    os.replace(tmp, path)
    return path
