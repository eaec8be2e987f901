"""Smoke test of ``benchmarks/low_label_text.py``: its frozen-MiniLM part on 300 real reviews, one seed."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from conftest import benchmark_module


def _benchmark():
    return benchmark_module("low_label_text")


def test_label_subsets_are_stratified_and_nested() -> None:
    bench = _benchmark()
    labels = np.array([0] * 100 + [1] * 400)
    small, large = bench.label_subset(labels, 0.02, 3), bench.label_subset(labels, 0.05, 3)
    assert set(small) <= set(large)
    assert sorted(np.bincount(labels[small]).tolist()) == [2, 8]
    assert len(bench.label_subset(labels, 1.0, 3)) == 500
    assert set(bench.label_subset(labels, 0.02, 4)) != set(small)


@pytest.mark.extended  # minutes of MiniLM: the benchmark's smoke run is opt-in
def test_quick_run_prints_the_table(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    bench = _benchmark()
    out = tmp_path / "runs.json"
    code = bench.main(["--quick", "--max-rows", "300", "--skip-finetune", "--cache", str(tmp_path / "cache"),
                       "--out", str(out)])
    assert code == 0
    printed = capsys.readouterr().out
    assert "frozen MiniLM" in printed
    rows = [line for line in printed.splitlines() if line.startswith("| 5%") or line.startswith("| 100%")]
    assert [row.split("|")[2].strip() for row in rows] == ["single", "mtl", "mtl, rating head", "control"] * 2
    result = json.loads(out.read_text())
    assert len(result["runs"]) == 8  # 6 trained, and the mtl runs' rating head scored as a recommended score
    assert all(0.0 <= run["auc"] <= 1.0 and run["epochs_run"] >= 1 for run in result["runs"])
    assert {run["labels"] for run in result["runs"] if run["fraction"] == 0.05} == {12}  # 5 % of 240, per class
    # at 100 % labels the control (rating weight 0) is the single-task model: same rows, init and steps
    at_full = {run["variant"]: run["auc"] for run in result["runs"] if run["fraction"] == 1.0}
    assert at_full["control"] == pytest.approx(at_full["single"], abs=1e-6)
    assert list((tmp_path / "cache").glob("*.npy"))  # the embeddings were cached


def test_linked_variant_and_converged_fine_tuning_configs(tmp_path: Path) -> None:
    bench = _benchmark()
    linked = bench.variant_tasks("linked")
    assert linked["recommended"]["inputs"] == ["rating"] and linked["rating"]["weight"] == 1.0
    assert "inputs" not in bench.variant_tasks("mtl")["recommended"]
    only = bench.variant_tasks("linked_only")["recommended"]
    assert only["inputs"] == ["rating"] and only["reads_trunk"] is False and "reads_trunk" not in linked["recommended"]
    frozen = bench.frozen_text_config("linked", 3, 30, 4, 128, tmp_path / "cache")
    assert frozen["model"]["backbone"] == {"preset": "all-MiniLM-L6-v2", "trainable": False,
                                           "cache_dir": str(tmp_path / "cache")}
    assert frozen["data"]["features"] == {"text": "review_text"} and frozen["tasks"] == linked
    converged = bench.finetune_config("single", 0, 64, converge=(10, 2))["training"]
    assert converged["epochs"] == 10 and converged["early_stopping"]["monitor"] == "val_recommended_auc"
    assert bench.finetune_config("single", 0, 64)["training"]["epochs"] == 1
    for variant in ("linked", "linked_only"):
        with pytest.raises(SystemExit):  # the vector path builds its own model, without task links
            bench.parse_args(["--variants", f"single,{variant}"])
    assert bench.parse_args(["--variants", "single,linked", "--frozen-through-mtl"]).variants == ["single", "linked"]
