"""Raw named inputs and their in-graph preprocessing, fitted on the training split only.

Numeric columns: missing values filled with the training mean, then standardised
(``keras.layers.Normalization``). Categorical columns: ``keras.layers.StringLookup`` with one
out-of-vocabulary bucket, then an ``Embedding``. The model therefore takes raw column values,
which is also what its SavedModel signature takes.
"""

from __future__ import annotations

import math
from typing import Any

import keras
import numpy as np

from mtl.layers import FillMissing


def embedding_size(cardinality: int, setting: int | str = "auto") -> int:
    """``auto``: fast.ai's rule of thumb ``1.6 * n ** 0.56``, capped at 16."""
    if setting != "auto":
        return int(setting)
    return max(2, min(16, math.ceil(1.6 * cardinality**0.56)))


def build_inputs(
    numeric: list[str],
    categorical: list[str],
    train_features: dict[str, np.ndarray],
    embedding_dim: int | str = "auto",
) -> tuple[dict[str, Any], Any]:
    """Return ``(inputs, encoded)``: one ``keras.Input`` per column and their concatenated encoding."""
    inputs, parts = {}, []
    for column in numeric:
        values = train_features[column].astype("float64")
        finite = values[np.isfinite(values)]
        mean = float(finite.mean()) if len(finite) else 0.0
        var = float(finite.var()) if len(finite) > 1 else 1.0
        inputs[column] = keras.Input(shape=(), name=column, dtype="float32")
        x = keras.layers.Reshape((1,), name=f"{column}_column")(inputs[column])
        x = FillMissing(mean, name=f"{column}_fill_missing")(x)
        parts.append(keras.layers.Normalization(mean=mean, variance=var if var > 0 else 1.0,
                                                name=f"{column}_normalise")(x))
    for column in categorical:
        vocabulary = sorted(set(train_features[column].tolist()))
        inputs[column] = keras.Input(shape=(), name=column, dtype="string")
        ids = keras.layers.StringLookup(vocabulary=vocabulary, num_oov_indices=1, name=f"{column}_lookup")(
            inputs[column]
        )
        size = len(vocabulary) + 1
        parts.append(keras.layers.Embedding(size, embedding_size(size, embedding_dim),
                                            name=f"{column}_embedding")(ids))
    encoded = parts[0] if len(parts) == 1 else keras.layers.Concatenate(name="features")(parts)
    return inputs, encoded
