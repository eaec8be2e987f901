"""Multiclass classification: a softmax over the classes seen in the training split."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

import keras
import numpy as np
import pandas as pd
from pydantic import Field
from sklearn import metrics as skm

from mtl._schema import TaskConfigBase, TaskLink, UnseenLabels
from mtl.data._labels import label_text, missing_mask
from mtl.tasks._base import ClassificationTask


class MulticlassTaskConfig(TaskConfigBase):
    """``tasks.<name>`` of ``type: multiclass``."""

    type: Literal["multiclass"]
    class_weight: Literal["balanced"] | dict[str, float] | None = None
    unseen_labels: UnseenLabels = "error"
    parent: str | None = Field(None, description="a multiclass task whose output feeds this one (a label tree)")
    top_k: int = Field(3, ge=1, description="top_k_accuracy: a row counts when its class is among the k likeliest")

    def links(self) -> list[tuple[str, TaskLink]]:
        """A ``parent`` is a link to the parent task (plus the tree decoding), unless ``inputs`` names it already."""
        links = super().links()
        if self.parent is not None and all(link.task != self.parent for _, link in links):
            links.append(("parent", TaskLink(task=self.parent)))
        return links


def _sort_key(text: str) -> tuple:
    try:
        return (0, float(text), text)
    except ValueError:
        return (1, 0.0, text)


class MulticlassTask(ClassificationTask):
    """Predicts ``[batch, K]`` probabilities over ``classes_`` (sorted, numerically when numbers).

    With ``parent`` (another multiclass task) the head also takes the parent's output, and ``parent_of_``
    (learned from the training rows, see ``mtl.tasks._hierarchy``) gives each class its parent class.
    """

    type = "multiclass"
    config_class = MulticlassTaskConfig
    default_loss = "sparse_categorical_crossentropy"
    losses = ("sparse_categorical_crossentropy", "focal")
    default_metrics = ("accuracy", "macro_f1", "top_k_accuracy")
    metric_factories = {
        "accuracy": lambda t: keras.metrics.SparseCategoricalAccuracy(name=f"{t.name}_accuracy"),
        "macro_f1": lambda t: keras.metrics.F1Score(average="macro", name=f"{t.name}_macro_f1"),
    }
    evaluation_only_metrics = ("top_k_accuracy",)

    def __init__(self, *args: Any, parent: str | None = None, top_k: int = 3, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.parent = parent
        self.top_k = top_k

    @property
    def links(self) -> list[dict]:
        """``inputs`` plus the ``parent`` (a label tree reads its parent's output), unless ``inputs`` names it."""
        links = list(self.inputs)
        if self.parent is not None and all(link["task"] != self.parent for link in links):
            links.append({"task": self.parent, "stop_gradient": False, "product": False})
        return links

    def fit_tree(self, tree: dict[str, str], parent_classes: list[str]) -> MulticlassTask:
        """Learn the label tree: ``tree`` maps each of this task's classes to its parent's class."""
        self.parent_of_ = [tree[c] for c in self.classes_]
        self.parent_classes_ = list(parent_classes)
        return self

    def tree_matrix(self) -> np.ndarray:
        """``[parent classes, classes]``: 1 where a class sits under a parent class."""
        matrix = np.zeros((len(self.parent_classes_), len(self.classes_)), dtype="float32")
        for j, parent in enumerate(self.parent_of_):
            matrix[self.parent_classes_.index(parent), j] = 1.0
        return matrix

    def fit(self, labels: pd.Series) -> MulticlassTask:
        seen = set(labels[~missing_mask(labels)].map(label_text))
        if len(seen) < 2:
            raise self._error(f"the training split holds {len(seen)} class(es) {sorted(seen)}; need at least two")
        self.classes_ = sorted(seen, key=_sort_key)
        return self

    def encode(self, labels: pd.Series) -> tuple[np.ndarray, np.ndarray]:
        return self._encode_classes(labels)

    def output_layer(self, x: Any, initializer: str = "glorot_uniform") -> Any:
        return keras.layers.Dense(len(self.classes_), activation="softmax", name=self.name, dtype="float32",
                                  kernel_initializer=initializer, trainable=self.trainable)(x)

    def per_example_loss(self, y_true: Any, y_pred: Any) -> Any:
        y_true = keras.ops.cast(keras.ops.reshape(y_true, (-1,)), "int32")
        if self.loss["name"] == "focal":
            one_hot = keras.ops.one_hot(y_true, len(self.classes_), dtype=y_pred.dtype)
            return keras.losses.categorical_focal_crossentropy(
                one_hot, y_pred, alpha=self.loss.get("alpha") or 0.25, gamma=self.loss.get("gamma") or 2.0
            )
        return keras.losses.sparse_categorical_crossentropy(y_true, y_pred)

    def metric_inputs(self, metric: keras.metrics.Metric, y_true: Any, y_pred: Any) -> tuple:
        y_true = keras.ops.cast(keras.ops.reshape(y_true, (-1,)), "int32")
        if isinstance(metric, keras.metrics.F1Score):
            return keras.ops.one_hot(y_true, len(self.classes_)), y_pred
        return y_true, y_pred

    def evaluate(self, y_true: np.ndarray, y_pred: np.ndarray) -> dict[str, float]:
        probs = np.asarray(y_pred)
        hard = probs.argmax(axis=-1)
        table = {
            "accuracy": lambda: skm.accuracy_score(y_true, hard),
            "top_k_accuracy": lambda: self._top_k_accuracy(y_true, probs),
            "macro_f1": lambda: skm.f1_score(
                y_true, hard, average="macro", labels=np.arange(len(self.classes_)), zero_division=0
            ),
        }
        return {m: float(table[m]()) for m in self.metrics}

    def _top_k_accuracy(self, y_true: np.ndarray, probs: np.ndarray) -> float:
        """The fraction of rows whose class is among the ``top_k`` likeliest (1 when ``top_k`` covers every class;
        scikit-learn reads two columns of scores as a binary problem, so two classes with ``top_k`` 1 is accuracy)."""
        k = len(self.classes_)
        if self.top_k >= k:
            return 1.0
        if k == 2:
            return float(skm.accuracy_score(y_true, probs.argmax(axis=-1)))
        return float(skm.top_k_accuracy_score(y_true, probs, k=self.top_k, labels=np.arange(k)))

    def plot(self, y_true: np.ndarray, y_pred: np.ndarray, out: Path) -> Path | None:
        """The confusion matrix normalised by true class (each row sums to 1: the recall of each class on the
        diagonal), so rare classes read as well as frequent ones; cell values are written up to 12 classes, beyond
        that the colour scale carries them, and long class names are shortened."""
        from mtl.reporting import figure, save_figure

        k = len(self.classes_)
        size = min(max(5.0, 0.38 * k + 2.5), 24.0)
        fig = figure(size, size * 0.9)
        ax = fig.subplots()
        names = [c if len(c) <= 18 else c[:17] + "…" for c in map(str, self.classes_)]
        display = skm.ConfusionMatrixDisplay.from_predictions(
            np.asarray(y_true).astype(int), np.asarray(y_pred).argmax(-1), labels=np.arange(k), normalize="true",
            display_labels=names, ax=ax, xticks_rotation="vertical", colorbar=True, include_values=k <= 12,
            values_format=".2f", cmap="Blues", im_kw={"vmin": 0.0, "vmax": 1.0})
        if k > 12:
            ax.tick_params(labelsize=max(5, 10 - k // 10))
        display.ax_.set_title(f"{self.name}: confusion matrix (each true class's row sums to 1)")
        return save_figure(fig, out / f"confusion_{self.name}.png")

    def export_metadata(self) -> dict:
        entry = {**super().export_metadata(), "outputs": [self.name, f"{self.name}_classes"]}
        if self.parent is not None:
            entry |= {"parent": self.parent, "parent_of": list(self.parent_of_)}
        return entry

    def serving_outputs(self, output: Any, word_counts: Any | None) -> dict[str, Any]:
        """``<task>_classes``: the class names, ``[batch, K]`` (as TF Serving's classify API gives them)."""
        import tensorflow as tf

        classes = tf.constant([[str(c) for c in self.classes_]], tf.string)
        return {f"{self.name}_classes": tf.tile(classes, tf.stack([tf.shape(output)[0], 1]))}

    @classmethod
    def table_columns(cls, name: str, entry: dict, outputs: dict[str, np.ndarray],
                      threshold: float | None = None) -> dict[str, Any]:
        """The probability of each class and the most likely one."""
        values = outputs[name]
        table: dict[str, Any] = {f"{name}_{c}": values[:, i] for i, c in enumerate(entry["classes"])}
        table[f"{name}_label"] = np.asarray(entry["classes"], dtype=object)[values.argmax(axis=1)]
        return table

    @classmethod
    def show_in_app(cls, st: Any, name: str, entry: dict, result: Any, words: list[str]) -> None:
        import pandas as pd

        st.metric(f"{name}: most likely", str(result[f"{name}_label"]))
        st.dataframe(pd.DataFrame({"class": entry["classes"],
                                   "probability": [result[f"{name}_{c}"] for c in entry["classes"]]}),
                     hide_index=True)

    @classmethod
    def read_app_output(cls, app: Any, name: str, entry: dict) -> dict[str, Any]:
        label = next(m.value for m in app.metric if m.label == f"{name}: most likely")
        classes = [str(c) for c in entry["classes"]]  # this task's table, when several multiclass tasks show one
        table = next(d.value for d in app.dataframe if list(d.value.columns) == ["class", "probability"]
                     and [str(c) for c in d.value["class"]] == classes)
        return {f"{name}_label": label,
                **{f"{name}_{c}": float(p) for c, p in zip(table["class"], table["probability"], strict=True)}}

    def get_config(self) -> dict:
        config = {**super().get_config(), "parent": self.parent, "top_k": self.top_k}
        if self.parent is not None and hasattr(self, "parent_of_"):
            config |= {"parent_of_": list(self.parent_of_), "parent_classes_": list(self.parent_classes_)}
        return config
