"""Token tagging (BIO / IOB2 named entities, slots): one tag per white-space word of the text.

The head reads each word's first word piece (``TextEncoder`` gives one vector per word), so word pieces
after the first carry no label and predictions map back to words one to one. Labels are ``[rows, words]``
tag indices, -1 where a row has fewer words (or a tag was not seen in training and ``unseen_labels`` is
``ignore``). A row's loss is the mean over its words; entity-level precision, recall and F1 come from
seqeval (CoNLL evaluation), token accuracy from Keras while training and scikit-learn-style counting after.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, Literal

import keras
import numpy as np
import pandas as pd

from mtl._schema import TaskConfigBase, UnseenLabels
from mtl.data._labels import data_row
from mtl.data._text import check_tag_counts, tag_list
from mtl.errors import MtlError
from mtl.layers import dense_stack
from mtl.tasks._base import Task

log = logging.getLogger("mtl")

OUTSIDE = "O"


@keras.saving.register_keras_serializable("mtl")
class MaskWords(keras.layers.Layer):
    """Zero the tag probabilities of padding and of words no window reached: such a row sums to 0, not 1,
    which is how the loss, the metrics and decoding recognise it."""

    def call(self, inputs: list) -> Any:
        probs, mask = inputs
        return probs * keras.ops.cast(mask, probs.dtype)[..., None]

    def compute_output_shape(self, input_shapes: list) -> tuple:
        return input_shapes[0]


@keras.saving.register_keras_serializable("mtl")
class MeanOverWords(keras.layers.Layer):
    """A row's mean tag distribution over the words the model saw (what a linked head reads of a tagging task):
    padding and unseen words (all-zero rows of ``MaskWords``) do not count."""

    def call(self, probs: Any) -> Any:
        seen = keras.ops.cast(keras.ops.sum(probs, axis=-1, keepdims=True) > 0.5, probs.dtype)
        return keras.ops.sum(probs * seen, axis=1) / keras.ops.maximum(keras.ops.sum(seen, axis=1), 1.0)

    def compute_output_shape(self, input_shape: tuple) -> tuple:
        return (input_shape[0], input_shape[2])


@keras.saving.register_keras_serializable("mtl")
class WithRowFeatures(keras.layers.Layer):
    """Per-word states ``[batch, words, d]`` with row features ``[batch, k]`` repeated beside every word."""

    def call(self, inputs: list) -> Any:
        states, *rows = inputs
        words = keras.ops.shape(states)[1]
        repeated = [keras.ops.repeat(keras.ops.expand_dims(keras.ops.cast(r, states.dtype), 1), words, axis=1)
                    for r in rows]
        return keras.ops.concatenate([states, *repeated], axis=-1)

    def compute_output_shape(self, input_shapes: list) -> tuple:
        states, *rows = input_shapes
        return (*states[:2], states[2] + sum(r[-1] for r in rows))


class TaggingTaskConfig(TaskConfigBase):
    """``tasks.<name>`` of ``type: tagging``: one BIO tag per white-space word of ``data.features.text`` (a list, or
    tags separated by spaces)."""

    type: Literal["tagging"]
    unseen_labels: UnseenLabels = "error"


class TaggingTask(Task):
    """``classes_``: the tags seen in training, ``O`` first. Predicts ``[batch, words, tags]``."""

    type = "tagging"
    config_class = TaggingTaskConfig
    level = "word"
    default_loss = "sparse_categorical_crossentropy"
    losses = ("sparse_categorical_crossentropy",)
    default_metrics = ("f1", "precision", "recall", "accuracy")
    metric_factories = {
        "accuracy": lambda t: keras.metrics.SparseCategoricalAccuracy(name=f"{t.name}_accuracy"),
    }

    def __init__(self, *args: Any, unseen_labels: str = "error", **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.unseen_labels = unseen_labels

    @classmethod
    def metric_names(cls) -> tuple[str, ...]:
        return cls.default_metrics

    # ------------------------------------------------------------------ data side
    def fit(self, labels: pd.Series) -> TaggingTask:
        seen = {tag for value in labels for tag in (tag_list(value) or [])}
        if len(seen) < 2:
            raise self._error(f"the training split holds {len(seen)} tag(s) {sorted(seen)}; need at least two")
        self.classes_ = sorted(seen, key=lambda t: (t != OUTSIDE, t[2:] if t[1:2] == "-" else t, t))
        return self

    def encode(self, labels: pd.Series) -> tuple[np.ndarray, np.ndarray]:
        rows = [tag_list(v) for v in labels]
        present = np.array([r is not None for r in rows], dtype=bool)
        width = max((len(r) for r in rows if r is not None), default=1)
        y = np.full((len(rows), max(width, 1)), -1, dtype="int32")
        index = {t: i for i, t in enumerate(self.classes_)}
        ignored = 0
        for i, (label_index, tags) in enumerate(zip(labels.index, rows, strict=True)):
            for j, tag in enumerate(tags or []):
                code = index.get(tag)
                if code is None:
                    if self.unseen_labels == "error":
                        raise self._error(f"{data_row(label_index)}, word {j + 1}: tag {tag!r} is not one of the "
                                          f"training tags {self.classes_}")
                    ignored += 1
                    continue
                y[i, j] = code
        if ignored:
            log.info("%s: %d tag(s) not seen in training are left unlabelled (unseen_labels: ignore)",
                     self.name, ignored)
        return y, present

    def check_rows(self, frame: pd.DataFrame, text_column: str | None) -> None:
        """Every labelled row has one tag per word of its text."""
        if text_column is None:
            raise MtlError("a tagging task needs data.features.text (the words it tags)", where=f"tasks.{self.name}")
        check_tag_counts(frame[text_column], frame[self.column], self.name, self.column)

    # ------------------------------------------------------------------ model side
    def link_features(self, output: Any) -> Any:
        """The mean tag distribution over the row's words (``[batch, tags]``)."""
        return MeanOverWords(name=f"{self.name}_mean_tags", dtype="float32")(output)

    def join_links(self, x: Any, features: list) -> Any:
        """The linked tasks' features beside every word's state."""
        states, mask = x
        return WithRowFeatures(name=f"{self.name}_with_links")([states, *features]), mask

    def build_head(self, x: Any, tower: Any, funnel: list | None = None,
                   initializer: str = "glorot_uniform") -> Any:
        """``x`` is ``(word states, word mask)`` from the text encoder."""
        if funnel:
            self.funnel_output(x, funnel)  # raises: a tagging task has no funnel
        states, mask = x
        states = dense_stack(states, tower.units, tower.activation, tower.dropout,
                             "layer" if tower.norm == "batch" else tower.norm, f"{self.name}_tower",
                             trainable=self.trainable)
        probs = keras.layers.Dense(len(self.classes_), activation="softmax", name=f"{self.name}_dense",
                                   dtype="float32", kernel_initializer=initializer, trainable=self.trainable)(states)
        return MaskWords(name=self.name, dtype="float32")([probs, mask])

    def _aligned(self, y_true: Any, y_pred: Any) -> tuple[Any, Any]:
        """Labels cut to the batch's word count, and where a word is labelled and seen by the model."""
        words = keras.ops.shape(y_pred)[1]
        y = keras.ops.cast(y_true[:, :words], "int32")
        valid = (y >= 0) & (keras.ops.sum(y_pred, axis=-1) > 0.5)
        return keras.ops.maximum(y, 0), valid

    def per_example_loss(self, y_true: Any, y_pred: Any) -> Any:
        y, valid = self._aligned(y_true, y_pred)
        losses = keras.losses.sparse_categorical_crossentropy(y, y_pred)
        valid = keras.ops.cast(valid, losses.dtype)
        return keras.ops.sum(losses * valid, axis=1) / keras.ops.maximum(keras.ops.sum(valid, axis=1), 1.0)

    def update_metrics(self, metrics: list, y_true: Any, y_pred: Any, weight: Any) -> None:
        y, valid = self._aligned(y_true, y_pred)
        valid = keras.ops.cast(valid & (keras.ops.reshape(weight, (-1, 1)) > 0), "float32")
        classes = len(self.classes_)
        for metric in metrics:
            metric.update_state(keras.ops.reshape(y, (-1,)), keras.ops.reshape(y_pred, (-1, classes)),
                                sample_weight=keras.ops.reshape(valid, (-1,)))

    # ------------------------------------------------------------------ evaluation
    def decode(self, probs: np.ndarray, word_counts: list[int] | np.ndarray) -> list[list[str]]:
        """Word tags per row; a word the model did not reach (all-zero probabilities) is ``O``."""
        probs = np.asarray(probs)
        best = probs.argmax(-1)
        seen = probs.sum(-1) > 0.5
        outside = self.classes_[0] if self.classes_[0] == OUTSIDE else ""
        return [[self.classes_[best[i, j]] if j < probs.shape[1] and seen[i, j] else outside
                 for j in range(int(n))] for i, n in enumerate(word_counts)]

    def evaluate(self, y_true: np.ndarray, y_pred: np.ndarray) -> dict[str, float]:
        from seqeval import metrics as seqeval

        y_true = np.asarray(y_true)
        counts = (y_true >= 0).sum(1) if y_true.size else np.zeros(0, int)
        widths = [int(np.flatnonzero(row >= 0).max()) + 1 if (row >= 0).any() else 0 for row in y_true]
        predicted = self.decode(y_pred, widths)
        truth, guess = [], []
        for row, tags in zip(y_true, predicted, strict=True):
            keep = [j for j in range(len(tags)) if row[j] >= 0]
            truth.append([self.classes_[row[j]] for j in keep])
            guess.append([tags[j] for j in keep])
        total = int(counts.sum())
        table = {
            "f1": lambda: seqeval.f1_score(truth, guess, zero_division=0),
            "precision": lambda: seqeval.precision_score(truth, guess, zero_division=0),
            "recall": lambda: seqeval.recall_score(truth, guess, zero_division=0),
            "accuracy": lambda: sum(t == g for a, b in zip(truth, guess, strict=True)
                                    for t, g in zip(a, b, strict=True)) / max(total, 1),
        }
        return {m: float(table[m]()) for m in self.metrics}

    # ------------------------------------------------------------------ export and serving
    def export_metadata(self) -> dict:
        return {**super().export_metadata(), "outputs": [self.name, f"{self.name}_tags"],
                "classes": [str(c) for c in self.classes_]}

    def serving_outputs(self, output: Any, word_counts: Any | None) -> dict[str, Any]:
        """``<task>_tags`` [batch, words]: each word's most likely tag, ``O`` for a word no window reached, ``""``
        past the end of a text."""
        import tensorflow as tf

        classes = [str(c) for c in self.classes_]
        tags = tf.gather(tf.constant(classes), tf.argmax(output, axis=-1))
        outside = classes[0] if classes[0] == OUTSIDE else ""
        tags = tf.where(tf.reduce_sum(output, axis=-1) > 0.5, tags, outside)
        return {f"{self.name}_tags": tf.where(tf.sequence_mask(word_counts, tf.shape(output)[1]), tags, "")}

    @classmethod
    def table_columns(cls, name: str, entry: dict, outputs: dict[str, np.ndarray],
                      threshold: float | None = None) -> dict[str, Any]:
        """Each row's word tags as a list."""
        return {name: [[t.decode() if isinstance(t, bytes) else str(t) for t in row if t]
                       for row in outputs[f"{name}_tags"]]}

    @classmethod
    def cli_lines(cls, name: str, entry: dict, column: list, texts: list[str]) -> list[str] | None:
        """``Task: / Input: / <TASK> Output: [...]`` per text."""
        return [f"Task: {name}\nInput: {text}\n{name.upper()} Output: {tags}\n"
                for text, tags in zip(texts, column, strict=True)]

    @classmethod
    def show_in_app(cls, st: Any, name: str, entry: dict, result: Any, words: list[str]) -> None:
        words = words[:len(result[name])]
        st.write(f"{name}:")
        st.dataframe(pd.DataFrame({"word": words, "tag": result[name][:len(words)]}), hide_index=True)

    @classmethod
    def read_app_output(cls, app: Any, name: str, entry: dict) -> dict[str, Any]:
        """The tags shown, one per word of the text (the app shows as many as the text has words)."""
        table = next(d.value for d in app.dataframe if list(d.value.columns) == ["word", "tag"])
        return {name: [str(t) for t in table["tag"]]}

    # ------------------------------------------------------------------ EDA
    @classmethod
    def eda_section(cls, name: str, config: Any, labelled: pd.Series, plot: Path) -> list[str]:
        from mtl.reporting import bar_plot, counts_table

        counts = labelled.map(tag_list).dropna().explode().value_counts()
        bar_plot(counts[:30], f"{name}: tags", plot)
        return [f"- tags: {len(counts)} over {int(counts.sum()):,} words", "", *counts_table(counts, "tag")]

    def get_config(self) -> dict:
        return {**super().get_config(), "unseen_labels": self.unseen_labels, "classes_": list(self.classes_)}
