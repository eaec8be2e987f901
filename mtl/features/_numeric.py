"""``data.features.numeric``: columns of numbers. Missing values are filled with the training mean, then every
numeric column is standardised, all together as one ``[batch, columns]`` tensor in the graph (one layer, not one
per column), while the signature still takes one named input per column."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from mtl.features._base import Encoded, Feature
from mtl.features._values import cells, number_value

__all__ = ["NumericFeature"]


def _plain_numbers(values: Sequence) -> np.ndarray:
    """A list of plain Python ``float``/``int`` (a JSON column) as one float64 array, parsed without a per-cell
    call; anything else (texts, ``None``, booleans, an integer beyond a double) as an empty object array, which
    sends the values through ``number_value`` cell by cell."""
    if isinstance(values, list) and values and all(type(v) is float or type(v) is int for v in values):
        try:
            array = np.asarray(values, dtype="float64")
        except OverflowError:
            return np.empty(0, object)
        if not np.isinf(array).any():  # a non-finite cell gets its own message (with its row) from number_value
            return array
    return np.empty(0, object)


class NumericFeature(Feature):
    """A float32 column; ``mean_`` and ``std_`` come from the training split's finite values."""

    kind: ClassVar[str] = "numeric"
    dtype: ClassVar[str] = "float32"
    description: ClassVar[str] = ("numeric input columns. Missing values are filled with the training mean, then "
                                  "standardised in the graph")

    def __init__(self, column: str, input_name: str | None = None, non_finite: str = "error") -> None:
        super().__init__(column, input_name)
        self.non_finite = non_finite

    @classmethod
    def from_data_config(cls, column: str, input_name: str, data_config: Any) -> NumericFeature:
        return cls(column, input_name, non_finite=data_config.non_finite)

    def params(self) -> dict:
        return {"non_finite": self.non_finite}

    @classmethod
    def from_signature(cls, name: str, dtype: str, shape: tuple) -> Feature | None:
        return cls(name) if dtype == "float32" and shape == () else None

    def parse(self, values: Sequence | np.ndarray, where: str | None = None, first_row: int = 1) -> np.ndarray:
        array = values if isinstance(values, np.ndarray) else _plain_numbers(values)
        if array.dtype.kind == "f" and array.ndim == 1:  # already numbers (Parquet, JSON): only check finiteness
            if not np.isinf(array).any() or self.non_finite == "missing":
                return np.where(np.isinf(array), np.nan, array).astype("float32")
        if array.dtype.kind in "iu" and array.ndim == 1:
            return array.astype("float32")
        parsed = cells(values, self.column, where, lambda v: number_value(v, self.non_finite), first_row)
        return np.asarray(parsed, dtype="float32").reshape(-1)

    def fit(self, values: np.ndarray) -> NumericFeature:
        finite = values[np.isfinite(values)].astype("float64")
        self.mean_ = float(finite.mean()) if len(finite) else 0.0
        std = float(finite.std()) if len(finite) > 1 else 1.0
        self.std_ = std if std > 0 else 1.0
        return self

    def fit_partial(self, values: np.ndarray) -> None:
        """Merge one batch into exact running statistics (``mtl._moments``): memory does not grow with the rows."""
        if not hasattr(self, "_moments"):
            from mtl._moments import RunningMoments

            self._moments = RunningMoments()
        self._moments.update(values)

    def finish_fit(self) -> NumericFeature:
        moments = self.__dict__.pop("_moments", None)
        count = float(moments.count) if moments is not None else 0.0
        self.mean_ = float(moments.mean) if count else 0.0
        std = float(np.sqrt(moments.variance())) if count > 1 else 1.0
        self.std_ = std if std > 0 else 1.0
        return self

    @classmethod
    def build_group(cls, features: list[Feature], inputs: dict[str, Any], model_config: Any) -> Encoded:
        from mtl.layers import Standardize

        columns = [inputs[f.column] for f in features]
        layer = Standardize([f.mean_ for f in features], [f.std_ for f in features], name="numeric_features")
        return Encoded([layer(columns)])

    def app_input(self, container: Any) -> Any:
        return container.number_input(self.column, value=float(self.mean_), format="%.6g", key=f"in_{self.column}")

    def fill_app_input(self, app: Any, value: Any) -> Any:
        app.number_input(key=f"in_{self.column}").set_value(float(value))
        return value

    @classmethod
    def eda_section(cls, frame: Any, columns: list[str], plots: Path, config: Any) -> list[str]:
        """Summary statistics of each numeric feature and one grid of histograms."""
        import pandas as pd

        from mtl.features._values import is_missing
        from mtl.reporting import histograms, stats_table

        parsed, missing, bad = {}, {}, {}
        for c in columns:
            absent = frame[c].map(is_missing).to_numpy(dtype=bool)
            numbers = pd.to_numeric(frame[c].where(~absent), errors="coerce")
            numbers = numbers.where(np.isfinite(numbers))
            parsed[c], missing[c] = numbers.dropna(), int(absent.sum())
            bad[c] = int(numbers.isna().sum()) - missing[c]
        lines = ["## Numeric features", "", *stats_table(parsed, missing, bad)]
        offenders = [f"`{c}` ({k:,})" for c, k in bad.items() if k]
        if offenders:
            lines += ["", "**Non-numeric or non-finite values** (not counted in the statistics): "
                      + ", ".join(offenders)]
        histograms(parsed, plots / "numeric_features.png")
        return [*lines, "", "![numeric features](plots/numeric_features.png)", ""]
