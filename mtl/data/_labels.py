"""Label-column helpers shared by the data stage and the task types (plain pandas, no TensorFlow).

Labels follow the same raw-value rule as features (``mtl.features._values``): the same missing spellings, and a
class label is the text a categorical value would be (``1.0`` -> ``"1"``, ``"01002"`` stays ``"01002"``).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

from mtl.features._values import category_text, is_missing

__all__ = ["missing_mask", "label_text", "data_row"]


def missing_mask(values: pd.Series) -> np.ndarray:
    """True where a label is absent: ``None``, NaN, or a missing-value text (``""``, ``NA``, ``null``, ...)."""
    return np.fromiter((not isinstance(v, list | tuple | np.ndarray) and is_missing(v) for v in values),
                       dtype=bool, count=len(values))


def label_text(value: Any) -> str:
    """A label as the string the model knows it by: ``1.0`` -> ``"1"``, ``True`` -> ``"True"``."""
    return category_text(value)


def data_row(index: Any) -> str:
    """How error messages name a row: 1-based among the data rows of the source."""
    return f"row {int(index) + 1}" if isinstance(index, int | np.integer) else f"row {index!r}"
