"""``tf.data`` pipelines of ``(features, labels, weights)`` batches from a ``SplitData``.

Why whole-epoch gathers: the split's column arrays are held as tensors; at the start of each epoch every column is
gathered once in the epoch's row order and cut into ``[batches, batch_size, ...]`` blocks, which ``tf.data`` slices
batch by batch, so it never handles single rows and runs no Python or graph function per batch (issue 11). Length
buckets (text) gather each batch by its index slice instead. Why a permutation that is a pure function of
``(seed, epoch)``: a run resumed after epoch k sees the same batches in epoch k + 1 as the uninterrupted run
(issue 14).
"""

from __future__ import annotations

import keras
import numpy as np
import tensorflow as tf

from mtl.data import SplitData


def batch_segments(bucket_of_row: np.ndarray, batch_size: int) -> tuple[np.ndarray, np.ndarray]:
    """``(starts, sizes)`` of the batches over rows sorted by bucket: each bucket is cut into ``batch_size``
    batches and ends with one partial batch."""
    starts, sizes, offset = [], [], 0
    for count in np.bincount(bucket_of_row) if len(bucket_of_row) else []:
        for start in range(0, int(count), batch_size):
            starts.append(offset + start)
            sizes.append(min(batch_size, int(count) - start))
        offset += int(count)
    return np.asarray(starts, dtype="int64"), np.asarray(sizes, dtype="int64")


def length_buckets(texts: np.ndarray) -> np.ndarray:
    """Each text's bucket: the length quintiles of the split (in characters)."""
    lengths = np.fromiter((len(t) for t in texts), dtype="int64", count=len(texts))
    bounds = sorted(set(int(b) + 1 for b in np.quantile(lengths, [0.2, 0.4, 0.6, 0.8])))
    return np.searchsorted(bounds, lengths, side="right").astype("int64")


