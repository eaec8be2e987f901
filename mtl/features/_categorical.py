"""``data.features.categorical``: columns of categories, read as the text written (``mtl.features._values``).
In the graph: a ``StringLookup`` over the training vocabulary with one out-of-vocabulary bucket, then an
``Embedding``. Values not seen in training are counted at prediction time (``unseen_count``)."""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from mtl.features._base import Encoded, Feature
from mtl.features._values import category_text, cells

__all__ = ["CategoricalFeature", "embedding_size"]


def embedding_size(cardinality: int, setting: int | str = "auto") -> int:
    """``auto``: fast.ai's rule of thumb ``1.6 * n ** 0.56``, capped at 16."""
    if setting != "auto":
        return int(setting)
    return max(2, min(16, math.ceil(1.6 * cardinality**0.56)))


class CategoricalFeature(Feature):
    """A string column; ``vocabulary_`` is the training split's distinct values (sorted), ``most_frequent_`` the
    commonest (the app's default)."""

    kind: ClassVar[str] = "categorical"
    dtype: ClassVar[str] = "string"
    description: ClassVar[str] = ("categorical input columns, read as the text written (see \"Raw values\"). The "
                                  "vocabulary comes from the training split, with one out-of-vocabulary bucket, "
                                  "then an embedding")

    def __init__(self, column: str, input_name: str | None = None, max_tokens: int | None = None) -> None:
        super().__init__(column, input_name)
        self.max_tokens = max_tokens

    @classmethod
    def from_data_config(cls, column: str, input_name: str, data_config: Any) -> CategoricalFeature:
        return cls(column, input_name, max_tokens=data_config.max_tokens)

    def params(self) -> dict:
        return {"max_tokens": self.max_tokens}

    @classmethod
    def check_config(cls, config: Any, used: bool) -> None:
        if used and config.training.jit_compile:
            raise ValueError("training.jit_compile: XLA cannot compile the in-graph string lookups of categorical "
                             "features; set it to false")

    def parse(self, values: Sequence | np.ndarray, where: str | None = None, first_row: int = 1) -> np.ndarray:
        return np.asarray(cells(values, self.column, where, category_text, first_row), dtype=object).reshape(-1)

    def fit(self, values: np.ndarray) -> CategoricalFeature:
        return self._fit_counts(Counter(values.tolist()))

    def fit_partial(self, values: np.ndarray) -> None:
        """Count one batch's values: memory grows with the distinct values, not with the rows."""
        if not hasattr(self, "_counts"):
            self._counts: Counter = Counter()
        self._counts.update(values.tolist())

    def finish_fit(self) -> CategoricalFeature:
        return self._fit_counts(self.__dict__.pop("_counts", Counter()))

    def _fit_counts(self, counts: Counter) -> CategoricalFeature:
        """The vocabulary: every value seen, or with ``max_tokens`` the most frequent ones (ties: the smaller
        value first); values left out share the out-of-vocabulary bucket."""
        kept = sorted(counts) if self.max_tokens is None else sorted(
            sorted(counts, key=lambda v: (-counts[v], v))[:self.max_tokens])
        self.vocabulary_ = kept
        self.most_frequent_ = max(kept, key=counts.__getitem__) if kept else ""
        return self

    def unseen_count(self, values: np.ndarray) -> int:
        known = set(self.vocabulary_)
        return len(values) - sum(map(known.__contains__, values.tolist()))

    @classmethod
    def build_group(cls, features: list[Feature], inputs: dict[str, Any], model_config: Any) -> Encoded:
        import keras

        parts = []
        for f in features:
            ids = keras.layers.StringLookup(vocabulary=f.vocabulary_ or [""], num_oov_indices=1,
                                            name=f"{f.input_name}_lookup")(inputs[f.column])
            size = len(f.vocabulary_ or [""]) + 1
            parts.append(keras.layers.Embedding(size, embedding_size(size, model_config.embedding_dim),
                                                name=f"{f.input_name}_embedding")(ids))
        return Encoded(parts)

    def app_input(self, container: Any) -> Any:
        missing = "(missing)"
        options = [*self.vocabulary_, missing] if "" not in self.vocabulary_ else list(self.vocabulary_)
        shown = [v if v != "" else missing for v in options]
        default = shown.index(self.most_frequent_ if self.most_frequent_ != "" else missing)
        choice = container.selectbox(self.column, shown, index=default, key=f"in_{self.column}")
        return None if choice == missing else choice

    def fill_app_input(self, app: Any, value: Any) -> Any:
        """The value's category if the box offers it, else the box's last choice (what the app then predicts on)."""
        widget = app.selectbox(key=f"in_{self.column}")
        options = list(widget.options)
        chosen = category_text(value) if category_text(value) in options else options[-1]
        widget.set_value(chosen)
        return chosen

    @classmethod
    def eda_section(cls, frame: Any, columns: list[str], plots: Path, config: Any) -> list[str]:
        """Cardinality, missing count and the 3 most frequent values of each categorical feature."""
        from mtl.reporting import cell

        lines = ["## Categorical features", "", "| feature | cardinality | missing | top values |",
                 "|---|---:|---:|---|"]
        for c in columns:
            texts = frame[c].map(category_text)
            absent = texts == ""
            counts = texts[~absent].value_counts()
            top = ", ".join(f"{cell(v)} ({k:,})" for v, k in counts[:3].items())
            lines.append(f"| `{c}` | {len(counts):,} | {int(absent.sum()):,} | {top} |")
        return [*lines, ""]
