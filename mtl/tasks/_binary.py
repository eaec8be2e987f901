"""Binary classification: one sigmoid unit, the probability of the ``positive`` label."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, Literal

import keras
import numpy as np
import pandas as pd
from pydantic import Field
from sklearn import metrics as skm

from mtl._schema import Strict, TaskConfigBase, UnseenLabels
from mtl.data._labels import label_text, missing_mask
from mtl.tasks._base import ClassificationTask, log
from mtl.tasks._metrics import ThresholdCounts

_DEFAULT_POSITIVES = ("1", "True", "true", "yes", "Yes", "y", "Y", "positive", "pos")


class PrecisionAtRecall(Strict):
    """The threshold of the highest precision among those whose recall is at least ``precision_at_recall``."""

    precision_at_recall: float = Field(gt=0, le=1)


class RecallAtPrecision(Strict):
    """The threshold of the highest recall among those whose precision is at least ``recall_at_precision``."""

    recall_at_precision: float = Field(gt=0, le=1)


class ThresholdSearch(Strict):
    """``threshold: {optimize: ...}``: the threshold is chosen on the validation split after training."""

    optimize: Literal["f1", "youden"] | PrecisionAtRecall | RecallAtPrecision = Field(
        description="f1 (the F1-best threshold), youden (max TPR - FPR), {precision_at_recall: R} or "
                    "{recall_at_precision: P}")


class BinaryTaskConfig(TaskConfigBase):
    """``tasks.<name>`` of ``type: binary``."""

    type: Literal["binary"]
    positive: str | int | float | bool | None = None
    threshold: Annotated[float, Field(gt=0, lt=1)] | ThresholdSearch = Field(
        0.5, description="a probability, or {optimize: f1 | youden | {precision_at_recall: R} | "
                         "{recall_at_precision: P}} chosen on the validation split")
    class_weight: Literal["balanced"] | dict[str, float] | None = None
    unseen_labels: UnseenLabels = "error"


def choose_threshold(rule: str | dict, y_true: np.ndarray, prob: np.ndarray) -> float:
    """The threshold ``rule`` picks on labelled rows (scikit-learn's curves; a row is positive when
    ``prob >= threshold``): ``f1``, ``youden``, ``{precision_at_recall: R}`` or ``{recall_at_precision: P}``."""
    y_true, prob = np.asarray(y_true).astype(int), np.asarray(prob, dtype="float64").reshape(-1)
    if rule == "youden":
        fpr, tpr, cuts = skm.roc_curve(y_true, prob)
        best = int(np.argmax((tpr - fpr)[1:])) + 1  # cuts[0] is +inf: no row positive
        return float(cuts[best])
    precision, recall, cuts = skm.precision_recall_curve(y_true, prob)
    precision, recall = precision[:-1], recall[:-1]  # the last point has no threshold
    if rule == "f1":
        f1 = np.divide(2 * precision * recall, precision + recall, out=np.zeros_like(precision),
                       where=(precision + recall) > 0)
        return float(cuts[int(np.argmax(f1))])
    (kind, target), = rule.items()
    meets, score = (recall >= target, precision) if kind == "precision_at_recall" else (precision >= target, recall)
    if not meets.any():
        other = "recall" if kind == "precision_at_recall" else "precision"
        best = int(np.argmax(recall if kind == "precision_at_recall" else precision))
        log.warning("threshold %s %s: no threshold reaches %s %s on the validation split; using the one with the "
                    "highest %s (%.4f)", kind, target, other, target, other, float(cuts[best]))
        return float(cuts[best])
    candidates = np.flatnonzero(meets)
    return float(cuts[candidates[int(np.argmax(score[candidates]))]])


class BinaryTask(ClassificationTask):
    """``classes_ == [negative, positive]``; with ``positive`` set, every other label is negative.

    ``threshold`` is a probability or ``{"optimize": rule}``; with a rule, ``threshold_`` is the threshold chosen on
    the validation split after training (``choose_on_validation``), the one evaluation, exports and serving use."""

    type = "binary"
    config_class = BinaryTaskConfig
    default_loss = "binary_crossentropy"
    losses = ("binary_crossentropy", "focal")
    default_metrics = ("auc", "pr_auc", "accuracy", "balanced_accuracy", "precision", "recall", "f1", "mcc")
    metric_factories = {
        "auc": lambda t: keras.metrics.AUC(name=f"{t.name}_auc"),
    }
    metric_groups = ((ThresholdCounts.measures, lambda t, reports: ThresholdCounts(
        reports, t.decision_threshold, name=f"{t.name}_at_threshold")),)
    evaluation_only_metrics = ("pr_auc", "balanced_accuracy", "mcc")
    supports_product = True

    def __init__(self, *args: Any, positive: Any = None, threshold: float | dict = 0.5, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.positive = positive
        self.threshold = threshold

    @property
    def decision_threshold(self) -> float:
        """The probability from which a row is positive: the number configured, else the one chosen on validation
        (0.5 until it is chosen)."""
        if isinstance(self.threshold, int | float):
            return float(self.threshold)
        return float(getattr(self, "threshold_", 0.5))

    def choose_on_validation(self, y_true: np.ndarray, y_pred: np.ndarray) -> dict:
        """Choose the threshold by the configured rule on the validation split's labelled rows."""
        if isinstance(self.threshold, int | float):
            return {}
        rule = self.threshold["optimize"]
        if len(np.unique(np.asarray(y_true).astype(int))) < 2:
            log.warning("%s: the validation split holds %s; threshold %s cannot be chosen, 0.5 is used", self.name,
                        "no labels" if len(y_true) == 0 else "one class only", rule)
            self.threshold_ = 0.5
        else:
            self.threshold_ = choose_threshold(rule, y_true, y_pred)
        return {"threshold": self.threshold_, "optimize": rule}

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

    def output_layer(self, x: Any, initializer: str = "glorot_uniform") -> Any:
        return keras.layers.Dense(1, activation="sigmoid", name=self.name, dtype="float32",
                                  kernel_initializer=initializer, trainable=self.trainable)(x)

    def funnel_output(self, x: Any, upstream: list, initializer: str = "glorot_uniform") -> Any:
        """ESMM: the head learns ``p(self | upstream)`` (layer ``<task>_conditional``) and outputs
        ``p(upstream) * p(self | upstream)``, the probability the loss and every consumer see."""
        conditional = keras.layers.Dense(1, activation="sigmoid", name=f"{self.name}_conditional", dtype="float32",
                                         kernel_initializer=initializer, trainable=self.trainable)(x)
        return keras.layers.Multiply(name=self.name, dtype="float32")([*upstream, conditional])

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
        hard = (prob >= self.decision_threshold).astype(int)
        y_true = np.asarray(y_true).astype(int)
        two = len(np.unique(y_true)) == 2
        table = {
            "auc": lambda: skm.roc_auc_score(y_true, prob) if two else float("nan"),
            "pr_auc": lambda: skm.average_precision_score(y_true, prob) if two else float("nan"),
            "accuracy": lambda: skm.accuracy_score(y_true, hard),
            "balanced_accuracy": lambda: skm.balanced_accuracy_score(y_true, hard) if two else float("nan"),
            "mcc": lambda: skm.matthews_corrcoef(y_true, hard),
            "precision": lambda: skm.precision_score(y_true, hard, zero_division=0),
            "recall": lambda: skm.recall_score(y_true, hard, zero_division=0),
            "f1": lambda: skm.f1_score(y_true, hard, zero_division=0),
        }
        return {m: float(table[m]()) for m in self.metrics}

    def plot(self, y_true: np.ndarray, y_pred: np.ndarray, out: Path) -> Path | None:
        """The ROC and the precision-recall curves side by side, named by the positive class, with the point of the
        decision threshold marked on both."""
        y_true = np.asarray(y_true).astype(int)
        if len(np.unique(y_true)) != 2:
            return None
        from mtl.reporting import figure, save_figure

        prob = np.asarray(y_pred).reshape(-1)
        positive, cut = self.classes_[1], self.decision_threshold
        hard = prob >= cut
        tpr = hard[y_true == 1].mean()
        fpr = hard[y_true == 0].mean()
        precision = skm.precision_score(y_true, hard, zero_division=0)
        fig = figure(10, 4.5)
        roc, pr = fig.subplots(1, 2)
        skm.RocCurveDisplay.from_predictions(y_true, prob, ax=roc, name=self.name, pos_label=1)
        roc.plot([0, 1], [0, 1], ":", color="grey")
        roc.plot([fpr], [tpr], "o", color="black", label=f"threshold {cut:.3g}")
        roc.set(xlabel=f"false positive rate (positive class {positive!r})",
                ylabel=f"true positive rate (positive class {positive!r})", title=f"{self.name}: ROC")
        roc.legend(loc="lower right")
        skm.PrecisionRecallDisplay.from_predictions(y_true, prob, ax=pr, name=self.name, pos_label=1,
                                                    plot_chance_level=True)
        pr.plot([tpr], [precision], "o", color="black", label=f"threshold {cut:.3g}")
        pr.set(xlabel=f"recall (positive class {positive!r})", ylabel=f"precision (positive class {positive!r})",
               title=f"{self.name}: precision-recall")
        pr.legend(loc="upper right")
        fig.suptitle(f"{self.name}: positive class {positive!r}")
        return save_figure(fig, out / f"roc_{self.name}.png")

    def export_metadata(self) -> dict:
        entry = {**super().export_metadata(), "threshold": self.decision_threshold}
        if not isinstance(self.threshold, int | float):
            entry["threshold_optimize"] = self.threshold["optimize"]  # how the threshold was chosen on validation
        return entry

    def serving_outputs(self, output: Any, word_counts: Any | None) -> dict[str, Any]:
        """``<task>_label``: the class at the decision threshold, ``[batch, 1]`` strings, so a TF Serving client
        gets the label the threshold chosen on validation gives."""
        import tensorflow as tf

        classes = tf.constant([str(c) for c in self.classes_], tf.string)
        return {f"{self.name}_label": tf.gather(classes, tf.cast(output >= self.decision_threshold, tf.int32))}

    @classmethod
    def table_columns(cls, name: str, entry: dict, outputs: dict[str, np.ndarray],
                      threshold: float | None = None) -> dict[str, Any]:
        """The probability of the positive class and the label at the threshold."""
        prob = outputs[name][:, 0]
        cut = entry["threshold"] if threshold is None else threshold
        return {name: prob, f"{name}_label": np.where(prob >= cut, entry["classes"][1], entry["classes"][0])}

    @classmethod
    def show_in_app(cls, st: Any, name: str, entry: dict, result: Any, words: list[str]) -> None:
        rule = entry.get("threshold_optimize")
        how = f", chosen on the validation split by {rule}" if rule else ""
        st.metric(f"{name}: P({entry['classes'][1]})", f"{result[name]:.6f}",
                  help=f"{entry['classes'][1]} from probability {entry['threshold']:.4g}{how}")
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
        config = {**super().get_config(), "positive": self.positive, "threshold": self.threshold}
        if hasattr(self, "threshold_"):
            config["threshold_"] = self.threshold_
        return config