def to_dataset(split: SplitData, batch_size: int, shuffle: bool = False, seed: int = 0,
               with_labels: bool = True, bucket_by: str | None = None, first_epoch: int = 0) -> tf.data.Dataset:
    """Batches of the split; with ``shuffle`` the n-th pass over the dataset is epoch ``first_epoch + n``, whose
    row order is a permutation drawn from ``(seed, epoch)`` alone.

    ``bucket_by`` (a text column) groups rows of similar length into a batch, so that trimming each batch to its
    longest text wastes less: the buckets are the length quintiles of the split, batches stay ``batch_size``
    (each bucket ends with one partial batch) and, with ``shuffle``, the batch order is drawn from the same seed.
    """
    rows = len(split)
    columns = (split.features, split.labels, split.weights) if with_labels else split.features
    columns = tf.nest.map_structure(tf.constant, columns)
    buckets = length_buckets(split.features[bucket_by]) if bucket_by is not None and rows else np.zeros(rows, "int64")
    starts, sizes = batch_segments(buckets, batch_size)
    batches = len(starts)
    bucket_tensor = tf.constant(buckets) if bucket_by is not None else None
    epoch_counter = tf.Variable(first_epoch - 1, dtype=tf.int64, trainable=False)

    def epoch_order(epoch: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
        order = tf.range(rows, dtype=tf.int64)
        batch_order = tf.range(batches, dtype=tf.int64)
        if shuffle:
            order = epoch_permutation(rows, seed, epoch)
            if bucket_tensor is not None:
                key = tf.stack([tf.constant(seed, tf.int64), epoch])
                batch_order = tf.random.experimental.stateless_shuffle(batch_order, seed=key + [0, 1 << 32])
        return order, batch_order

    def bucketed_batches(_: tf.Tensor) -> tf.data.Dataset:
        order, batch_order = epoch_order(epoch_counter.assign_add(1))
        # group by bucket, keeping the shuffled order within each bucket
        order = tf.gather(order, tf.argsort(tf.gather(bucket_tensor, order), stable=True))
        segments = tf.data.Dataset.from_tensor_slices((tf.gather(starts, batch_order), tf.gather(sizes, batch_order)))
        return segments.map(lambda start, size: tf.nest.map_structure(
            lambda column: tf.gather(column, order[start:start + size]), columns),
            num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)

    def shuffled_batches(_: tf.Tensor) -> tf.data.Dataset:
        order, _ = epoch_order(epoch_counter.assign_add(1))
        return cut_into_batches(tf.nest.map_structure(lambda column: tf.gather(column, order), columns), rows,
                                batch_size)

    if bucket_tensor is None and not shuffle:
        # the same batches every pass: a dataset without a per-pass function, whose iterator costs about a
        # millisecond to make (a flat_map over many columns cost 30-60 ms each epoch: validation, issue 11)
        dataset = cut_into_batches(columns, rows, batch_size)
    else:
        dataset = tf.data.Dataset.range(1).flat_map(bucketed_batches if bucket_tensor is not None else shuffled_batches)
    # Keras needs the number of batches: without it, fit reads past the end of an epoch, and the next one can fail.
    return dataset.apply(tf.data.experimental.assert_cardinality(batches)).prefetch(tf.data.AUTOTUNE)


def epoch_permutation(rows: int, seed: int, epoch: tf.Tensor) -> tf.Tensor:
    """The row order of epoch ``epoch``: a permutation of ``range(rows)`` drawn from ``(seed, epoch)`` alone."""
    key = tf.stack([tf.constant(seed, tf.int64), epoch])
    return tf.random.experimental.stateless_shuffle(tf.range(rows, dtype=tf.int64), seed=key)


def cut_into_batches(columns: object, rows: int, batch_size: int) -> tf.data.Dataset:
    """``columns`` (a structure of tensors of ``rows`` rows) as ``batch_size`` batches and one partial batch, sliced
    from whole ``[batches, batch_size, ...]`` blocks: no function runs per batch."""
    full_rows = rows // batch_size * batch_size

    def blocks(column: tf.Tensor) -> tf.Tensor:
        return tf.reshape(column[:full_rows], tf.concat([[-1, batch_size], tf.shape(column)[1:]], axis=0))

    dataset = tf.data.Dataset.from_tensor_slices(tf.nest.map_structure(blocks, columns))
    if full_rows < rows:  # the last, partial batch
        rest = tf.nest.map_structure(lambda column: column[full_rows:], columns)
        dataset = dataset.concatenate(tf.data.Dataset.from_tensors(rest))
    return dataset


class StepGather(keras.callbacks.Callback):
    """Training batches gathered inside the compiled training step: ``dataset`` yields only each batch's number,
    and calling the object on it gathers the batch's rows from the columns, held as tensors. As a callback of the
    ``fit``, it draws each epoch's row order at the epoch's start.

    Why: a ``tf.data`` pipeline over every column costs the training loop as much as the step itself on a small
    model (each epoch's iterator instantiates a function over all the columns, and the batches cross threads);
    a gather in the step is a few ops (issue 11). Columns of one dtype and row shape (the numeric features, the
    labels and weights of most tasks) are held side by side in one block, ``blocks``, gathered by one op and split
    again: one gather per column cost about 8 µs each, a fifth of a small model's step. The epoch's order lives in
    a variable set by ``on_epoch_begin``, so the dataset is a plain range (its iterator, made twice an epoch by
    Keras, cost 12-20 ms when it drew the permutation in a ``flat_map``). The batches are those of ``to_dataset``
    with ``shuffle``: the rows of epoch ``e`` in the permutation drawn from ``(seed, e)``, cut into ``batch_size``
    batches and one partial batch, so a resumed run (Keras numbers its epochs from ``initial_epoch``) sees the same
    batches. ``MultiTaskModel.batch_gather`` takes the object for the length of a ``fit``.
    """

    def __init__(self, split: SplitData, batch_size: int, seed: int = 0) -> None:
        super().__init__()
        self._structure = (split.features, split.labels, split.weights)
        columns = [np.asarray(column) for column in tf.nest.flatten(self._structure)]
        members: dict[tuple, list[int]] = {}
        for index, column in enumerate(columns):
            members.setdefault((column.dtype.str, column.shape[1:]), []).append(index)
        # (positions in the flattened structure, the block: the column itself, or the columns stacked on axis 1)
        self.blocks = [(indices, tf.constant(columns[indices[0]] if len(indices) == 1
                                             else np.stack([columns[i] for i in indices], axis=1)))
                       for indices in members.values()]
        self.rows, self.batch_size, self.seed = len(split), batch_size, seed
        self.order = tf.Variable(tf.range(self.rows, dtype=tf.int64), trainable=False)
        batches = -(-self.rows // batch_size)
        self.dataset = tf.data.Dataset.range(batches)

    def on_epoch_begin(self, epoch: int, logs: dict | None = None) -> None:
        self.order.assign(epoch_permutation(self.rows, self.seed, tf.constant(epoch, tf.int64)))

    def __call__(self, batch: tf.Tensor) -> tuple:
        """The columns of batch number ``batch`` of the current epoch."""
        start = batch * self.batch_size
        rows = self.order[start:start + self.batch_size]
        flat: list = [None] * sum(len(indices) for indices, _ in self.blocks)
        for indices, block in self.blocks:
            gathered = tf.gather(block, rows)
            for index, column in zip(indices, [gathered] if len(indices) == 1 else tf.unstack(gathered, axis=1),
                                     strict=True):
                flat[index] = column
        return tf.nest.pack_sequence_as(self._structure, flat)
