"""What every task type provides: its config keys, label encoding, a head, a per-row loss, metrics, evaluation,
a test plot, export outputs and metadata, how served outputs become a table, the app's output and an EDA section.

A task follows scikit-learn's conventions on the data side: ``__init__`` stores parameters,
``fit`` learns from the training labels (state ends in ``_``), ``encode`` turns a label column into
``(y, present)`` arrays. On the model side it builds its head and gives a per-row loss and masked
Keras metrics. ``get_config`` / ``from_config`` carry the fitted state into saved models.

The serving-side hooks (``table_columns``, ``show_in_app``, ``cli_lines``) are classmethods that read only the
task's entry of the export metadata (``export_metadata``), so serving needs the export alone. Generic code
finds a type's class with ``mtl.tasks.TASK_TYPES[entry["type"]]`` and never names a type.
"""

from __future__ import annotations

import difflib
import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any, ClassVar

import keras
import numpy as np
import pandas as pd

from mtl._schema import TaskConfigBase
from mtl.data._labels import data_row, label_text, missing_mask
from mtl.errors import MtlError
from mtl.layers import dense_stack

log = logging.getLogger("mtl")

MetricFactory = Callable[["Task"], keras.metrics.Metric]
# a metric group (``mtl.tasks._metrics``): called with the task and ``{logged name: measure}`` of the chosen members
GroupFactory = Callable[["Task", dict[str, str]], keras.metrics.Metric]


