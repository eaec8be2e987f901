"""Label-column helpers shared by the data stage and the task types (plain pandas, no TensorFlow)."""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

__all__ = ["missing_mask", "label_text", "data_row"]


def missing_mask(values: pd.Series) -> np.ndarray:
    """True where a label is absent: NaN/None or an empty (white-space only) string."""
    missing = values.isna().to_numpy().copy()
    if values.dtype == object or pd.api.types.is_string_dtype(values.dtype):
        text = values.astype("string").str.strip()
        missing |= (text == "").fillna(True).to_numpy(dtype=bool)
    return missing


def label_text(value: Any) -> str:
    """A label as the string the model knows it by: ``1.0`` -> ``"1"``, ``True`` -> ``"True"``."""
    if isinstance(value, (float, np.floating)) and float(value).is_integer():
        return str(int(value))
    return str(value).strip()


def data_row(index: Any) -> str:
    """How error messages name a row: 1-based among the data rows of the source."""
    return f"row {int(index) + 1}" if isinstance(index, (int, np.integer)) else f"row {index!r}"
