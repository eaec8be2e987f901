"""End to end on the real all-MiniLM-L6-v2 weights: fine-tune intent + slots on real ATIS, export, predict."""

import pandas as pd
import pytest
from conftest import run_cli, text_config, write_jsonl

import mtl
from mtl.config import config_from_dict
from mtl.export import export_run


@pytest.mark.extended  # CI runs real MiniLM through docs/tabular-and-text.md and the fine-tuning defaults test
def test_minilm_learns_atis_and_serves_word_tags(tmp_path, atis_frame):
    frame = pd.concat([atis_frame[atis_frame["split"] == s].head(n) for s, n in (("train", 600), ("test", 150))],
                      ignore_index=True)
    data = write_jsonl(tmp_path / "atis.jsonl", frame)
    raw = text_config(str(data), model__backbone={"preset": "all-MiniLM-L6-v2"}, data__max_length=48,
                      training__epochs=3, training__learning_rate=2e-4, training__optimizer="adamw",
                      training__bucket_by_length=True)
    result = mtl.train(config_from_dict(raw), tmp_path / "run")
    test = result.metrics["test"]
    majority = frame[frame["split"] == "test"]["intent"].value_counts(normalize=True).iloc[0]
    assert test["intent"]["accuracy"] > majority + 0.05
    assert test["slots"]["f1"] > 0.7
    version = export_run(tmp_path / "run", tmp_path / "exports", "atis")
    done = run_cli("predict", "--model", str(version), "--text", "show me flights from boston to denver",
                   "--task", "slots")
    assert done.returncode == 0, done.stderr
    assert "SLOTS Output: ['O', 'O', 'O', 'O', 'B-fromloc.city_name', 'O', 'B-toloc.city_name']" in done.stdout