class Task:
    """Base class: subclasses set ``type``, ``config_class``, ``losses``, ``metric_factories`` and the hooks below."""

    type: ClassVar[str]
    config_class: ClassVar[type[TaskConfigBase]]  # the pydantic model of ``tasks.<name>`` for this type
    level: ClassVar[str] = "row"  # "row": one output per row; "word": one per word of the text (tagging)
    classifier: ClassVar[bool] = False  # labels are classes: the split may stratify on it, SMOTE may resample it
    default_loss: ClassVar[str]
    losses: ClassVar[tuple[str, ...]]
    default_metrics: ClassVar[tuple[str, ...]]
    metric_factories: ClassVar[dict[str, MetricFactory]] = {}
    # metrics one Keras metric reports together (``(names, factory)``: one accumulation per step for all of them)
    metric_groups: ClassVar[tuple[tuple[tuple[str, ...], GroupFactory], ...]] = ()
    evaluation_only_metrics: ClassVar[tuple[str, ...]] = ()  # computed by ``evaluate`` only, never logged
    lower_is_better_metrics: ClassVar[tuple[str, ...]] = ()
    supports_product: ClassVar[bool] = False  # may be either end of a ``product`` (funnel) link

    def __init__(
        self,
        name: str,
        column: str,
        loss: dict | None = None,
        metrics: list[str] | None = None,
        trainable: bool = True,
        inputs: list[dict | str] | None = None,
        reads_trunk: bool = True,
    ) -> None:
        self.name = name
        self.column = column
        self.loss = dict(loss) if loss else {"name": self.default_loss}
        self.metrics = list(metrics) if metrics is not None else list(self.default_metrics)
        self.trainable = trainable
        self.inputs = [_link_entry(link) for link in inputs or []]
        self.reads_trunk = reads_trunk
        self._check_choice("loss", "loss", self.loss["name"], self.losses)
        for metric in self.metrics:
            self._check_choice("metrics", "metric", metric, self.metric_names())

    # ------------------------------------------------------------------ data side
    def fit(self, labels: pd.Series) -> Task:
        """Learn what the labels look like from the training split's labelled rows."""
        raise NotImplementedError

    def fit_partial(self, labels: pd.Series) -> None:
        """Streaming fit (``data.streaming``): learn from one batch of the training split's labelled rows;
        ``finish_fit`` ends. The default keeps the batches and calls ``fit`` on all of them at the end; a type whose
        state is bounded (classes, statistics) overrides both to keep memory flat."""
        self._streamed_labels = [*getattr(self, "_streamed_labels", []), labels]

    def finish_fit(self) -> Task:
        """End a streaming fit: the same fitted state ``fit`` gives on all the batches together."""
        batches = self.__dict__.pop("_streamed_labels", [])
        return self.fit(pd.concat(batches) if batches else pd.Series([], dtype=object))

    def encode(self, labels: pd.Series) -> tuple[np.ndarray, np.ndarray]:
        """``(y, present)``: targets (0 where absent, never NaN) and a boolean label mask."""
        raise NotImplementedError

    def class_weights(self, y: np.ndarray) -> np.ndarray:
        """Per-row loss weights of labelled rows ``y``: all 1 unless the task sets ``class_weight``."""
        return np.ones(len(y), dtype="float32")

    # ------------------------------------------------------------------ model side
    @property
    def links(self) -> list[dict]:
        """Every task this head reads (``tasks.<name>.inputs`` plus the ones the type implies, e.g. a label tree's
        parent), as ``{"task", "stop_gradient", "product"}``."""
        return list(self.inputs)

    def build_head(self, x: Any, tower: Any, funnel: list | None = None,
                   initializer: str = "glorot_uniform") -> Any:
        """The task's tower (``tower.units`` Dense layers) then its output layer, named after the task; with
        ``funnel`` (the outputs of its ``product`` links) the output is ``funnel_output``. ``initializer``: the
        output layer's kernel initializer (``"zeros"`` for a head that reads links, see ``mtl.model.build_model``)."""
        x = dense_stack(x, tower.units, tower.activation, tower.dropout, tower.norm, f"{self.name}_tower",
                        trainable=self.trainable)
        return self.funnel_output(x, funnel, initializer) if funnel else self.output_layer(x, initializer)

    def output_layer(self, x: Any, initializer: str = "glorot_uniform") -> Any:
        """The output layer on ``x``, named after the task, its kernel initialised by ``initializer``."""
        raise NotImplementedError

    def funnel_output(self, x: Any, upstream: list, initializer: str = "glorot_uniform") -> Any:
        """The output of a ``product`` link (a type with ``supports_product`` overrides it): the head learns the
        conditional ``p(self | upstream)`` and outputs its product with the upstream outputs."""
        raise MtlError(f"a {self.type} task cannot be the end of a product link", where=f"tasks.{self.name}.inputs")

    def link_features(self, output: Any) -> Any:
        """What a head that links to this task reads of its output, ``[batch, k]``: by default the output itself
        (a probability, a class distribution); a type whose output is not on a unit scale or not per row overrides
        it."""
        return output

    def join_links(self, x: Any, features: list) -> Any:
        """This head's input ``x`` (the trunk's representation for it) with the link features of the tasks it reads
        beside it; ``x`` None (``reads_trunk: false``): the link features alone."""
        parts = features if x is None else [x, *features]
        return parts[0] if len(parts) == 1 else keras.layers.Concatenate(name=f"{self.name}_with_links")(parts)

    def per_example_loss(self, y_true: Any, y_pred: Any) -> Any:
        """The loss of each row, shape ``(batch,)``; the model masks and averages it."""
        raise NotImplementedError

    @classmethod
    def metric_names(cls) -> tuple[str, ...]:
        """Every metric the task can report: those training can log, then the evaluation-only ones."""
        return (*cls.loggable_metrics(), *cls.evaluation_only_metrics)

    @classmethod
    def loggable_metrics(cls) -> tuple[str, ...]:
        """The metrics training can log each epoch: ``metric_factories`` and the members of ``metric_groups``."""
        return (*cls.metric_factories, *(name for names, _ in cls.metric_groups for name in names))

    def logged_metrics(self) -> list[str]:
        """The chosen metrics that training logs each epoch (the others are computed only at evaluation)."""
        loggable = self.loggable_metrics()
        return [m for m in self.metrics if m in loggable]

    def make_metrics(self) -> list[keras.metrics.Metric]:
        """The Keras metrics of the logged metrics: one per ``metric_factories`` entry chosen, one per group with a
        member chosen (reporting ``<task>_<name>`` for each chosen member)."""
        chosen = self.logged_metrics()
        metrics = [self.metric_factories[m](self) for m in chosen if m in self.metric_factories]
        for names, factory in self.metric_groups:
            reports = {f"{self.name}_{m}": m for m in chosen if m in names}
            if reports:
                metrics.append(factory(self, reports))
        return metrics

    def update_metrics(self, metrics: list, y_true: Any, y_pred: Any, weight: Any) -> None:
        """Update masked metrics: rows with ``weight == 0`` count for nothing."""
        mask = keras.ops.cast(weight > 0, "float32")
        for metric in metrics:
            metric.update_state(*self.metric_inputs(metric, y_true, y_pred), sample_weight=mask)

    def metric_inputs(self, metric: keras.metrics.Metric, y_true: Any, y_pred: Any) -> tuple:
        return keras.ops.reshape(keras.ops.cast(y_true, "float32"), (-1, 1)), y_pred

    # ------------------------------------------------------------------ evaluation
    def evaluate(self, y_true: np.ndarray, y_pred: np.ndarray) -> dict[str, float]:
        """Metrics on labelled rows with scikit-learn (numpy in, floats out)."""
        raise NotImplementedError

    def choose_on_validation(self, y_true: np.ndarray, y_pred: np.ndarray) -> dict:
        """Choose what the type decides after training on the validation split's labelled rows (a binary task's
        threshold); returns what was chosen, recorded in ``metrics.json`` (empty: nothing to choose)."""
        return {}

    @classmethod
    def lower_is_better(cls, metric: str) -> bool:
        """Whether a smaller value of ``metric`` is better (errors, losses), for comparisons across runs."""
        return metric in cls.lower_is_better_metrics

    def plot(self, y_true: np.ndarray, y_pred: np.ndarray, out: Path) -> Path | None:
        """A PNG of the test split's labelled rows in ``out`` (ROC, predicted vs true, ...), or None."""
        return None

    # ------------------------------------------------------------------ data checks
    def check_rows(self, frame: pd.DataFrame, text_column: str | None) -> None:
        """Raise ``MtlError`` on the first row the task cannot use (e.g. tags that do not match the words)."""

    # ------------------------------------------------------------------ export and serving
    def export_metadata(self) -> dict:
        """The task's entry in the export metadata: ``type``, its output names and what decoding needs."""
        return {"type": self.type, "outputs": [self.name]}

    def serving_outputs(self, output: Any, word_counts: Any | None) -> dict[str, Any]:
        """Extra outputs of the exported signature beside ``<task>`` (tensors), e.g. class names or word tags;
        ``word_counts`` is the number of white-space words of each row's text (``None`` without text)."""
        return {}

    @classmethod
    def table_columns(cls, name: str, entry: dict, outputs: dict[str, np.ndarray],
                      threshold: float | None = None) -> dict[str, Any]:
        """Columns of ``mtl predict``'s table for this task, from the signature's outputs."""
        return {name: outputs[name][:, 0]}

    @classmethod
    def cli_lines(cls, name: str, entry: dict, column: list, texts: list[str]) -> list[str] | None:
        """What ``mtl predict --task NAME`` prints instead of a CSV (None: the CSV)."""
        return None

    @classmethod
    def show_in_app(cls, st: Any, name: str, entry: dict, result: Any, words: list[str]) -> None:
        """Show one predicted row (``result``: the table's row; ``words``: its text's words) in the Streamlit app."""
        st.metric(name, f"{result[name]:.6f}")

    @classmethod
    def read_app_output(cls, app: Any, name: str, entry: dict) -> dict[str, Any]:
        """What ``show_in_app`` showed, read back from a ``streamlit.testing.v1.AppTest`` as table columns
        (``{column: value}``, the columns of ``table_columns``); the harness in ``mtl.testing`` compares them."""
        return {name: float(next(m.value for m in app.metric if m.label == name))}

    # ------------------------------------------------------------------ EDA (from the config and raw labels)
    @classmethod
    def eda_section(cls, name: str, config: Any, labelled: pd.Series, plot: Path) -> list[str]:
        """Markdown lines about the task's labelled values (label balance or statistics), drawing ``plot``."""
        return []

    @classmethod
    def eda_target(cls, config: Any, values: pd.Series) -> pd.Series:
        """Labels as floats (NaN where missing or not meaningful per row) for the correlation table."""
        return pd.Series(np.nan, index=values.index)

    # ------------------------------------------------------------------ serialisation
    def get_config(self) -> dict:
        return {
            "name": self.name,
            "type": self.type,
            "column": self.column,
            "loss": self.loss,
            "metrics": self.metrics,
            "trainable": self.trainable,
            "inputs": [dict(link) for link in self.inputs],
            "reads_trunk": self.reads_trunk,
        }

    @classmethod
    def from_config(cls, config: dict) -> Task:
        config = dict(config)
        config.pop("type", None)
        fitted = {k: config.pop(k) for k in list(config) if k.endswith("_")}
        task = cls(**config)
        for key, value in fitted.items():
            setattr(task, key, value)
        return task

    # ------------------------------------------------------------------ helpers
    def _check_choice(self, key: str, noun: str, value: str, valid: tuple[str, ...]) -> None:
        if value not in valid:
            hint = difflib.get_close_matches(value, valid, n=1)
            tail = f" (did you mean {hint[0]!r}?)" if hint else ""
            raise MtlError(
                f"unknown {noun} {value!r} for a {self.type} task{tail}; "
                f"valid: {', '.join(valid)}",
                where=f"tasks.{self.name}.{key}",
            )

    def _error(self, message: str) -> MtlError:
        return MtlError(message, where=f"tasks.{self.name} (column {self.column!r})")

    def __repr__(self) -> str:
        return f"{type(self).__name__}(name={self.name!r}, column={self.column!r})"


