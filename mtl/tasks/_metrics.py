"""Metric groups: one Keras metric that accumulates once per step and reports several logged metrics.

Why: in the compiled training step every metric costs its own ops, and on a small model the per-op overhead of
TensorFlow's executor made the metrics a third of an epoch (issue 11). Accuracy, precision, recall and F1 at a
decision threshold all follow from four weighted counts; RMSE, MSE, MAE and R² from five weighted sums. A group's
``result()`` is a dict of ``{logged name: value}``, which Keras' ``get_metrics_result`` and ``MultiTaskModel`` flatten.
The formulas are Keras' own (``BinaryAccuracy``, ``Precision``, ``Recall``, ``F1Score(average="micro")``,
``RootMeanSquaredError``, ``MeanSquaredError``, ``MeanAbsoluteError``, ``R2Score``), tested against them.
"""

from __future__ import annotations

from typing import Any

import keras
import numpy as np
import tensorflow as tf
from keras import ops

__all__ = ["ErrorSums", "ThresholdCounts"]


class _Group(keras.metrics.Metric):
    """A metric reporting ``reports`` (``{logged name: measure}``) from one set of accumulators."""

    measures: tuple[str, ...] = ()
    size = 0

    def __init__(self, reports: dict[str, str], name: str = "metric_group", dtype: Any = None) -> None:
        super().__init__(name=name, dtype=dtype)
        unknown = set(reports.values()) - set(self.measures)
        if unknown:
            raise ValueError(f"{type(self).__name__} cannot report {sorted(unknown)}; it reports {self.measures}")
        self.reports = dict(reports)
        self.sums = self.add_variable(shape=(self.size,), initializer="zeros", name="sums")

    def reset_state(self) -> None:
        self.sums.assign(ops.zeros((self.size,), dtype=self.sums.dtype))

    def result(self) -> dict[str, Any]:
        if tf.executing_eagerly():  # an epoch's end: a few numpy scalars instead of ~20 eager ops (6 ms a group)
            with np.errstate(divide="ignore", invalid="ignore"):
                values = self.measure_values(ops.convert_to_numpy(self.sums), _NumpyOps)
        else:
            values = self.measure_values(self.sums, ops)
        return {name: values[measure] for name, measure in self.reports.items()}

    def measure_values(self, sums: Any, xp: Any) -> dict[str, Any]:  # noqa: ANN401
        """``{measure: value}`` from the accumulated ``sums``, computed with ``xp`` (``keras.ops`` in a compiled
        step, ``_NumpyOps`` eagerly): the same formulas, in float32 either way."""
        raise NotImplementedError

    @staticmethod
    def _flat(y_true: Any, y_pred: Any, sample_weight: Any) -> tuple[Any, Any, Any]:
        y_true = ops.reshape(ops.cast(y_true, "float32"), (-1,))
        y_pred = ops.reshape(ops.cast(y_pred, "float32"), (-1,))
        weight = ops.ones_like(y_true) if sample_weight is None else \
            ops.reshape(ops.cast(sample_weight, "float32"), (-1,))
        return y_true, y_pred, weight

    def get_config(self) -> dict:
        return {"reports": self.reports, "name": self.name, "dtype": self.dtype}


class _NumpyOps:
    """The ``keras.ops`` functions the measures use, on numpy float32 scalars, with the same results."""

    sqrt = staticmethod(np.sqrt)
    isinf = staticmethod(np.isinf)
    zeros_like = staticmethod(np.zeros_like)
    where = staticmethod(np.where)

    @staticmethod
    def divide_no_nan(numerator: Any, denominator: Any) -> Any:  # noqa: ANN401
        return np.float32(0.0) if denominator == 0 else np.float32(numerator / denominator)


class ThresholdCounts(_Group):
    """Weighted true positives, false positives, false negatives and true negatives of a binary output at
    ``threshold`` (a row is positive when its probability is above it); reports ``accuracy``, ``precision``,
    ``recall`` and ``f1``."""

    measures = ("accuracy", "precision", "recall", "f1")
    size = 4

    def __init__(self, reports: dict[str, str], threshold: float = 0.5, name: str = "threshold_counts",
                 dtype: Any = None) -> None:
        super().__init__(reports, name=name, dtype=dtype)
        self.threshold = float(threshold)

    def update_state(self, y_true: Any, y_pred: Any, sample_weight: Any = None) -> None:
        y_true, y_pred, weight = self._flat(y_true, y_pred, sample_weight)
        predicted = ops.cast(ops.greater(y_pred, self.threshold), "float32")
        positive = weight * y_true
        negative = weight * (1.0 - y_true)
        self.sums.assign_add(ops.stack([ops.sum(positive * predicted), ops.sum(negative * predicted),
                                        ops.sum(positive * (1.0 - predicted)), ops.sum(negative * (1.0 - predicted))]))

    def measure_values(self, sums: Any, xp: Any) -> dict[str, Any]:  # noqa: ANN401
        tp, fp, fn, tn = sums[0], sums[1], sums[2], sums[3]
        epsilon = keras.backend.epsilon()
        f1_precision = tp / (tp + fp + epsilon)  # F1Score's own epsilon-guarded ratios
        f1_recall = tp / (tp + fn + epsilon)
        return {"accuracy": xp.divide_no_nan(tp + tn, tp + fp + fn + tn),
                "precision": xp.divide_no_nan(tp, tp + fp), "recall": xp.divide_no_nan(tp, tp + fn),
                "f1": 2.0 * f1_precision * f1_recall / (f1_precision + f1_recall + epsilon)}

    def get_config(self) -> dict:
        return {**super().get_config(), "threshold": self.threshold}


class ErrorSums(_Group):
    """Weighted sums of a regression output's errors and labels; reports ``rmse``, ``mae``, ``mse`` and ``r2``."""

    measures = ("rmse", "mae", "mse", "r2")
    size = 5  # weight, squared error, absolute error, label, squared label

    def update_state(self, y_true: Any, y_pred: Any, sample_weight: Any = None) -> None:
        y_true, y_pred, weight = self._flat(y_true, y_pred, sample_weight)
        error = y_true - y_pred
        weighted = weight * y_true
        self.sums.assign_add(ops.stack([ops.sum(weight), ops.sum(weight * error * error),
                                        ops.sum(weight * ops.abs(error)), ops.sum(weighted),
                                        ops.sum(weighted * y_true)]))

    def measure_values(self, sums: Any, xp: Any) -> dict[str, Any]:  # noqa: ANN401
        count, squared, absolute, total, total_squared = (sums[i] for i in range(5))
        mse = xp.divide_no_nan(squared, count)
        spread = total_squared - total * (total / count)
        r2 = 1.0 - squared / spread
        return {"rmse": xp.sqrt(mse), "mse": mse, "mae": xp.divide_no_nan(absolute, count),
                "r2": xp.where(xp.isinf(r2), xp.zeros_like(r2), r2)}
