"""Metrics from summed confusion matrices."""

from __future__ import annotations

import numpy as np

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
