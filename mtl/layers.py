"""Keras building blocks shared by the model's trunks and the task heads."""

from __future__ import annotations

from typing import Any

import keras


@keras.saving.register_keras_serializable("mtl")
class FillMissing(keras.layers.Layer):
    """Replace NaN with a fixed value (the training mean), so a missing number never reaches a loss."""

    def __init__(self, value: float = 0.0, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.value = float(value)

    def call(self, x: Any) -> Any:
        x = keras.ops.cast(x, self.compute_dtype)
        return keras.ops.where(keras.ops.isnan(x), keras.ops.cast(self.value, x.dtype), x)

    def compute_output_shape(self, input_shape: tuple) -> tuple:
        return input_shape

    def get_config(self) -> dict:
        return {**super().get_config(), "value": self.value}


def dense_stack(x: Any, units: list[int], activation: str, dropout: float, norm: str, prefix: str,
                trainable: bool = True) -> Any:
    """Dense layers with optional batch/layer normalisation and dropout after each."""
    for i, width in enumerate(units):
        x = keras.layers.Dense(width, activation=activation, name=f"{prefix}_dense_{i}", trainable=trainable)(x)
        if norm == "batch":
            x = keras.layers.BatchNormalization(name=f"{prefix}_bn_{i}", trainable=trainable)(x)
        elif norm == "layer":
            x = keras.layers.LayerNormalization(name=f"{prefix}_ln_{i}", trainable=trainable)(x)
        if dropout:
            x = keras.layers.Dropout(dropout, name=f"{prefix}_dropout_{i}")(x)
    return x
