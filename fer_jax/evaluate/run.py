"""Evaluate a model directory (converted from PyTorch or trained here) on a dataset split: accuracy,
balanced accuracy, per-class recall, and a confusion matrix as text, JSON and PNG.

A model that does not fit the data (class count, class names and order, image size) is refused, and so is
a report destination that cannot be written or holds a report, all before any work (`--overwrite`
replaces a fer-jax report, nothing else)."""

from __future__ import annotations

import functools
import json
import os
from typing import Any

import ml_collections
import numpy as np

from fer_jax import data, models, pretrained, tasks, xla
from fer_jax.data import labels as labels_lib
from fer_jax.errors import ConfigError, check_output_path, remove_stale_temporaries
from fer_jax.evaluate import driver, figures, metrics


REPORT_FORMAT = "fer-jax-report/1"
REPORT_FILES = ("report.json", "confusion_matrix.png", "per_attribute_accuracy.png")


def check_out_dir(out_dir: str, overwrite: bool) -> str:
    """Refuses a report destination before any work; returns it absolute.

    An existing report is replaced only with `overwrite`, and only if it is a fer-jax report (its
    report.json says so); other files in the directory are left alone.

    Raises:
      UserError: the directory cannot be written, or holds a report that may not be replaced.
    """
    out_dir = check_output_path(out_dir, "--out", directory=True)
    present = [name for name in REPORT_FILES if os.path.lexists(os.path.join(out_dir, name))]
    if not present:
        return out_dir
    if not overwrite:
        raise ConfigError(f"{out_dir} already holds {present[0]}; choose another --out or pass --overwrite")
    try:
        with open(os.path.join(out_dir, "report.json")) as f:
            ours = json.load(f).get("format") == REPORT_FORMAT
    except (OSError, ValueError, AttributeError):
        ours = False
    if not ours:
        raise ConfigError(f"{out_dir} holds a {present[0]} that is not a fer-jax report; --overwrite replaces only "
                          "fer-jax reports; choose another --out")
    return out_dir


def check_fit(model_dir: str, meta: dict, spec: models.ModelSpec, source: Any, config: ml_collections.ConfigDict,
              split: str) -> None:
    """The model must fit the data: its class count (the model contract), and for a model trained here the
    class names in their order and the image size it was trained at.

    Raises:
      ConfigError: naming both sides.
    """
    d = config.data
    where = f"{d.name} {split}"
    declared = spec.num_classes(meta["hparams"])
    if declared is not None and declared != source.num_classes:
        raise ConfigError(f"{model_dir} is a {meta['arch']} with {declared} classes ({spec.num_classes_key}) but "
                          f"{where} has {source.num_classes}; wrong model or recipe?")
    trained = meta.get("trained", {})
    names, theirs = trained.get("class_names"), list(source.class_names)
    if names and list(names) != theirs:
        named = [k for k, v in labels_lib.ORDERS.items() if list(v) == list(names)]
        hint = (f"pass --config.data.class_order={named[0]}" if named and sorted(names) == sorted(theirs)
                else "wrong model or recipe?")
        raise ConfigError(f"{model_dir} was trained on the classes {', '.join(names)} (in this order) but {where} "
                          f"has {', '.join(theirs)}; {hint}")
    size = trained.get("image_size")
    if size is not None and size != d.image_size:
        raise ConfigError(f"{model_dir} was trained on {size} px images but the recipe evaluates at "
                          f"{d.image_size} px (data.image_size); use the recipe variant it was trained with")


