"""Evaluate a model directory (converted from PyTorch or trained here) on a dataset split: accuracy,
balanced accuracy, per-class recall, and a confusion matrix as text, JSON and PNG."""

from __future__ import annotations

import functools
import json
import os
from typing import Any

import ml_collections
import numpy as np

from fer_jax import data, models, pretrained, tasks, xla
from fer_jax.errors import ConfigError
from fer_jax.evaluate import driver, metrics


def evaluate_model(model_dir: str, config: ml_collections.ConfigDict, split: str | None = None,
                   out_dir: str | None = None, log=print) -> dict[str, Any]:
    """Runs the model in `model_dir` over `split` of the dataset in `config.data` through the evaluation
    driver that training uses (single-label, multi-label or video-level, as the recipe's task says).

    Args:
      model_dir: a fer-jax model directory (`porting/convert.py` output or `<workdir>/best`).
      config: a training recipe; its `data` (root, preprocessing, class order, eval options) and `task`.
      split: the split to evaluate (default `config.data.eval_split`).
      out_dir: where to write `report.json` and `confusion_matrix.png` (nothing written if None).

    Returns:
      The metrics, confusion matrix included.

    Raises:
      UserError: unreadable model or dataset, or a class-count mismatch.
    """
    meta, module, variables = pretrained.load_with_metadata(model_dir)
    spec = models.spec(meta["arch"])
    d = config.data
    source = driver.recipe_source(d, split or d.eval_split, "eval")
    declared = spec.num_classes(meta["hparams"])
    if declared is not None and declared != source.num_classes:
        raise ConfigError(f"{model_dir} is a {meta['arch']} with {declared} classes ({spec.num_classes_key}) but "
                          f"{d.name} {split or d.eval_split} has {source.num_classes}; wrong model or recipe?")
    task = tasks.create(config.task)
    batch = config.eval_batch_size if config.eval_batch_size > 0 else config.batch_size
    step = xla.jit(functools.partial(driver.eval_step, module=module, spec=spec, task=task), "eval")
    ctx = driver.context(module, spec, variables, source)
    iterator = data.eval_iterator(source, d.eval_pp, global_batch=batch, read_threads=d.read_threads)
    try:
        result = driver.run(lambda b: step(variables, b), iterator, task, ctx)
    except (IndexError, TypeError, ValueError) as e:
        raise ConfigError(f"{model_dir} does not fit {d.name} ({e})") from None
    finally:
        iterator.close()
    totals = {"confusion": np.asarray(result["confusion"])} if "confusion" in result else {}
    log(f"{model_dir} on {d.name} {split or d.eval_split}: {metrics.summary_line(result)}")
    if "confusion" in totals:
        log(metrics.format_confusion(totals["confusion"], source.class_names))
    else:
        log("\n".join(f"{n:>20} {a:.4f}" for n, a in result["per_attribute_accuracy"].items()))
    if out_dir:
        os.makedirs(out_dir, exist_ok=True)
        with open(os.path.join(out_dir, "report.json"), "w") as f:
            json.dump({"model": os.path.abspath(model_dir), "dataset": d.name, **result}, f, indent=2)
        if "confusion" in totals:
            plot_confusion(np.asarray(totals["confusion"]), source.class_names,
                           os.path.join(out_dir, "confusion_matrix.png"))
        log(f"wrote {out_dir}/report.json" + (" and confusion_matrix.png" if "confusion" in totals else ""))
    return result


def plot_confusion(confusion: np.ndarray, class_names, path: str) -> None:
    """Row-normalised confusion matrix (recall per true class) with counts, as a PNG."""
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib import pyplot as plt

    rows = confusion.sum(axis=1, keepdims=True)
    norm = np.divide(confusion, rows, out=np.zeros_like(confusion, dtype=float), where=rows > 0)
    fig, ax = plt.subplots(figsize=(1.1 * len(class_names) + 2, 1.1 * len(class_names) + 1.5))
    ax.imshow(norm, cmap="Blues", vmin=0, vmax=1)
    for i in range(len(class_names)):
        for j in range(len(class_names)):
            ax.text(j, i, f"{norm[i, j]:.2f}\n({confusion[i, j]})", ha="center", va="center", fontsize=8,
                    color="white" if norm[i, j] > 0.5 else "black")
    ax.set_xticks(range(len(class_names)), class_names, rotation=45, ha="right")
    ax.set_yticks(range(len(class_names)), class_names)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
