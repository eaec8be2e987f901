"""Training iterates only over rows that carry a label after label_fraction (``training.skip_unlabelled_rows``); the
log says how many were set aside; evaluation is unchanged. In memory and streamed."""

from __future__ import annotations

import logging

import numpy as np
import pytest
from conftest import tiny_config

import mtl
from mtl.config import config_from_dict
from mtl.data import load_data

SINGLE = {"income": {"type": "binary", "column": "income", "positive": ">50K", "label_fraction": 0.3}}


@pytest.fixture(scope="module")
def adult_csv(adult_slice, tmp_path_factory):
    path = tmp_path_factory.mktemp("skip") / "adult.csv"
    adult_slice.head(1500).to_csv(path, index=False)
    return str(path)


def _train(path: str, tmp_path, name: str, **overrides):
    raw = tiny_config(path, tasks=SINGLE, training__epochs=2, **overrides)
    return mtl.train(config_from_dict(raw), tmp_path / name)


def test_rows_without_a_label_are_set_aside_and_logged(adult_csv, tmp_path, caplog):
    with caplog.at_level(logging.INFO, logger="mtl"):
        result = _train(adult_csv, tmp_path, "run")
    train = result.data.train
    labelled = int(train.labelled("income").sum())
    assert 0 < labelled < len(train) * 0.5
    lines = [r.getMessage() for r in caplog.records if "set aside" in r.getMessage()]
    steps, before = -(-labelled // 128), -(-len(train) // 128)
    assert lines == [f"training iterates over {labelled} of {len(train)} training rows: {len(train) - labelled} "
                     "carry no label after label_fraction and SMOTE and are set aside (evaluation is unchanged); "
                     f"{steps} step(s) per epoch instead of {before}: raise training.epochs to keep the optimizer "
                     "steps"]
    assert result.metrics["test"]["income"]["n"] == int(result.data.test.labelled("income").sum()) > 0


def test_skipping_changes_nothing_when_one_batch_holds_the_split(adult_csv, tmp_path):
    """With the whole split in one batch (no dropout, no batch norm) a row without a label adds nothing to the
    masked loss or its gradient: the runs with and without skipping end with the same metrics."""
    skipped = _train(adult_csv, tmp_path, "skipped", training__batch_size=4096)
    kept = _train(adult_csv, tmp_path, "kept", training__batch_size=4096, training__skip_unlabelled_rows=False)
    for split in ("val", "test"):
        assert skipped.metrics[split]["income"] == pytest.approx(kept.metrics[split]["income"], rel=1e-4, abs=1e-5)
    assert skipped.metrics["test"]["income"]["n"] == kept.metrics["test"]["income"]["n"]


def test_the_stream_skips_the_same_rows(adult_slice, tmp_path, caplog):
    """A streamed run trains on the rows the in-memory stage keeps (the same key, the same label_fraction)."""
    shards = tmp_path / "shards"
    shards.mkdir()
    frame = adult_slice.head(1200).assign(row_id=np.arange(1200))
    for number, part in enumerate(np.array_split(np.arange(len(frame)), 3)):
        frame.iloc[part].to_parquet(shards / f"part-{number}.parquet", index=False)
    overrides = {"tasks": SINGLE, "data__split": {"train": 0.8, "val": 0.1, "test": 0.1, "key": "row_id"}}
    memory, _ = load_data(config_from_dict(tiny_config(str(shards), **overrides)))
    with caplog.at_level(logging.INFO, logger="mtl"):
        result = mtl.train(config_from_dict(tiny_config(str(shards), data__streaming=True, training__epochs=1,
                                                        **overrides)), tmp_path / "run")
    streamed = result.data
    labelled = int(memory.train.labelled("income").sum())
    assert streamed.train.teaching_count == labelled < len(streamed.train)
    assert any(f"training iterates over {labelled} of {len(streamed.train)} training rows" in r.getMessage()
               for r in caplog.records)
    dataset = streamed.dataset("train", 100, shuffle=True, seed=3, skip_unlabelled=True)
    weights = np.concatenate([batch[2]["income"].numpy() for batch in dataset])
    assert len(weights) == labelled and (weights > 0).all()
    assert int(dataset.cardinality()) == -(-labelled // 100)