def evaluate_model(model_dir: str, config: ml_collections.ConfigDict, split: str | None = None,
                   out_dir: str | None = None, log=print, overwrite: bool = False) -> dict[str, Any]:
    """Runs the model in `model_dir` over `split` of the dataset in `config.data` through the evaluation
    driver that training uses (single-label, multi-label or video-level, as the recipe's task says).

    Args:
      model_dir: a fer-jax model directory (`porting/convert.py` output or `<workdir>/best`).
      config: a training recipe; its `data` (root, preprocessing, class order, eval options) and `task`.
      split: the split to evaluate (default `config.data.eval_split`).
      out_dir: where to write `report.json` and `confusion_matrix.png` (nothing written if None).
      overwrite: replace a fer-jax report already in `out_dir`.

    Returns:
      The metrics, confusion matrix included.

    Raises:
      UserError: unreadable model or dataset, a model that does not fit the data, or an `out_dir` that
        cannot be written (all before any work).
    """
    if out_dir:
        out_dir = check_out_dir(out_dir, overwrite)
    meta, module, variables = pretrained.load_with_metadata(model_dir)
    spec = models.spec(meta["arch"])
    d = config.data
    split = split or d.eval_split
    source = driver.recipe_source(d, split, "eval")
    check_fit(model_dir, meta, spec, source, config, split)
    task = tasks.create(config.task)
    batch = config.eval_batch_size if config.eval_batch_size > 0 else config.batch_size
    if batch < 1:
        raise ConfigError(f"eval_batch_size={config.eval_batch_size}, batch_size={config.batch_size}: use a "
                          "positive batch size")
    step = xla.jit(functools.partial(driver.eval_step, module=module, spec=spec, task=task), "eval")
    ctx = driver.context(module, spec, variables, source)
    iterator = data.eval_iterator(source, d.eval_pp, global_batch=batch, read_threads=d.read_threads)
    try:
        result = driver.run(lambda b: step(variables, b), iterator, task, ctx)
    except (IndexError, TypeError, ValueError) as e:
        raise ConfigError(f"{model_dir} does not fit {d.name} ({e})") from None
    finally:
        iterator.close()
    log(f"{model_dir} on {d.name} {split}: {metrics.summary_line(result)}")
    if "confusion" in result:
        log(metrics.format_confusion(np.asarray(result["confusion"]), source.class_names))
    else:
        log("\n".join(f"{n:>20} {a:.4f}" for n, a in result["per_attribute_accuracy"].items()))
    if out_dir:
        report = {"format": REPORT_FORMAT, "model": os.path.abspath(model_dir), "dataset": d.name, "split": split,
                  **result}
        write_report(out_dir, report, source.class_names)
        figure = "confusion_matrix.png" if "confusion" in result else "per_attribute_accuracy.png"
        log(f"wrote {out_dir}/report.json and {figure}")
    return result


def write_report(out_dir: str, report: dict[str, Any], class_names) -> None:
    """report.json (and confusion_matrix.png, or a multi-label task's per_attribute_accuracy.png) into `out_dir`, each written to a temporary and renamed; a
    failed write leaves `out_dir` as it was."""
    created = not os.path.isdir(out_dir)
    os.makedirs(out_dir, exist_ok=True)
    for name in REPORT_FILES:
        remove_stale_temporaries(os.path.join(out_dir, name))
    tmp = os.path.join(out_dir, f"report.json.tmp-{os.getpid()}")
    png = os.path.join(out_dir, f"figure.png.tmp-{os.getpid()}")
    try:
        with open(tmp, "w") as f:
            json.dump(report, f, indent=2)
        if "confusion" in report:
            plot_confusion(np.asarray(report["confusion"]), class_names, png)
            os.replace(png, os.path.join(out_dir, "confusion_matrix.png"))
        elif "per_attribute_accuracy" in report:  # multi-label: FAER's per-attribute chart
            figures.attribute_accuracy_chart(report["per_attribute_accuracy"], png,
                                             f"{'/'.join(os.path.normpath(report['model']).split(os.sep)[-2:])} on "
                                             f"{report['dataset']} {report['split']}")
            os.replace(png, os.path.join(out_dir, "per_attribute_accuracy.png"))
        os.replace(tmp, os.path.join(out_dir, "report.json"))
    finally:
        for path in (tmp, png):
            if os.path.exists(path):
                os.remove(path)
        if created and not os.listdir(out_dir):
            os.rmdir(out_dir)


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
    fig.savefig(path, dpi=100, format="png")
    plt.close(fig)
