"""``data.features.vector``: columns that hold a fixed-length list of numbers per row (e.g. precomputed
embeddings): a JSON list in CSV/TSV cells (``"[0.1, -2]"``), a list column in Parquet, a list in JSON Lines and in
request bodies. One input of width ``d`` in the graph and in the signature; missing entries (and a missing cell)
are filled with the training mean of their position, then each position is standardised."""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from mtl.features._base import Encoded, Feature
from mtl.features._values import CellError, cells, is_missing, number_value, shown

__all__ = ["VectorFeature"]


class VectorFeature(Feature):
    """A float32 ``[rows, width_]`` column; ``mean_`` and ``std_`` per position from the training split."""

    kind: ClassVar[str] = "vector"
    dtype: ClassVar[str] = "float32"
    description: ClassVar[str] = ("columns holding a fixed-length list of numbers per row (a JSON list in CSV, a "
                                  "list column in Parquet): one input of that width")

    def __init__(self, column: str, input_name: str | None = None, non_finite: str = "error") -> None:
        super().__init__(column, input_name)
        self.non_finite = non_finite

    @classmethod
    def from_data_config(cls, column: str, input_name: str, data_config: Any) -> VectorFeature:
        return cls(column, input_name, non_finite=data_config.non_finite)

    def params(self) -> dict:
        return {"non_finite": self.non_finite}

    @classmethod
    def from_signature(cls, name: str, dtype: str, shape: tuple) -> Feature | None:
        if dtype != "float32" or len(shape) != 1 or shape[0] is None:
            return None
        feature = cls(name)
        feature.width_ = int(shape[0])
        return feature

    def _row(self, value: Any, width: int | None) -> list[float] | None:
        if isinstance(value, bytes):
            value = value.decode("utf-8", errors="replace")
        if isinstance(value, str) or value is None or (isinstance(value, float) and math.isnan(value)):
            if is_missing(value):
                return None
            try:
                value = json.loads(value)
            except ValueError:
                raise CellError(f"{shown(value)} is not a list of numbers (write it as a JSON list)") from None
        if isinstance(value, np.ndarray):
            value = value.tolist()
        if not isinstance(value, list | tuple):
            raise CellError(f"{shown(value)} is not a list of numbers")
        if width is not None and len(value) != width:
            raise CellError(f"a list of {len(value)} numbers; this feature takes {width}")
        return [number_value(v, self.non_finite) for v in value]

    def parse(self, values: Sequence | np.ndarray, where: str | None = None, first_row: int = 1) -> np.ndarray:
        width = getattr(self, "width_", None)
        if width is None:  # training: the first non-missing row sets the width, the others must agree
            first = next((v for v in values if not _missing_cell(v)), None)
            rows = cells([first], self.column, where, lambda v: self._row(v, None), first_row) if first is not None \
                else [None]
            width = len(rows[0]) if rows[0] is not None else 0
        parsed = cells(values, self.column, where, lambda v: self._row(v, width), first_row)
        return np.asarray([[math.nan] * width if r is None else r for r in parsed], dtype="float32").reshape(-1, width)

    def fit(self, values: np.ndarray) -> VectorFeature:
        self.width_ = int(values.shape[1])
        with np.errstate(all="ignore"):
            mean = np.nanmean(values.astype("float64"), axis=0) if len(values) else np.zeros(self.width_)
            std = np.nanstd(values.astype("float64"), axis=0) if len(values) else np.ones(self.width_)
        self.mean_ = [float(m) if math.isfinite(m) else 0.0 for m in mean]
        self.std_ = [float(s) if math.isfinite(s) and s > 0 else 1.0 for s in std]
        return self

    def input_shape(self) -> tuple[int, ...]:
        return (self.width_,)

    @classmethod
    def build_group(cls, features: list[Feature], inputs: dict[str, Any], model_config: Any) -> Encoded:
        from mtl.layers import Standardize

        return Encoded([Standardize(f.mean_, f.std_, name=f"{f.input_name}_standardise")(inputs[f.column])
                        for f in features])

    def app_input(self, container: Any) -> Any:
        default = json.dumps([round(m, 6) for m in self.mean_])
        return container.text_input(self.column, value=default, key=f"in_{self.column}",
                                    help=f"a JSON list of {self.width_} numbers")

    def fill_app_input(self, app: Any, value: Any) -> Any:
        app.text_input(key=f"in_{self.column}").set_value(json.dumps([float(v) for v in value]))
        return value

    @classmethod
    def eda_section(cls, frame: Any, columns: list[str], plots: Path, config: Any) -> list[str]:
        """Each vector column's width(s) and missing count."""
        lines = ["## Vector features", "", "| feature | widths | missing |", "|---|---|---:|"]
        for c in columns:
            widths: dict[int, int] = {}
            missing = 0
            for value in frame[c]:
                if _missing_cell(value):
                    missing += 1
                    continue
                try:
                    row = json.loads(value) if isinstance(value, str) else list(value)
                    widths[len(row)] = widths.get(len(row), 0) + 1
                except (TypeError, ValueError):
                    widths[-1] = widths.get(-1, 0) + 1
            shown_widths = ", ".join(f"{w if w >= 0 else 'not a list'} ({n:,})" for w, n in sorted(widths.items()))
            lines.append(f"| `{c}` | {shown_widths} | {missing:,} |")
        return [*lines, ""]


def _missing_cell(value: Any) -> bool:
    return not isinstance(value, list | tuple | np.ndarray) and is_missing(value)
