"""Metrics from summed confusion matrices."""

from __future__ import annotations

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
