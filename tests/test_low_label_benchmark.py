"""benchmarks/low_label.py: a quick real run gives the expected table, and the summary's arithmetic is right."""

from __future__ import annotations

import json

import pytest
from conftest import benchmark_module


@pytest.fixture(scope="module")
def low_label():
    return benchmark_module("low_label")


def test_quick_run_prints_the_expected_rows(low_label, tmp_path, capsys):
    out = tmp_path / "low_label.json"
    result = low_label.main(["--quick", "--out", str(out)])
    printed = capsys.readouterr().out

    lines = [line for line in result["table"].splitlines() if line.startswith("| ")]
    assert [line.split(" | ")[0] for line in lines] == [
        "| variant", "| single-task (income only)", "| MTL, fixed equal weights"]
    assert "AUC 5% labels" in lines[0]
    assert "0 (reference)" in lines[1]
    assert "(1/1)" in lines[2] or "(0/1)" in lines[2]  # Delta m against single-task, paired by seed
    assert result["table"] in printed
    raw = json.loads(out.read_text())
    assert [(r["variant"], r["fraction"], r["seed"]) for r in raw["records"]] == [
        ("single", 0.05, 0), ("equal", 0.05, 0)]
    assert all(0.5 < r["test_auc"] < 1 and "error" not in r for r in raw["records"])


def test_summary_pairs_by_seed_and_selects_schedules_on_validation(low_label):
    def rec(variant: str, seed: int, test: float, val: float = 0.5) -> dict:
        return {"variant": variant, "fraction": 0.01, "seed": seed, "test_auc": test, "val_auc": val,
                "epochs": 3, "seconds": 1.0, "cpu_seconds": 1.0}

    records = [rec("single", 0, 0.80), rec("single", 1, 0.90), rec("equal", 0, 0.84), rec("equal", 1, 0.90),
               rec("sched_ramp", 0, 0.70, val=0.9), rec("sched_anneal", 0, 0.99, val=0.1),
               rec("sched_light", 0, 0.80, val=0.2), rec("sched_ramp", 1, 0.91, val=0.1),
               rec("sched_anneal", 1, 0.95, val=0.8), rec("sched_light", 1, 0.99, val=0.3)]
    summary = low_label.summarise(records)

    equal = summary["equal"][0.01]
    assert equal["delta_m"][0] == pytest.approx((5.0 + 0.0) / 2)  # +5 % on seed 0, 0 on seed 1
    assert equal["delta_auc"][0] == pytest.approx(0.02) and equal["wins"] == (1, 2)
    best = summary["best_schedule"][0.01]  # validation picks ramp (seed 0) and anneal (seed 1), not the test-best
    assert best["auc"][0] == pytest.approx((0.70 + 0.95) / 2)
    assert best["chosen"] == {"sched_ramp": 1, "sched_anneal": 1, "sched_light": 0}
    assert list(summary) == ["single", "equal", "sched_ramp", "sched_anneal", "sched_light", "best_schedule"]
