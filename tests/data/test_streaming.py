"""``data.streaming``: Parquet/CSV shards read in record batches, fitted in one pass, split by a stable hash; and the
same shards read whole (a directory or glob in memory). Small shards of the real Adult slice."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
from conftest import tiny_config, write_yaml
from hypothesis import given, settings
from hypothesis import strategies as st

from mtl.cli import main
from mtl.config import config_from_dict
from mtl.data import CodedColumn, load_data, read_table
from mtl.training import data_fingerprint, split_fingerprint, to_dataset

KEYED_SPLIT = {"train": 0.8, "val": 0.1, "test": 0.1, "key": "row_id"}


def write_shards(frame: pd.DataFrame, folder, parts: int = 3, suffix: str = "parquet"):
    """``frame`` with a ``row_id`` column, cut into ``parts`` files of ``folder``."""
    folder.mkdir(parents=True, exist_ok=True)
    frame = frame.assign(row_id=np.arange(len(frame)))
    for number, part in enumerate(np.array_split(np.arange(len(frame)), parts)):
        piece = frame.iloc[part]
        if suffix == "csv":
            piece.to_csv(folder / f"part-{number}.csv", index=False)
        else:
            piece.to_parquet(folder / f"part-{number}.parquet", index=False)
    return folder


@pytest.fixture
def shards(tmp_path, adult_slice):
    return write_shards(adult_slice.head(1200), tmp_path / "shards")


def keyed_config(path, streaming: bool, **overrides):
    return config_from_dict(tiny_config(str(path), data__streaming=streaming, data__split=KEYED_SPLIT, **overrides))


def test_streaming_pass_fits_what_memory_fits(shards):
    """One streaming pass gives the in-memory split (same rows: same digests), the same feature statistics and
    vocabularies, and the same fitted tasks; label_fraction keeps the same labels in both modes."""
    overrides = {"tasks__hours_per_week__label_fraction": 0.3}
    memory, memory_tasks = load_data(keyed_config(shards, False, **overrides))
    streamed, streamed_tasks = load_data(keyed_config(shards, True, **overrides))
    assert split_fingerprint(streamed) == split_fingerprint(memory)
    fitted = [(streamed.features[c].get_config(), f.get_config()) for c, f in memory.features.items()]
    fitted += [(streamed_tasks[name].get_config(), task.get_config()) for name, task in memory_tasks.items()]
    for mine, theirs in fitted:
        assert mine.keys() == theirs.keys()
        for key, value in theirs.items():
            assert mine[key] == (pytest.approx(value, rel=1e-9) if isinstance(value, float) else value), key
    kept = int(memory.train.labelled("hours_per_week").sum())
    assert 0 < kept < len(memory.train) * 0.5
    assert streamed.train.labelled_counts["hours_per_week"] == kept


def test_streamed_batches_have_the_in_memory_structure(shards):
    """Every training row once per epoch, in batches shaped like ``to_dataset``'s, reshuffled each epoch and the
    same for the same seed."""
    memory, _ = load_data(keyed_config(shards, False))
    streamed, _ = load_data(keyed_config(shards, True, data__shuffle_buffer=256))
    dataset = streamed.dataset("train", 100, shuffle=True, seed=3)
    reference = to_dataset(memory.train, 100)
    assert dataset.element_spec == reference.element_spec
    epochs = [[batch for batch in dataset] for _ in range(2)]
    again = [batch for batch in streamed.dataset("train", 100, shuffle=True, seed=3)]
    ages = [np.concatenate([b[0]["age"].numpy() for b in epoch]) for epoch in epochs]
    assert len(epochs[0]) == len(reference) == int(dataset.cardinality())
    assert [len(b[0]["age"]) for b in epochs[0]][:-1] == [100] * (len(epochs[0]) - 1)
    assert np.array_equal(np.sort(ages[0]), np.sort(memory.train.features["age"]))
    assert not np.array_equal(ages[0], ages[1]) and np.array_equal(np.sort(ages[0]), np.sort(ages[1]))
    assert np.array_equal(np.concatenate([b[0]["age"].numpy() for b in again]), ages[0])


def test_streamed_rows_equal_the_in_memory_rows(shards):
    """Each streamed training row carries the in-memory row's every feature value and target (text columns travel
    as codes into a table of their values, numeric columns packed into one matrix)."""
    memory, _ = load_data(keyed_config(shards, False))
    streamed, _ = load_data(keyed_config(shards, True, data__shuffle_buffer=300))
    columns = list(memory.train.features)
    assert set(columns) >= {"age", "workclass", "occupation"}

    def rows(features: dict, labels: dict) -> list[tuple]:
        values = [np.asarray(features[c]) for c in columns] + [np.asarray(v) for v in labels.values()]
        def cell(v):
            return v.decode() if isinstance(v, bytes) else v if isinstance(v, str) else float(v)

        cells = [[cell(v) for v in column] for column in values]
        return sorted(zip(*cells, strict=True), key=repr)

    batches = list(streamed.dataset("train", 64, shuffle=True, seed=5))
    got = rows({c: np.concatenate([b[0][c].numpy() for b in batches]) for c in columns},
               {t: np.concatenate([b[1][t].numpy() for b in batches]) for t in memory.train.labels})
    want = {c: memory.train.features[c] for c in columns}
    assert got == rows(want, memory.train.labels)


@settings(max_examples=200, deadline=None)
@given(st.lists(st.lists(st.sampled_from([b"a", b"bb", b"", b"\xc3\xa9", b"x" * 30]), min_size=1, max_size=6)
                .flatmap(lambda table: st.tuples(st.just(table), st.lists(st.integers(0, len(table) - 1),
                                                                          max_size=40))),
                min_size=1, max_size=6),
       st.data())
def test_coded_columns_keep_their_values(parts, data):
    """Joining, taking and compacting coded text columns never changes a row's value."""
    columns = [CodedColumn(np.asarray(table, dtype=object), np.asarray(codes, dtype="int32"))
               for table, codes in parts]
    joined = CodedColumn.concat(columns)
    expected = np.concatenate([np.asarray(t, dtype=object)[np.asarray(c, dtype="int64")] for t, c in parts])
    assert list(joined.values()) == list(expected)
    assert len(joined.table) <= 2 * max(len(joined), 1)  # a pool's table stays bounded by its rows
    if len(joined):
        keep = np.asarray(data.draw(st.lists(st.integers(0, len(joined) - 1), max_size=50)), dtype="int64")
        taken = joined[keep].compact()
        assert list(taken.values()) == list(expected[keep])
        assert len(taken.table) <= max(len(keep), 1)


