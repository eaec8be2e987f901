"""Task types: label encoding rules, losses and evaluation against hand computations."""

import keras
import numpy as np
import pandas as pd
import pytest

from mtl.errors import MtlError
from mtl.tasks import BinaryTask, MulticlassTask, RegressionTask, task_from_config


def test_binary_picks_the_conventional_positive_and_masks_missing():
    task = BinaryTask("t", "c").fit(pd.Series(["no", "yes", "no"]))
    assert task.classes_ == ["no", "yes"]
    y, present = task.encode(pd.Series(["yes", None, "no", " "]))
    assert y.tolist() == [1, 0, 0, 0] and present.tolist() == [True, False, True, False]


def test_binary_numeric_labels_and_explicit_positive():
    task = BinaryTask("t", "c", positive=1).fit(pd.Series([0.0, 1.0, np.nan]))
    assert task.classes_ == ["0", "1"]
    y, _ = task.encode(pd.Series([1.0, 0.0]))
    assert y.tolist() == [1, 0]


def test_unknown_loss_or_metric_is_named():
    with pytest.raises(MtlError, match=r"tasks.t.loss: unknown loss 'focall' .*did you mean 'focal'"):
        BinaryTask("t", "c", loss={"name": "focall"})
    with pytest.raises(MtlError, match=r"tasks.t.metrics: unknown metric 'rmes'"):
        RegressionTask("t", "c", metrics=["rmes"])


def test_regression_standardises_in_the_loss_and_rejects_text():
    task = RegressionTask("t", "c").fit(pd.Series([10.0, 20.0, 30.0]))
    assert (task.mean_, round(task.std_, 4)) == (20.0, 8.1650)
    loss = task.per_example_loss(np.array([20.0]), np.array([[20.0 + task.std_]], dtype="float32"))
    assert float(loss[0]) == pytest.approx(1.0, rel=1e-5)  # one standard deviation off -> MSE 1
    with pytest.raises(MtlError, match=r"row 2: 'ten' is not a number"):
        task.encode(pd.Series([1.0, "ten"], dtype=object))


def test_multiclass_sorts_numeric_classes_and_round_trips_config():
    task = MulticlassTask("t", "c", class_weight={"10": 2.0}).fit(pd.Series([10, 2, 1, 2]))
    assert task.classes_ == ["1", "2", "10"]
    y, _ = task.encode(pd.Series([10, 1]))
    assert y.tolist() == [2, 0]
    assert task.class_weights(y).tolist() == [2.0, 1.0]
    again = task_from_config(task.get_config())
    assert again.classes_ == task.classes_ and again.class_weight == {"10": 2.0}
    report = task.evaluate(np.array([0, 1, 2]), np.eye(3)[[0, 1, 1]])
    assert report["accuracy"] == pytest.approx(2 / 3)


def test_focal_losses_are_per_row():
    binary = BinaryTask("b", "c", loss={"name": "focal", "gamma": 2.0}).fit(pd.Series(["a", "b"]))
    per_row = binary.per_example_loss(np.array([1.0, 0.0]), np.array([[0.9], [0.9]], dtype="float32"))
    assert keras.ops.shape(per_row) == (2,) and float(per_row[1]) > float(per_row[0])
