"""The data stage on real Adult rows: missing labels, splits, label fractions, bad input."""

import numpy as np
import pytest
from conftest import tiny_config

from mtl.config import config_from_dict
from mtl.data import prepare, read_table
from mtl.errors import MtlError
from mtl.tasks import build_tasks


def prepared(frame, **overrides):
    config = config_from_dict(tiny_config(**overrides))
    return prepare(frame, config, build_tasks(config.tasks), "test data"), config


def test_missing_labels_are_masked_and_unlabelled_rows_dropped(adult_slice):
    frame = adult_slice.copy()
    frame.loc[0:99, "income"] = np.nan  # no income label on 100 rows
    frame.loc[50:149, "hours_per_week"] = np.nan  # rows 50-99 carry no label at all
    frame["income"] = frame["income"].astype(object)
    frame.loc[200:209, "income"] = "  "  # blank is missing too
    data, _ = prepared(frame)
    splits = data.splits().values()
    assert sum(len(s) for s in splits) == 3000 - 50
    assert sum(int(s.labelled("income").sum()) for s in splits) == 3000 - 110
    assert sum(int(s.labelled("hours_per_week").sum()) for s in splits) == 3000 - 100
    for split in splits:
        for name in ("income", "hours_per_week"):
            assert np.isfinite(split.labels[name]).all()
            assert (split.labels[name][~split.labelled(name)] == 0).all()


def test_split_is_stratified_reproducible_and_disjoint(adult_slice):
    data, _ = prepared(adult_slice)
    again, _ = prepared(adult_slice)
    assert (len(data.train), len(data.val), len(data.test)) == (2400, 300, 300)
    rows = [set(s.rows) for s in data.splits().values()]
    assert not (rows[0] & rows[1]) and not (rows[0] & rows[2]) and not (rows[1] & rows[2])
    np.testing.assert_array_equal(data.test.rows, again.test.rows)
    rate = (adult_slice["income"] == ">50K").mean()
    for split in data.splits().values():
        assert abs(split.labels["income"].mean() - rate) < 0.01


def test_label_fraction_keeps_that_share_of_training_labels(adult_slice):
    data, _ = prepared(adult_slice, tasks__income__label_fraction=0.05)
    assert int(data.train.labelled("income").sum()) == 120  # 5 % of 2,400
    assert int(data.train.labelled("hours_per_week").sum()) == 2400
    assert int(data.val.labelled("income").sum()) == 300  # never on val/test


def test_balanced_class_weights(adult_slice):
    data, _ = prepared(adult_slice, tasks__income__class_weight="balanced")
    y, w = data.train.labels["income"], data.train.weights["income"]
    positives = y == 1
    assert w[positives].sum() == pytest.approx(w[~positives].sum(), rel=1e-4)
    assert (data.val.weights["income"] == 1).all()


def test_regression_labels_stay_in_original_units(adult_slice):
    data, _ = prepared(adult_slice)
    train_hours = adult_slice.loc[data.train.rows, "hours_per_week"].to_numpy()
    np.testing.assert_allclose(data.train.labels["hours_per_week"], train_hours)


def test_missing_column_is_named(adult_slice):
    with pytest.raises(MtlError, match=r"data.features.numeric: column 'agee' not found in test data \(did you mean"):
        prepared(adult_slice, data__features={"numeric": ["agee"], "categorical": []})


def test_non_numeric_value_names_column_and_row(adult_slice):
    frame = adult_slice.copy()
    frame["age"] = frame["age"].astype(object)
    frame.loc[16, "age"] = "forty"
    message = r"data.features.numeric \(test data\): column 'age', row 17: 'forty' is not a number"
    with pytest.raises(MtlError, match=message):
        prepared(frame)


def test_binary_column_with_more_than_two_values_needs_positive(adult_slice):
    with pytest.raises(MtlError, match=r"tasks.race .*must hold two values, found 5.*set tasks.race.positive"):
        prepared(adult_slice, tasks__race={"type": "binary", "column": "race"})


def test_label_outside_training_classes_names_the_row(adult_slice):
    frame = adult_slice.copy()
    data, _ = prepared(frame)
    row = int(data.test.rows[3])
    frame.loc[row, "race"] = "Martian"
    with pytest.raises(MtlError, match=rf"tasks.race .*row {row + 1}: label 'Martian' is not one of the training"):
        prepared(frame, tasks__race={"type": "multiclass", "column": "race"})


def test_task_without_training_labels(adult_slice):
    frame = adult_slice.copy()
    frame["spare"] = np.nan
    frame.loc[0, "spare"] = 3.0  # one label, which lands in val or test
    data, _ = prepared(frame)
    if 0 in set(data.train.rows):
        frame.loc[0, "spare"] = np.nan
        frame.loc[int(data.test.rows[0]), "spare"] = 3.0
    with pytest.raises(MtlError, match=r"tasks.spare: no labels for this task in the training split"):
        prepared(frame, tasks__spare={"type": "regression", "column": "spare"})


def test_file_errors(tmp_path):
    with pytest.raises(MtlError, match="data.path: file not found"):
        read_table(path=str(tmp_path / "none.csv"))
    empty = tmp_path / "empty.csv"
    empty.write_text("")
    with pytest.raises(MtlError, match=r"data.path: .*empty.csv is empty"):
        read_table(path=str(empty))
    header = tmp_path / "header.csv"
    header.write_text("age,income\n")
    with pytest.raises(MtlError, match="has no data rows"):
        read_table(path=str(header))
    bad = tmp_path / "bad.parquet"
    bad.write_text("not parquet")
    with pytest.raises(MtlError, match=r"data.path: cannot read .*bad.parquet as parquet"):
        read_table(path=str(bad))


def test_reads_csv_parquet_and_jsonl_alike(tmp_path, adult_slice):
    head = adult_slice.head(50)
    head.to_csv(tmp_path / "a.csv", index=False)
    head.to_parquet(tmp_path / "a.parquet")
    head.to_json(tmp_path / "a.jsonl", orient="records", lines=True)
    config = config_from_dict(tiny_config(str(tmp_path / "a.csv"), data__split={"train": 0.6, "val": 0.2,
                                                                                "test": 0.2}))
    prepared = []
    for ext in ("csv", "parquet", "jsonl"):  # cells as written, parsed by the same rule: the same arrays
        frame, source = read_table(path=str(tmp_path / f"a.{ext}"))
        prepared.append(prepare(frame, config, build_tasks(config.tasks), source))
    for data in prepared[1:]:
        for split in ("train", "val", "test"):
            ours, theirs = getattr(prepared[0], split), getattr(data, split)
            for column, values in ours.features.items():
                np.testing.assert_array_equal(values, theirs.features[column])
            for task in ours.labels:
                np.testing.assert_array_equal(ours.labels[task], theirs.labels[task])