def test_cached_validation_reads_the_files_once(shards, tmp_path):
    """A cached split's later passes give the same batches without reading the files (here: moved away)."""
    streamed, _ = load_data(keyed_config(shards, True))
    plain = [b for b in streamed.dataset("val", 32)]
    cached = streamed.dataset("val", 32, cache_file=tmp_path / "val")
    first = [b for b in cached]
    shards.rename(tmp_path / "moved")
    second = [b for b in cached]
    assert len(plain) == len(first) == len(second) > 1
    for a, b, c in zip(plain, first, second, strict=True):
        for x, y, z in zip(*(tf_leaves(batch) for batch in (a, b, c)), strict=True):
            assert np.array_equal(x, y) and np.array_equal(x, z)
    with pytest.raises(ValueError, match="cannot be cached"):
        streamed.dataset("train", 32, shuffle=True, cache_file=tmp_path / "train")


def tf_leaves(batch) -> list[np.ndarray]:
    import tensorflow as tf

    return [leaf.numpy() for leaf in tf.nest.flatten(batch)]


def test_position_hash_split_is_stable(shards):
    """Without a key, the file name and row position decide the split: the same in every run."""
    raw = tiny_config(str(shards / "*.parquet"), data__streaming=True,
                      data__split={"train": 0.8, "val": 0.1, "test": 0.1})
    first, _ = load_data(config_from_dict(raw))
    second, _ = load_data(config_from_dict(raw))
    assert split_fingerprint(first) == split_fingerprint(second)
    assert abs(len(first.test) - 120) < 40


def test_directory_and_glob_in_memory(shards, tmp_path):
    """A directory or glob of shards is read whole in memory as their concatenation, in sorted file order; its
    fingerprint covers every file."""
    frame, source = read_table(str(shards))
    assert len(frame) == 1200 and np.array_equal(frame["row_id"], np.arange(1200))
    globbed, _ = read_table(str(shards / "part-*.parquet"))
    assert globbed.equals(frame) and source == str(shards)
    config = keyed_config(shards, False)
    before = data_fingerprint(config)
    assert before["files"] == 3
    pd.read_parquet(shards / "part-2.parquet").head(10).to_parquet(shards / "part-2.parquet", index=False)
    assert data_fingerprint(config)["sha256"] != before["sha256"]


