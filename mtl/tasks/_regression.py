"""Regression: one linear unit trained on the standardised target, predicting original units."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

import keras
import numpy as np
import pandas as pd
from sklearn import metrics as skm

from mtl._schema import TaskConfigBase
from mtl.data._labels import data_row, missing_mask
from mtl.features._values import CellError, number_value, shown
from mtl.tasks._base import Task
from mtl.tasks._metrics import ErrorSums


class RegressionTaskConfig(TaskConfigBase):
    """``tasks.<name>`` of ``type: regression``."""

    type: Literal["regression"]


def _label_number(value: Any) -> float:
    """A label as a float; ``inf`` for a label that is not a finite number (the caller reports it)."""
    try:
        return number_value(value)
    except CellError:
        return float("inf")


class RegressionTask(Task):
    """The head's last Dense layer learns ``(y - mean_) / std_``; a ``Rescaling`` layer maps it back,
    so the model, its metrics and its exports speak in the target's own units."""

    type = "regression"
    config_class = RegressionTaskConfig
    default_loss = "mse"
    losses = ("mse", "mae", "huber", "log_cosh")
    default_metrics = ("rmse", "mae", "mape", "r2")
    lower_is_better_metrics = ("rmse", "mae", "mse", "mape")
    metric_groups = ((ErrorSums.measures, lambda t, reports: ErrorSums(reports, name=f"{t.name}_errors")),)
    evaluation_only_metrics = ("mape",)

    mean_: float
    std_: float

    def _numbers(self, labels: pd.Series) -> tuple[np.ndarray, np.ndarray]:
        present = ~missing_mask(labels)
        values = np.array([_label_number(v) if p else np.nan for v, p in zip(labels, present, strict=True)],
                          dtype="float64")
        bad = present & ~np.isfinite(values)
        if bad.any():
            pos = int(np.flatnonzero(bad)[0])
            value = labels.iloc[pos]
            try:
                number_value(value, non_finite="missing")
            except CellError:
                problem = "is not a number"
            else:
                problem = "is not a finite number"
            raise self._error(f"{data_row(labels.index[pos])}: {shown(value)} {problem}")
        return values, present

    def fit(self, labels: pd.Series) -> RegressionTask:
        values, present = self._numbers(labels)
        kept = values[present]
        self.mean_ = float(kept.mean())
        std = float(kept.std())
        self.std_ = std if std > 0 else 1.0
        return self

    def fit_partial(self, labels: pd.Series) -> None:
        """Merge one batch into exact running statistics (``mtl._moments``)."""
        from mtl._moments import RunningMoments

        if not hasattr(self, "_moments"):
            self._moments = RunningMoments()
        values, present = self._numbers(labels)
        self._moments.update(values[present])

    def finish_fit(self) -> RegressionTask:
        moments = self.__dict__.pop("_moments", None)
        if moments is None or not float(moments.count):
            raise self._error("no labels in the training split")
        self.mean_ = float(moments.mean)
        std = float(np.sqrt(moments.variance()))
        self.std_ = std if std > 0 else 1.0
        return self

    def encode(self, labels: pd.Series) -> tuple[np.ndarray, np.ndarray]:
        values, present = self._numbers(labels)
        return np.where(present, values, 0.0).astype("float32"), present

    def output_layer(self, x: Any, initializer: str = "glorot_uniform") -> Any:
        z = keras.layers.Dense(1, name=f"{self.name}_standardised", dtype="float32",
                               kernel_initializer=initializer, trainable=self.trainable)(x)
        return keras.layers.Rescaling(self.std_, offset=self.mean_, name=self.name, dtype="float32")(z)

    def link_features(self, output: Any) -> Any:
        """The prediction in standardised units (``(y - mean_) / std_``), the scale a linked head reads best."""
        return keras.layers.Rescaling(1.0 / self.std_, offset=-self.mean_ / self.std_,
                                      name=f"{self.name}_standardised_link", dtype="float32")(output)

    def per_example_loss(self, y_true: Any, y_pred: Any) -> Any:
        y_true = keras.ops.reshape(keras.ops.cast(y_true, y_pred.dtype), (-1, 1))
        z_true = (y_true - self.mean_) / self.std_
        z_pred = (y_pred - self.mean_) / self.std_
        name = self.loss["name"]
        if name == "huber":
            return keras.losses.huber(z_true, z_pred, delta=self.loss.get("delta") or 1.0)
        return {"mse": keras.losses.mean_squared_error, "mae": keras.losses.mean_absolute_error,
                "log_cosh": keras.losses.log_cosh}[name](z_true, z_pred)

    def evaluate(self, y_true: np.ndarray, y_pred: np.ndarray) -> dict[str, float]:
        pred = np.asarray(y_pred).reshape(-1)
        table = {
            "rmse": lambda: np.sqrt(skm.mean_squared_error(y_true, pred)),
            "mae": lambda: skm.mean_absolute_error(y_true, pred),
            "mse": lambda: skm.mean_squared_error(y_true, pred),
            "mape": lambda: skm.mean_absolute_percentage_error(y_true, pred),
            "r2": lambda: skm.r2_score(y_true, pred) if len(y_true) > 1 else float("nan"),
        }
        return {m: float(table[m]()) for m in self.metrics}

    def plot(self, y_true: np.ndarray, y_pred: np.ndarray, out: Path) -> Path | None:
        """Predicted against true values, with the diagonal."""
        from mtl.reporting import figure, save_figure

        pred = np.asarray(y_pred).reshape(-1)
        fig = figure(5, 4.5)
        ax = fig.subplots()
        ax.scatter(y_true, pred, s=4, alpha=0.3)
        low, high = float(min(y_true.min(), pred.min())), float(max(y_true.max(), pred.max()))
        ax.plot([low, high], [low, high], ":", color="grey")
        ax.set(xlabel=f"true {self.name}", ylabel=f"predicted {self.name}")
        return save_figure(fig, out / f"pred_vs_true_{self.name}.png")

    @classmethod
    def eda_section(cls, name: str, config: Any, labelled: pd.Series, plot: Path) -> list[str]:
        from mtl.reporting import cell, histograms, stats_table

        numbers = pd.Series([_label_number(v) for v in labelled], index=labelled.index, dtype="float64")
        bad = ~np.isfinite(numbers)
        lines = []
        if bad.any():
            lines.append(f"- **non-numeric labels:** {int(bad.sum()):,} (e.g. {cell(repr(labelled[bad].iloc[0]))})")
        numbers = numbers[~bad]
        histograms({name: numbers}, plot)
        return [*lines, "", *stats_table({name: numbers})]

    @classmethod
    def eda_target(cls, config: Any, values: pd.Series) -> pd.Series:
        missing = missing_mask(values)
        numbers = [_label_number(v) if not m else np.nan for v, m in zip(values, missing, strict=True)]
        out = pd.Series(numbers, index=values.index, dtype="float64")
        return out.where(np.isfinite(out))

    def get_config(self) -> dict:
        return {**super().get_config(), "mean_": self.mean_, "std_": self.std_}
