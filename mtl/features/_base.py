"""What every feature kind provides. A kind is one module: its config key, the parser of raw values (the one rule
of ``mtl.features._values``), what it learns from the training split, its part of the graph, its export metadata,
its app widget and its EDA section. Generic code (data stage, model builder, export, serving, app, EDA) only
calls these hooks.

A feature follows the conventions of ``mtl.tasks.Task``: ``__init__`` stores parameters, ``fit`` learns from the
training split (state ends in ``_``), ``get_config`` / ``from_config`` carry the fitted state into saved models
and into the export metadata, so serving rebuilds the same feature (and the same parser) from the export alone.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

__all__ = ["Feature", "Encoded"]


@dataclass
class Encoded:
    """A kind's part of the graph: row-level tensors for the trunk, and per-word states for word-level tasks."""

    row: list[Any]
    words: tuple[Any, Any] | None = None


class Feature:
    """One input column of one kind. Subclasses set the class attributes and override the hooks."""

    kind: ClassVar[str]  # the key under data.features
    dtype: ClassVar[str]  # the signature's dtype: "float32" or "string"
    many: ClassVar[bool] = True  # data.features.<kind> is a list of columns (False: one column)
    provides_words: ClassVar[bool] = False  # gives per-word states (what word-level tasks read)
    description: ClassVar[str] = ""

    def __init__(self, column: str, input_name: str | None = None) -> None:
        self.column = column
        self.input_name = input_name or column

    @classmethod
    def from_data_config(cls, column: str, input_name: str, data_config: Any) -> Feature:
        """The unfitted feature of ``column`` as ``data`` configures it."""
        return cls(column, input_name)

    @classmethod
    def check_config(cls, config: Any, used: bool) -> None:
        """Check (or complete) the rest of the config for this kind; ``used``: the config lists a column of it.
        Raise ``ValueError`` with a message naming the key."""

    @classmethod
    def from_signature(cls, name: str, dtype: str, shape: tuple) -> Feature | None:
        """The feature for a signature input of a SavedModel exported elsewhere (no mtl metadata), if this kind
        reads such an input (``dtype`` "float32"/"string"; ``shape`` per row); else None."""
        return None

    # ------------------------------------------------------------------ raw values
    def parse(self, values: Sequence | np.ndarray, where: str | None = None, first_row: int = 1) -> np.ndarray:
        """Raw cells from any source -> the array the model takes; one bad cell is an ``MtlError`` naming the
        column and row."""
        raise NotImplementedError

    def fit(self, values: np.ndarray) -> Feature:
        """Learn from the parsed training values (statistics, vocabulary, width)."""
        return self

    def fit_partial(self, values: np.ndarray) -> None:
        """Streaming fit (``data.streaming``): learn from one batch of parsed training values; ``finish_fit`` ends.
        The default keeps the batches and calls ``fit`` on all of them at the end, so a kind whose state is bounded
        (statistics, counts) overrides both to keep memory flat."""
        self._streamed_batches = [*getattr(self, "_streamed_batches", []), values]

    def finish_fit(self) -> Feature:
        """End a streaming fit: the same fitted state ``fit`` gives on all the batches together."""
        batches = self.__dict__.pop("_streamed_batches", [])
        return self.fit(np.concatenate(batches) if batches else np.empty(0))

    def unseen_count(self, values: np.ndarray) -> int:
        """How many parsed values the model has not seen in training (out of vocabulary)."""
        return 0

    # ------------------------------------------------------------------ graph
    def input_shape(self) -> tuple[int, ...]:
        """One row's shape (``()`` for a scalar per row)."""
        return ()

    @classmethod
    def build_group(cls, features: list[Feature], inputs: dict[str, Any], model_config: Any) -> Encoded:
        """The graph part of all of this kind's features; ``inputs`` maps each column to its ``keras.Input``."""
        raise NotImplementedError

    # ------------------------------------------------------------------ app and EDA
    def app_input(self, container: Any) -> Any:
        """A Streamlit widget in ``container`` whose value is a raw cell for this feature."""
        raise NotImplementedError

    def fill_app_input(self, app: Any, value: Any) -> Any:
        """Set this feature's widget in a ``streamlit.testing.v1.AppTest`` to the raw cell ``value`` and return the
        cell the app will predict on (the harness in ``mtl.testing`` drives the app with it)."""
        raise NotImplementedError

    @classmethod
    def eda_section(cls, frame: Any, columns: list[str], plots: Path, config: Any) -> list[str]:
        """Markdown lines of the EDA report about these columns (``frame`` as read, cells raw)."""
        return []

    # ------------------------------------------------------------------ serialisation
    def get_config(self) -> dict:
        fitted = {k: v for k, v in vars(self).items() if k.endswith("_")}
        return {"kind": self.kind, "column": self.column, "input_name": self.input_name, **self.params(), **fitted}

    def params(self) -> dict:
        """Constructor arguments beyond ``column`` and ``input_name``."""
        return {}

    @classmethod
    def from_config(cls, config: dict) -> Feature:
        config = {k: v for k, v in config.items() if k != "kind"}
        fitted = {k: config.pop(k) for k in list(config) if k.endswith("_")}
        feature = cls(**config)
        for key, value in fitted.items():
            setattr(feature, key, value)
        return feature

    def __repr__(self) -> str:
        return f"{type(self).__name__}(column={self.column!r})"
