"""``tf.data`` pipelines of ``(features, labels, weights)`` batches from a ``SplitData``."""

from __future__ import annotations

import tensorflow as tf

from mtl.data import SplitData


def to_dataset(split: SplitData, batch_size: int, shuffle: bool = False, seed: int = 0,
               with_labels: bool = True) -> tf.data.Dataset:
    """Batches of the split; the training split is reshuffled every epoch from ``seed``."""
    if with_labels:
        dataset = tf.data.Dataset.from_tensor_slices((split.features, split.labels, split.weights))
    else:
        dataset = tf.data.Dataset.from_tensor_slices(split.features)
    if shuffle:
        dataset = dataset.shuffle(len(split), seed=seed, reshuffle_each_iteration=True)
    return dataset.batch(batch_size).prefetch(tf.data.AUTOTUNE)
