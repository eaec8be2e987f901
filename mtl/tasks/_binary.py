"""Binary classification: one sigmoid unit, the probability of the ``positive`` label."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

import keras
import numpy as np
import pandas as pd
from pydantic import Field
from sklearn import metrics as skm

from mtl._schema import TaskConfigBase, UnseenLabels
from mtl.data._labels import label_text, missing_mask
from mtl.tasks._base import ClassificationTask

_DEFAULT_POSITIVES = ("1", "True", "true", "yes", "Yes", "y", "Y", "positive", "pos")


class BinaryTaskConfig(TaskConfigBase):
    """``tasks.<name>`` of ``type: binary``."""

    type: Literal["binary"]
    positive: str | int | float | bool | None = None
    threshold: float = Field(0.5, gt=0, lt=1)
    class_weight: Literal["balanced"] | dict[str, float] | None = None
    unseen_labels: UnseenLabels = "error"


class BinaryTask(ClassificationTask):
    """``classes_ == [negative, positive]``; with ``positive`` set, every other label is negative."""

    type = "binary"
    config_class = BinaryTaskConfig
    default_loss = "binary_crossentropy"
    losses = ("binary_crossentropy", "focal")
    default_metrics = ("auc", "accuracy", "precision", "recall", "f1")
    metric_factories = {
        "auc": lambda t: keras.metrics.AUC(name=f"{t.name}_auc"),
        "accuracy": lambda t: keras.metrics.BinaryAccuracy(name=f"{t.name}_accuracy", threshold=t.threshold),
        "precision": lambda t: keras.metrics.Precision(name=f"{t.name}_precision", thresholds=t.threshold),
        "recall": lambda t: keras.metrics.Recall(name=f"{t.name}_recall", thresholds=t.threshold),
        "f1": lambda t: keras.metrics.F1Score(average="micro", name=f"{t.name}_f1", threshold=t.threshold),
    }

    def __init__(self, *args: Any, positive: Any = None, threshold: float = 0.5, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.positive = positive
        self.threshold = threshold

    def fit(self, labels: pd.Series) -> BinaryTask:
        seen = sorted(set(labels[~missing_mask(labels)].map(label_text)))
        if self.positive is not None:
            positive = label_text(self.positive)
            if positive not in seen:
                raise self._error(
                    f"positive label {positive!r} does not occur in the training split; labels seen: {seen[:10]}"
                )
            negatives = [s for s in seen if s != positive]
            self.classes_ = [negatives[0] if len(negatives) == 1 else f"not {positive}", positive]
            return self
        if len(seen) > 2:
            raise self._error(
                f"a binary label column must hold two values, found {len(seen)} ({', '.join(seen[:6])}"
                f"{', ...' if len(seen) > 6 else ''}); set tasks.{self.name}.positive to the positive one"
            )
        if len(seen) < 2:
            raise self._error(f"the training split holds only one label value {seen}; a binary task needs two")
        positive = next((s for s in seen if s in _DEFAULT_POSITIVES), seen[1])
        self.classes_ = [s for s in seen if s != positive] + [positive]
        return self

    def _codes(self, texts: pd.Series) -> pd.Series:
        if self.positive is not None:
            return (texts == self.classes_[1]).astype("int32")
        return super()._codes(texts)

    def encode(self, labels: pd.Series) -> tuple[np.ndarray, np.ndarray]:
        y, present = self._encode_classes(labels)
        return y.astype("float32"), present

    def output_layer(self, x: Any) -> Any:
        return keras.layers.Dense(1, activation="sigmoid", name=self.name, dtype="float32",
                                  trainable=self.trainable)(x)

    def per_example_loss(self, y_true: Any, y_pred: Any) -> Any:
        y_true = keras.ops.reshape(keras.ops.cast(y_true, y_pred.dtype), (-1, 1))
        if self.loss["name"] == "focal":
            return keras.losses.binary_focal_crossentropy(
                y_true,
                y_pred,
                apply_class_balancing=self.loss.get("alpha") is not None,
                alpha=self.loss.get("alpha") or 0.25,
                gamma=self.loss.get("gamma") or 2.0,
            )
        return keras.losses.binary_crossentropy(y_true, y_pred)

    def evaluate(self, y_true: np.ndarray, y_pred: np.ndarray) -> dict[str, float]:
        prob = np.asarray(y_pred).reshape(-1)
        hard = (prob >= self.threshold).astype(int)
        y_true = np.asarray(y_true).astype(int)
        two = len(np.unique(y_true)) == 2
        table = {
            "auc": lambda: skm.roc_auc_score(y_true, prob) if two else float("nan"),
            "accuracy": lambda: skm.accuracy_score(y_true, hard),
            "precision": lambda: skm.precision_score(y_true, hard, zero_division=0),
            "recall": lambda: skm.recall_score(y_true, hard, zero_division=0),
            "f1": lambda: skm.f1_score(y_true, hard, zero_division=0),
        }
        return {m: float(table[m]()) for m in self.metrics}

    def plot(self, y_true: np.ndarray, y_pred: np.ndarray, out: Path) -> Path | None:
        """The ROC curve, named by the positive class."""
        if len(np.unique(y_true)) != 2:
            return None
        from mtl.reporting import figure, save_figure

        fig = figure(5, 4.5)
        ax = fig.subplots()
        skm.RocCurveDisplay.from_predictions(y_true, np.asarray(y_pred).reshape(-1), ax=ax, name=self.name,
                                             pos_label=1)
        ax.plot([0, 1], [0, 1], ":", color="grey")
        ax.set_title(f"{self.name}: positive class {self.classes_[1]!r}")
        return save_figure(fig, out / f"roc_{self.name}.png")

    def export_metadata(self) -> dict:
        return {**super().export_metadata(), "threshold": float(self.threshold)}

    @classmethod
    def table_columns(cls, name: str, entry: dict, outputs: dict[str, np.ndarray],
                      threshold: float | None = None) -> dict[str, Any]:
        """The probability of the positive class and the label at the threshold."""
        prob = outputs[name][:, 0]
        cut = entry["threshold"] if threshold is None else threshold
        return {name: prob, f"{name}_label": np.where(prob >= cut, entry["classes"][1], entry["classes"][0])}

    @classmethod
    def show_in_app(cls, st: Any, name: str, entry: dict, result: Any, words: list[str]) -> None:
        st.metric(f"{name}: P({entry['classes'][1]})", f"{result[name]:.6f}", help=f"threshold {entry['threshold']}")
        st.write(f"{name} label: **{result[f'{name}_label']}**")

    @classmethod
    def read_app_output(cls, app: Any, name: str, entry: dict) -> dict[str, Any]:
        label = f"{name}: P({entry['classes'][1]})"
        shown = next(m.value for m in app.metric if m.label == label)
        text = next(m.value for m in app.markdown if m.value.startswith(f"{name} label: **"))
        return {name: float(shown), f"{name}_label": text[len(f"{name} label: **"):-2]}

    @classmethod
    def eda_section(cls, name: str, config: Any, labelled: pd.Series, plot: Path) -> list[str]:
        lines = super().eda_section(name, config, labelled, plot)
        classes = len(set(labelled.map(label_text)))
        if classes != 2 and config.positive is None:
            lines += ["", f"**Note:** a binary task should have 2 classes; found {classes}."]
        return lines

    @classmethod
    def eda_target(cls, config: Any, values: pd.Series) -> pd.Series:
        """1 for the positive class (else the second class in sorted order), 0 otherwise."""
        if config.positive is None:
            return super().eda_target(config, values)
        missing = missing_mask(values)
        out = pd.Series(np.nan, index=values.index)
        out[~missing] = (values[~missing].map(label_text) == label_text(config.positive)).astype(float)
        return out

    def get_config(self) -> dict:
        return {**super().get_config(), "positive": self.positive, "threshold": self.threshold}
