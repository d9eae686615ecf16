"""Evaluate a model directory (converted from PyTorch or trained here) on a dataset split: accuracy,
balanced accuracy, per-class precision / recall / F1 and the confusion matrix as text, JSON, CSV and PNG.

A model that does not fit the data (class count, class names and order, image size) is refused, and so is
a report destination that cannot be written or holds a report, all before any work (`--overwrite`
replaces a fer-jax report, nothing else)."""

from __future__ import annotations

import csv
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
REPORT_FILES = ("report.json", "confusion_matrix.png", "per_class.png", "per_class.csv", "per_attribute_accuracy.png",
                "per_attribute.csv")


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
        log(metrics.format_per_class(metrics.per_class(np.asarray(result["confusion"]), source.class_names)))
    else:
        log("\n".join(f"{n:>20} {a:.4f}" for n, a in result["per_attribute_accuracy"].items()))
    if out_dir:
        report = {"format": REPORT_FORMAT, "model": os.path.abspath(model_dir), "dataset": d.name, "split": split,
                  **result}
        names = write_report(out_dir, report, source.class_names)
        log(f"wrote {', '.join(names)} in {out_dir}")
    return result


def write_report(out_dir: str, report: dict[str, Any], class_names) -> list[str]:
    """The report files into `out_dir`: report.json (with a `per_class` table for single-label tasks), and

    - single-label: confusion_matrix.png (counts and row-normalised), per_class.png and per_class.csv
      (precision, recall = class-wise accuracy, F1, support);
    - multi-label: per_attribute_accuracy.png and per_attribute.csv.

    Each file is written to a temporary and renamed, report.json last; a failed write leaves `out_dir` as
    it was (files of an earlier report it would have replaced excepted). Returns the names written.
    """
    created = not os.path.isdir(out_dir)
    os.makedirs(out_dir, exist_ok=True)
    for name in REPORT_FILES:
        remove_stale_temporaries(os.path.join(out_dir, name))
    title = f"{'/'.join(os.path.normpath(report['model']).split(os.sep)[-2:])} on {report['dataset']} {report['split']}"
    if "confusion" in report:
        report = {**report, "per_class": metrics.per_class(np.asarray(report["confusion"]), class_names)}
        writers = {
            "confusion_matrix.png": lambda p: figures.confusion_matrix(np.asarray(report["confusion"]), class_names,
                                                                        p, title),
            "per_class.png": lambda p: figures.per_class_chart(report["per_class"], p, title),
            "per_class.csv": lambda p: _write_csv(p, ["class", "support", "predicted", "precision", "recall", "f1"],
                                                  [[r[k] for k in ("class", "support", "predicted", "precision",
                                                                   "recall", "f1")] for r in report["per_class"]]),
        }
    else:  # multi-label: FAER's per-attribute chart
        writers = {
            "per_attribute_accuracy.png": lambda p: figures.attribute_accuracy_chart(report["per_attribute_accuracy"],
                                                                                    p, title),
            "per_attribute.csv": lambda p: _write_csv(p, ["attribute", "accuracy"],
                                                      list(map(list, report["per_attribute_accuracy"].items()))),
        }

    def write_json(path: str) -> None:
        with open(path, "w") as f:
            json.dump(report, f, indent=2)

    writers["report.json"] = write_json
    temporaries = []
    try:
        written = []
        for name, write in writers.items():
            tmp = os.path.join(out_dir, f"{name}.tmp-{os.getpid()}")
            temporaries.append(tmp)
            write(tmp)
            written.append((tmp, os.path.join(out_dir, name)))
        for tmp, final in written:
            os.replace(tmp, final)
        return list(writers)
    finally:
        for path in temporaries:
            if os.path.exists(path):
                os.remove(path)
        if created and not os.listdir(out_dir):
            os.rmdir(out_dir)


def _write_csv(path: str, header: list[str], rows: list[list[Any]]) -> None:
    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(header)
        w.writerows(rows)
