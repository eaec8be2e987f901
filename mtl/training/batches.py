"""``tf.data`` pipelines of ``(features, labels, weights)`` batches from a ``SplitData``."""

from __future__ import annotations

import numpy as np
import tensorflow as tf

from mtl.data import SplitData


def to_dataset(split: SplitData, batch_size: int, shuffle: bool = False, seed: int = 0,
               with_labels: bool = True, bucket_by: str | None = None) -> tf.data.Dataset:
    """Batches of the split; the training split is reshuffled every epoch from ``seed``.

    ``bucket_by`` (a text column) groups rows of similar length into a batch, so that trimming each batch to its
    longest text wastes less: the buckets are the length quintiles of the split, and batches stay ``batch_size``.
    """
    if with_labels:
        dataset = tf.data.Dataset.from_tensor_slices((split.features, split.labels, split.weights))
    else:
        dataset = tf.data.Dataset.from_tensor_slices(split.features)
    if shuffle:
        dataset = dataset.shuffle(len(split), seed=seed, reshuffle_each_iteration=True)
    if bucket_by is not None and len(split):
        lengths = np.fromiter((len(t) for t in split.features[bucket_by]), dtype="int64", count=len(split))
        bounds = sorted(set(int(b) + 1 for b in np.quantile(lengths, [0.2, 0.4, 0.6, 0.8])))

        def length(*element: dict) -> tf.Tensor:
            return tf.strings.length(element[0][bucket_by], unit="UTF8_CHAR")

        dataset = dataset.bucket_by_sequence_length(length, bounds, [batch_size] * (len(bounds) + 1))
        # Keras needs the number of batches: without it, fit reads past the end of an epoch, and the next epoch
        # can fail. Each bucket ends with one partial batch.
        per_bucket = np.bincount(np.searchsorted(bounds, lengths, side="right"), minlength=len(bounds) + 1)
        batches = int(sum(-(-int(n) // batch_size) for n in per_bucket))
        return dataset.apply(tf.data.experimental.assert_cardinality(batches)).prefetch(tf.data.AUTOTUNE)
    return dataset.batch(batch_size).prefetch(tf.data.AUTOTUNE)
