"""``benchmarks/encoder_cache.py``'s table and comparison (the run itself takes minutes of MiniLM inference)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
from conftest import benchmark_module


def test_the_table_keeps_2_percent_of_training_labels_and_the_runs_differ_only_in_the_cache(tmp_path: Path) -> None:
    bench = benchmark_module("encoder_cache")
    sizes = bench.write_table(tmp_path / "reviews.parquet", max_rows=500, fraction=0.02)
    table = pd.read_parquet(tmp_path / "reviews.parquet")
    train = table[table["split"] == "train"]
    assert sizes == {"rows": 500, "train": 400, "labelled": 8, "distinct_texts": table["review_text"].nunique()}
    assert train["recommended_ind"].notna().sum() == 8 and table.loc[table["split"] != "train",
                                                                     "recommended_ind"].notna().all()
    on, off = (bench.run_config("t.parquet", cache, "c", 3, 128) for cache in (True, False))
    assert on["model"]["backbone"].pop("cache") and not off["model"]["backbone"].pop("cache")
    assert on == off and on["model"]["backbone"]["trainable"] is False
    metrics = {"test": {"recommended": {"auc": 0.7, "n": 10}}}
    assert bench.largest_difference(metrics, {"test": {"recommended": {"auc": 0.70002, "n": 10}}}) == \
        np.float64(0.70002 - 0.7)


def test_the_label_fraction_table_keeps_every_row_and_label_and_the_config_masks_them(tmp_path: Path) -> None:
    """The issue's slow case: every training row stays, ``label_fraction`` keeps 2 % of the labels in mtl."""
    bench = benchmark_module("encoder_cache")
    bench.write_table(tmp_path / "reviews.parquet", max_rows=500, fraction=0.02, blank=False)
    assert pd.read_parquet(tmp_path / "reviews.parquet")["recommended_ind"].notna().all()
    before = bench.run_config("t.parquet", False, "c", 3, 128, skip=False, label_fraction=0.02)
    assert before["tasks"]["recommended"]["label_fraction"] == 0.02
    assert before["training"]["skip_unlabelled_rows"] is False
