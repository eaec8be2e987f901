"""Keras building blocks shared by the model's trunks and the task heads."""

from __future__ import annotations

from typing import Any

import keras
import tensorflow as tf


@keras.saving.register_keras_serializable("mtl")
class Standardize(keras.layers.Layer):
    """``(x - mean) / std`` per position, with NaN (a missing value) replaced by the training mean first, so a
    missing number never reaches a loss. Called on a list of ``[batch]`` columns it stacks them into one
    ``[batch, columns]`` tensor: all numeric columns are filled and normalised together, in one op each."""

    def __init__(self, mean: list[float], std: list[float], **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.mean = [float(m) for m in mean]
        self.std = [float(s) for s in std]

    def call(self, x: Any) -> Any:
        if isinstance(x, list | tuple):
            x = keras.ops.stack([keras.ops.cast(c, self.compute_dtype) for c in x], axis=-1)
        x = keras.ops.cast(x, self.compute_dtype)
        mean = keras.ops.convert_to_tensor(self.mean, self.compute_dtype)
        std = keras.ops.convert_to_tensor(self.std, self.compute_dtype)
        x = keras.ops.where(keras.ops.isnan(x), mean, x)
        return (x - mean) / std

    def compute_output_shape(self, input_shape: Any) -> tuple:
        if isinstance(input_shape, list):
            return (input_shape[0][0], len(input_shape))
        return tuple(input_shape)

    def get_config(self) -> dict:
        return {**super().get_config(), "mean": self.mean, "std": self.std}


def dense_stack(x: Any, units: list[int], activation: str, dropout: float, norm: str, prefix: str,
                trainable: bool = True, dense_layers: list | None = None) -> Any:
    """Dense layers with optional batch/layer normalisation and dropout after each; the ``Dense`` layers created
    are appended to ``dense_layers`` when given (how a trunk declares its shared layers)."""
    for i, width in enumerate(units):
        dense = keras.layers.Dense(width, activation=activation, name=f"{prefix}_dense_{i}", trainable=trainable)
        if dense_layers is not None:
            dense_layers.append(dense)
        x = dense(x)
        if norm == "batch":
            # under a tf.distribute strategy, the statistics of the global batch (all replicas' rows), as in one
            # process
            x = keras.layers.BatchNormalization(name=f"{prefix}_bn_{i}", trainable=trainable,
                                                synchronized=tf.distribute.has_strategy())(x)
        elif norm == "layer":
            x = keras.layers.LayerNormalization(name=f"{prefix}_ln_{i}", trainable=trainable)(x)
        if dropout:
            x = keras.layers.Dropout(dropout, name=f"{prefix}_dropout_{i}")(x)
    return x


@keras.saving.register_keras_serializable("mtl")
class StopGradient(keras.layers.Layer):
    """The identity whose gradient is zero: a linked task's output read as a fixed feature (``stop_gradient``)."""

    def call(self, x: Any) -> Any:
        return keras.ops.stop_gradient(x)

    def compute_output_shape(self, input_shape: Any) -> tuple:
        return tuple(input_shape)
