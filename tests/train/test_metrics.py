"""Metrics from summed confusion matrices."""

from __future__ import annotations

import os

import numpy as np
import pytest

from fer_jax.errors import ConfigError
from fer_jax.evaluate import metrics


def test_accuracy_and_balanced_accuracy_like_sklearn():
    y_true = np.array([0, 0, 0, 1, 1, 2, 2, 2, 2, 2])
    y_pred = np.array([0, 1, 0, 1, 1, 2, 0, 2, 2, 1])
    cm = np.zeros((4, 4), int)  # class 3 never occurs: excluded from balanced accuracy, as sklearn does
    np.add.at(cm, (y_true, y_pred), 1)
    m = metrics.classification(cm, ["a", "b", "c", "d"])
    assert m["accuracy"] == 7 / 10
    assert np.isclose(m["balanced_accuracy"], np.mean([2 / 3, 2 / 2, 3 / 5]))
    assert m["per_class_recall"] == {"a": 2 / 3, "b": 1.0, "c": 0.6}
    assert "a  " in metrics.format_confusion(cm, ["a", "b", "c", "d"]).splitlines()[1]


def test_multilabel_mean_attribute_accuracy():
    m = metrics.multilabel(np.array([9, 5, 10]), 10, ["x", "y", "z"])
    assert np.isclose(m["mean_attribute_accuracy"], 0.8) and m["per_attribute_accuracy"]["y"] == 0.5


def _float_metrics(task) -> set[str]:
    """The float-valued metrics a task reports for a small fake evaluation."""
    from fer_jax import tasks

    names = ("a", "b", "c")
    if task.kind == "multilabel":
        sums = {"hits": np.array([3, 1, 2]), "loss_sum": 1.5, "count": 4}
        return {k for k, v in task.metrics(sums, {}, tasks.EvalContext(names)).items() if isinstance(v, float)}
    if isinstance(task, tasks.VideoClassification):
        probs = np.full((5, 3), 1 / 3)
        examples = {"mask": np.array([1, 1, 1, 1, 0], bool), "video": np.array([0, 0, 1, 2, 0]),
                    "label": np.array([1, 1, 0, 2, 0]), "values": (probs,)}
        result = task.metrics(None, examples, tasks.EvalContext(names, num_videos=3))
    else:
        sums = {"confusion": np.array([[2, 1, 0], [0, 1, 0], [1, 0, 3]]), "loss_sum": 2.0, "count": 8}
        result = task.metrics(sums, {}, tasks.EvalContext(names))
    return {k for k, v in result.items() if isinstance(v, float)}


def test_every_task_reports_the_declared_metrics_with_a_direction():
    """`best_metric` is checked against these tables before training: they must be what the tasks report."""
    from fer_jax import tasks

    for name, cls in tasks.TASKS.items():
        task = cls()
        reported = _float_metrics(task)  # FERAtt's ce and att need its own sums, absent from this fake
        assert reported <= set(metrics.BY_KIND[task.kind]) and set(metrics.BY_KIND[task.kind]) - reported <= {"att", "ce"}, name
        assert all(metrics.check_best_metric(m, task.kind) in ("max", "min") for m in metrics.BY_KIND[task.kind])


def test_metric_directions():
    assert metrics.improves("accuracy", 0.9, 0.8) and not metrics.improves("accuracy", 0.7, 0.8)
    assert metrics.improves("loss", 0.5, 0.6) and not metrics.improves("loss", 0.7, 0.6)  # lower is better
    assert metrics.improves("loss", 3.0, None) and metrics.improves("loss", 3.0, float("nan"))
    assert not metrics.improves("accuracy", float("nan"), 0.1)
    with pytest.raises(ConfigError, match=r"best_metric='top5' is not an evaluation metric; use one of accuracy "
                                          r"\(higher is better\), .*loss \(lower is better\)"):
        metrics.check_best_metric("top5")
    with pytest.raises(ConfigError, match="'accuracy' is not reported by a multilabel task; use one of "
                                          "mean_attribute_accuracy, loss"):
        metrics.check_best_metric("accuracy", "multilabel")