def test_max_tokens_keeps_the_most_frequent(shards):
    """``data.max_tokens`` caps each vocabulary at its most frequent training values, in both modes."""
    memory, _ = load_data(keyed_config(shards, False, data__max_tokens=3))
    streamed, _ = load_data(keyed_config(shards, True, data__max_tokens=3))
    train = memory.train.features["occupation"]
    counts = pd.Series(train).value_counts()
    assert memory.features["occupation"].vocabulary_ == sorted(counts.index[:3])
    assert streamed.features["occupation"].vocabulary_ == memory.features["occupation"].vocabulary_


def test_streaming_run_trains_evaluates_and_exports(tmp_path, shards):
    """One epoch streamed end to end: history, plots, metrics, export; the metrics are those of the same model on
    the in-memory test split of the same key (the streamed split, parsing and evaluation agree exactly)."""
    import mtl
    from mtl.evaluation import evaluate

    raw = tiny_config(str(shards), data__streaming=True, data__split=KEYED_SPLIT, training__epochs=2,
                      output__export={"base_path": str(tmp_path / "exports"), "name": "adult"})
    result = mtl.train(config_from_dict(raw), tmp_path / "run")
    run = tmp_path / "run"
    assert len(result.history) == 2 and not list(run.glob(".validation-cache-*"))  # the cache is removed
    assert json.loads((run / "metrics.json").read_text())["test"]["income"]["n"] == result.data.test.labelled_counts[
        "income"]
    assert (run / "plots").is_dir() and any((run / "plots").iterdir())
    assert (tmp_path / "exports" / "adult" / "1" / "saved_model.pb").is_file()
    memory, _ = load_data(keyed_config(shards, False))
    again, _ = evaluate(result.model, result.tasks, {"test": memory.test})
    for task, scores in again["test"].items():
        assert result.metrics["test"][task] == pytest.approx(scores, rel=1e-5, abs=1e-6)


def test_eda_on_a_sample(shards, tmp_path):
    from mtl.eda import write_eda_report

    report = write_eda_report(keyed_config(shards, True), tmp_path / "eda")
    text = report.read_text()
    assert "rows: 1,200" in text and "## Numeric features" in text


def bad_schema(folder):
    frame = pd.read_parquet(folder / "part-1.parquet")
    frame["age"] = frame["age"].astype(str)
    frame.to_parquet(folder / "part-1.parquet", index=False)
    return "part-1.parquet: column 'age' is string here but int64 in"


def missing_key(folder):
    pd.read_parquet(folder / "part-2.parquet").drop(columns="row_id").to_parquet(folder / "part-2.parquet",
                                                                                index=False)
    return "part-2.parquet: no column 'row_id' (the split key)"


@pytest.mark.parametrize("case", ["empty glob", "different schemas", "key missing in a shard", "csv without header"])
def test_bad_shards(case, tmp_path, adult_slice, capsys):
    """One line naming the file and column, exit 2, no run directory left."""
    folder = write_shards(adult_slice.head(300), tmp_path / "shards", suffix="csv" if "csv" in case else "parquet")
    path = str(folder)
    if case == "empty glob":
        path, expected = str(folder / "*.pq"), f"no Parquet or CSV files (.parquet, .pq, .csv) match {folder}"
    elif case == "different schemas":
        expected = bad_schema(folder)
    elif case == "key missing in a shard":
        expected = missing_key(folder)
    else:
        lines = (folder / "part-0.csv").read_text().splitlines()
        (folder / "part-0.csv").write_text("\n".join(lines[1:]) + "\n")
        expected = "part-0.csv: no column 'row_id' (the split key); the first line"
    config = write_yaml(tmp_path / "config.yaml", tiny_config(path, data__streaming=True, data__split=KEYED_SPLIT))
    run_dir = tmp_path / "run"
    assert main(["train", "--config", str(config), "--run-dir", str(run_dir)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith("error: ") and expected in err[-1], err[-1]
    assert "Traceback" not in "\n".join(err)
    assert not run_dir.exists()


def test_smote_refused_with_streaming(shards):
    from mtl.errors import MtlError

    with pytest.raises(MtlError, match="training.smote: SMOTE resamples the whole training table in memory; it is "
                                       "not available with data.streaming"):
        keyed_config(shards, True, training__smote={"task": "income"})