def _link_entry(link: Any) -> dict:
    """A link of ``inputs`` (a task name, a mapping or a ``TaskLink``) as ``{"task", "stop_gradient", "product"}``."""
    if isinstance(link, str):
        link = {"task": link}
    elif not isinstance(link, dict):
        link = link.model_dump()
    return {"task": link["task"], "stop_gradient": bool(link.get("stop_gradient", False)),
            "product": bool(link.get("product", False))}


class ClassificationTask(Task):
    """Shared label handling of binary and multiclass tasks: a fixed list of class names."""

    classifier: ClassVar[bool] = True
    classes_: list[str]

    def __init__(self, *args: Any, class_weight: str | dict | None = None, unseen_labels: str = "error",
                 **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.class_weight = class_weight
        self.unseen_labels = unseen_labels

    def fit_partial(self, labels: pd.Series) -> None:
        """Keep one label of each class text seen: classes depend on the set of labels only."""
        if not hasattr(self, "_distinct"):
            self._distinct: dict[str, Any] = {}
        present = labels[~missing_mask(labels)]
        for text, value in zip(present.map(label_text), present, strict=True):
            self._distinct.setdefault(text, value)

    def finish_fit(self) -> ClassificationTask:
        return self.fit(pd.Series(list(self.__dict__.pop("_distinct", {}).values()), dtype=object))

    def _encode_classes(self, labels: pd.Series) -> tuple[np.ndarray, np.ndarray]:
        present = ~missing_mask(labels)
        texts = labels[present].map(label_text)
        codes = self._codes(texts)
        unknown = codes.isna().to_numpy()
        if unknown.any() and self.unseen_labels == "error":
            first = int(np.flatnonzero(unknown)[0])
            raise self._error(
                f"{data_row(texts.index[first])}: label {texts.iloc[first]!r} is not one of "
                f"the training classes {self.classes_} (set tasks.{self.name}.unseen_labels: ignore to leave "
                "such labels out)"
            )
        if unknown.any():
            log.info("%s: %d label(s) not seen in training are left unlabelled (unseen_labels: ignore)",
                     self.name, int(unknown.sum()))
            present[np.flatnonzero(present)[unknown]] = False
        y = np.zeros(len(labels), dtype="int32")
        y[present] = codes.to_numpy()[~unknown].astype("int32")
        return y, present

    def _codes(self, texts: pd.Series) -> pd.Series:
        return texts.map({c: i for i, c in enumerate(self.classes_)})

    def class_weights(self, y: np.ndarray) -> np.ndarray:
        """``balanced`` (scikit-learn's n / (k * count)) or ``{label: weight}`` per row."""
        spec = self.class_weight
        y = np.asarray(y).astype(int)
        if spec is None or len(y) == 0:
            return np.ones(len(y), dtype="float32")
        if spec == "balanced":
            from sklearn.utils.class_weight import compute_class_weight

            seen = np.unique(y)
            table = dict(zip(seen, compute_class_weight("balanced", classes=seen, y=y), strict=True))
        else:
            table = {}
            for key, value in spec.items():
                text = label_text(key)
                if text not in self.classes_:
                    raise MtlError(
                        f"{key!r} is not a class of this task; classes: {self.classes_}",
                        where=f"tasks.{self.name}.class_weight",
                    )
                table[self.classes_.index(text)] = value
        return np.array([table.get(c, 1.0) for c in y], dtype="float32")

    def get_config(self) -> dict:
        return {**super().get_config(), "class_weight": self.class_weight, "unseen_labels": self.unseen_labels,
                "classes_": list(self.classes_)}

    def export_metadata(self) -> dict:
        return {**super().export_metadata(), "classes": [str(c) for c in self.classes_]}

    @classmethod
    def eda_section(cls, name: str, config: Any, labelled: pd.Series, plot: Path) -> list[str]:
        from mtl.reporting import bar_plot, counts_table

        counts = labelled.map(label_text).value_counts()
        bar_plot(counts[:30], f"{name}: class balance", plot)
        return [f"- classes: {len(counts)}", "", *counts_table(counts, "class")]

    @classmethod
    def eda_target(cls, config: Any, values: pd.Series) -> pd.Series:
        """Class codes in sorted order (so correlations are only indicative for more than two classes)."""
        missing = missing_mask(values)
        out = pd.Series(np.nan, index=values.index)
        text = values[~missing].map(label_text)
        out[~missing] = pd.Categorical(text, categories=sorted(text.unique())).codes.astype(float)
        return out
