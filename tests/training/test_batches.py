"""The in-memory pipeline: batches gathered by index, each epoch's order a pure function of (seed, epoch)."""

import numpy as np
import tensorflow as tf

from mtl.data import SplitData
from mtl.training import StepGather, to_dataset


def split_of(rows: int) -> SplitData:
    """A split with a 1-D numeric column, a 2-D vector column and a string column, all derived from the row."""
    index = np.arange(rows)
    features = {"x": index.astype("float32"), "vector": np.stack([index, -index], axis=1).astype("float32"),
                "word": np.array([f"w{i}" for i in index], dtype=object)}
    return SplitData(features, {"y": index * 10}, {"y": np.ones(rows, "float32")}, index)


def epoch_rows(dataset) -> list[list[int]]:
    return [batch[0]["x"].numpy().astype(int).tolist() for batch in dataset]


def test_each_epoch_is_a_permutation_drawn_from_seed_and_epoch():
    split = split_of(103)
    dataset = to_dataset(split, 16, shuffle=True, seed=7)
    first, second = epoch_rows(dataset), epoch_rows(dataset)
    for epoch in (first, second):
        assert [len(b) for b in epoch] == [16] * 6 + [7]
        assert sorted(sum(epoch, [])) == list(range(103))  # every row once
    assert first != second  # reshuffled every epoch
    assert epoch_rows(to_dataset(split, 16, shuffle=True, seed=7, first_epoch=1)) == second  # as a resume sees it
    assert epoch_rows(to_dataset(split, 16, shuffle=True, seed=8)) != first
    assert epoch_rows(to_dataset(split, 16)) == [list(range(s, min(s + 16, 103))) for s in range(0, 103, 16)]


def test_step_gather_yields_the_batches_of_the_shuffled_dataset():
    """The training step's gather (issue 11) sees the batches ``to_dataset`` gives, epoch by epoch and on resume
    (Keras numbers a resumed run's epochs from ``initial_epoch``; ``on_epoch_begin`` gets that number)."""
    split = split_of(103)
    for first_epoch in (0, 3):
        gather = StepGather(split, 16, seed=7)
        dataset = to_dataset(split, 16, shuffle=True, seed=7, first_epoch=first_epoch)
        for epoch in (first_epoch, first_epoch + 1):
            gather.on_epoch_begin(epoch)
            expected = list(dataset)
            got = [gather(batch) for batch in gather.dataset]
            assert len(got) == len(expected) == 7
            for (features, labels, weights), (want_features, want_labels, want_weights) in zip(got, expected,
                                                                                                 strict=True):
                for name in ("x", "vector", "word"):
                    np.testing.assert_array_equal(features[name].numpy(), want_features[name].numpy())
                np.testing.assert_array_equal(labels["y"].numpy(), want_labels["y"].numpy())
                np.testing.assert_array_equal(weights["y"].numpy(), want_weights["y"].numpy())


def test_gathered_columns_stay_aligned():
    features, labels, weights = next(iter(to_dataset(split_of(50), 8, shuffle=True, seed=1)))
    x = features["x"].numpy()
    np.testing.assert_array_equal(features["vector"].numpy(), np.stack([x, -x], axis=1))
    assert [w.decode() for w in features["word"].numpy()] == [f"w{int(i)}" for i in x]
    np.testing.assert_array_equal(labels["y"].numpy(), x.astype(int) * 10)
    assert weights["y"].shape == (8,)
    only_features = next(iter(to_dataset(split_of(50), 8, with_labels=False)))
    assert set(only_features) == {"x", "vector", "word"}


def test_length_buckets_keep_batch_size_and_the_exact_batch_count():
    rows = 200
    split = split_of(rows)
    split.features["text"] = np.array([" ".join(["word"] * (1 + i % 40)) for i in range(rows)], dtype=object)
    dataset = to_dataset(split, 16, shuffle=True, seed=3, bucket_by="text")
    epochs = [[batch[0]["text"].numpy() for batch in dataset] for _ in range(2)]
    for batches in epochs:
        assert len(batches) == int(dataset.cardinality())  # what Keras is told is what it gets
        assert sum(len(b) for b in batches) == rows and max(len(b) for b in batches) == 16
        spread = [max(map(len, b)) - min(map(len, b)) for b in batches]
        assert np.mean(spread) < 60  # rows of similar length share a batch (lengths span 4..199 characters)
    assert [b.tolist() for b in epochs[0]] != [b.tolist() for b in epochs[1]]


def test_step_gather_holds_columns_of_one_dtype_and_shape_in_one_block():
    """One gather per block, not per column (issue 11): the float32 columns ``x`` and the weight share a block."""
    split = split_of(40)
    split.features["z"] = np.arange(40, dtype="float32") * -1
    gather = StepGather(split, 8)
    sizes = sorted(len(indices) for indices, _ in gather.blocks)
    assert sizes == [1, 1, 1, 3]  # vector, word, the int label; x, z and the weight side by side
    gather.order.assign(tf.constant([5, 2, 39] + list(range(37)), tf.int64))
    features, labels, weights = gather(tf.constant(0, tf.int64))
    rows = [5, 2, 39, 0, 1, 2, 3, 4]
    np.testing.assert_array_equal(features["z"].numpy(), [-r for r in rows])
    np.testing.assert_array_equal(features["x"].numpy(), rows)
    np.testing.assert_array_equal(labels["y"].numpy(), [10 * r for r in rows])
    assert [w.decode() for w in features["word"].numpy()] == [f"w{r}" for r in rows]
