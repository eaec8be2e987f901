"""Metric groups (``mtl.tasks._metrics``) report what Keras' own metrics report, on any batches and masks."""

import keras
import numpy as np
import tensorflow as tf
from hypothesis import given, settings
from hypothesis import strategies as st

from mtl.tasks import TASK_TYPES, ErrorSums, ThresholdCounts

rows = st.integers(1, 40)


@st.composite
def batches(draw, binary: bool) -> list[tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """One to three batches of (labels, outputs, 0/1 weights); a batch may hold no weighted row."""
    out = []
    for _ in range(draw(st.integers(1, 3))):
        n = draw(rows)
        seed = draw(st.integers(0, 2**31 - 1))
        rng = np.random.default_rng(seed)
        if binary:
            labels = (rng.random(n) < draw(st.floats(0, 1))).astype("float32")
            outputs = rng.random(n).astype("float32")
            outputs[rng.random(n) < 0.2] = 0.5  # exactly at the threshold: not positive
        else:
            labels = rng.normal(size=n).astype("float32") * draw(st.sampled_from([0.0, 1.0, 100.0]))
            outputs = rng.normal(size=n).astype("float32")
        weights = (rng.random(n) < draw(st.floats(0, 1))).astype("float32")
        out.append((labels.reshape(-1, 1), outputs.reshape(-1, 1), weights))
    return out


def run(metric, data):
    """The metric's result after ``data``; a group's result read eagerly (numpy) must equal the compiled one."""
    for labels, outputs, weights in data:
        metric.update_state(labels, outputs, sample_weight=weights)
    result = metric.result()
    if not isinstance(result, dict):
        return float(result)
    compiled = {k: float(v) for k, v in tf.function(metric.result)().items()}
    eager = {k: float(v) for k, v in result.items()}
    assert eager.keys() == compiled.keys()
    for name, value in eager.items():
        assert_same(value, compiled[name])
    return eager


def assert_same(got: float, want: float) -> None:
    if np.isnan(want):
        assert np.isnan(got)
    else:
        np.testing.assert_allclose(got, want, rtol=2e-5, atol=2e-6)


@settings(max_examples=40, deadline=None)
@given(batches(binary=True))
def test_threshold_counts_equal_keras_binary_metrics(data):
    group = run(ThresholdCounts({m: m for m in ThresholdCounts.measures}, threshold=0.5), data)
    keras_metrics = {"accuracy": keras.metrics.BinaryAccuracy(threshold=0.5),
                     "precision": keras.metrics.Precision(thresholds=0.5),
                     "recall": keras.metrics.Recall(thresholds=0.5),
                     "f1": keras.metrics.F1Score(average="micro", threshold=0.5)}
    for name, metric in keras_metrics.items():
        assert_same(group[name], run(metric, data))


@settings(max_examples=40, deadline=None)
@given(batches(binary=False))
def test_error_sums_equal_keras_regression_metrics(data):
    group = run(ErrorSums({m: m for m in ErrorSums.measures}), data)
    keras_metrics = {"rmse": keras.metrics.RootMeanSquaredError(), "mse": keras.metrics.MeanSquaredError(),
                     "mae": keras.metrics.MeanAbsoluteError(), "r2": keras.metrics.R2Score()}
    for name, metric in keras_metrics.items():
        want = run(metric, data)
        if name == "r2" and not sum(w.sum() for *_, w in data):
            continue  # no weighted row: Keras' R2Score divides 0 by 0 into nan as well, compared below
        assert_same(group[name], want)


def test_a_task_makes_one_metric_per_group_reporting_only_the_chosen_names():
    binary = TASK_TYPES["binary"](name="click", column="c", metrics=["auc", "f1", "precision"])
    names = [m.name for m in binary.make_metrics()]
    assert names == ["click_auc", "click_at_threshold"]
    group = binary.make_metrics()[1]
    assert group.reports == {"click_f1": "f1", "click_precision": "precision"}
    regression = TASK_TYPES["regression"](name="spend", column="s", metrics=["mape", "r2"])
    assert [m.reports for m in regression.make_metrics()] == [{"spend_r2": "r2"}]
    assert regression.logged_metrics() == ["r2"]  # mape is computed at evaluation only
