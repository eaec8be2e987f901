"""Binary classification: one sigmoid unit, the probability of the ``positive`` label."""

from __future__ import annotations

from typing import Any

import keras
import numpy as np
import pandas as pd
from sklearn import metrics as skm

from mtl.data.labels import label_text, missing_mask
from mtl.tasks.base import ClassificationTask

_DEFAULT_POSITIVES = ("1", "True", "true", "yes", "Yes", "y", "Y", "positive", "pos")


class BinaryTask(ClassificationTask):
    """``classes_ == [negative, positive]``; with ``positive`` set, every other label is negative."""

    type = "binary"
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

    def get_config(self) -> dict:
        return {**super().get_config(), "positive": self.positive, "threshold": self.threshold}