def test_per_class_precision_recall_f1_like_sklearn():
    """sklearn's precision_recall_fscore_support(zero_division=0), computed by hand for this matrix."""
    cm = np.array([[5, 1, 0, 0], [2, 3, 1, 0], [0, 0, 0, 0], [0, 2, 0, 2]])  # class 2: never true, once predicted
    rows = metrics.per_class(cm, ["a", "b", "c", "d"])
    assert [r["class"] for r in rows] == ["a", "b", "c", "d"]
    assert [r["support"] for r in rows] == [6, 6, 0, 4] and [r["predicted"] for r in rows] == [7, 6, 1, 2]
    expected = {"a": (5 / 7, 5 / 6), "b": (3 / 6, 3 / 6), "c": (0.0, 0.0), "d": (2 / 2, 2 / 4)}
    for r in rows:
        p, rec = expected[r["class"]]
        f1 = 2 * p * rec / (p + rec) if p + rec else 0.0
        assert np.isclose(r["precision"], p) and np.isclose(r["recall"], rec) and np.isclose(r["f1"], f1), r
    assert metrics.format_per_class(rows).splitlines()[1].split() == ["a", "0.7143", "0.8333", "0.7692", "6"]


def test_report_files_single_and_multi_label(tmp_path):
    """evaluate.py's report: JSON, CSV and PNG per task kind, written whole (no temporaries left)."""
    import csv
    import json

    from PIL import Image

    from fer_jax.evaluate import run

    names = ["Surprise", "Fear", "Disgust", "Happiness", "Sadness", "Anger", "Neutral"]
    cm = np.random.default_rng(0).integers(0, 30, (7, 7)) + np.diag(np.full(7, 60))
    report = {"format": run.REPORT_FORMAT, "model": "/runs/dan/best", "dataset": "rafdb", "split": "test",
              **metrics.classification(cm, names), "confusion": cm.tolist()}
    written = run.write_report(str(tmp_path / "one"), report, names)
    assert sorted(written) == sorted(os.listdir(tmp_path / "one")) == [
        "confusion_matrix.png", "per_class.csv", "per_class.png", "report.json"]
    saved = json.loads((tmp_path / "one" / "report.json").read_text())
    assert saved["per_class"] == metrics.per_class(cm, names)
    with open(tmp_path / "one" / "per_class.csv") as f:
        table = list(csv.DictReader(f))
    assert [r["class"] for r in table] == names and float(table[0]["recall"]) == saved["per_class"][0]["recall"]
    for png in ("confusion_matrix.png", "per_class.png"):
        with Image.open(tmp_path / "one" / png) as im:
            assert im.format == "PNG" and im.width >= 600 and im.height >= 400

    attrs = {"Smiling": 0.9, "Male": 0.75, "Eyeglasses": 0.5}
    multi = {"format": run.REPORT_FORMAT, "model": "/runs/faer/best", "dataset": "celeba", "split": "test",
             **metrics.multilabel(np.array([9, 7.5, 5]) * 2, 20, list(attrs))}
    assert sorted(run.write_report(str(tmp_path / "multi"), multi, list(attrs))) == sorted(
        os.listdir(tmp_path / "multi")) == ["per_attribute.csv", "per_attribute_accuracy.png", "report.json"]
    with open(tmp_path / "multi" / "per_attribute.csv") as f:
        assert list(csv.reader(f)) == [["attribute", "accuracy"], ["Smiling", "0.9"], ["Male", "0.75"],
                                       ["Eyeglasses", "0.5"]]


def test_failed_report_write_leaves_nothing(tmp_path, monkeypatch):
    from fer_jax.evaluate import figures, run

    def fail(*args):
        raise OSError("disk full")

    monkeypatch.setattr(figures, "per_class_chart", fail)
    cm = np.eye(3, dtype=int) * 4
    report = {"format": run.REPORT_FORMAT, "model": "m", "dataset": "d", "split": "test",
              **metrics.classification(cm, list("abc")), "confusion": cm.tolist()}
    with pytest.raises(OSError, match="disk full"):
        run.write_report(str(tmp_path / "out"), report, list("abc"))
    assert not (tmp_path / "out").exists()
