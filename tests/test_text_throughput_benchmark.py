"""Smoke test of ``benchmarks/text_throughput.py``: a tiny real run (MiniLM loaded twice) and its tables."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import pytest
from conftest import benchmark_module


@pytest.fixture()
def bench(monkeypatch: pytest.MonkeyPatch) -> Any:
    """The benchmark module, importable by name so that its spawned workers can import it too."""
    monkeypatch.delenv("MTL_REFERENCE_PYTHON", raising=False)
    return benchmark_module("text_throughput")


@pytest.mark.extended  # minutes of MiniLM: the benchmark's smoke run is opt-in
def test_quick_run_reports_embedding_and_training(bench: Any, tmp_path: Path,
                                                  capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "results.json"
    results = bench.main(["--quick", "--precisions", "fp32", "--trim", "on", "--json", str(out),
                          "--log-dir", str(tmp_path / "logs")])
    printed = capsys.readouterr().out
    assert "reference skipped" in printed
    for part in ("embedding", "training"):
        row = next(line for line in printed.splitlines() if line.startswith(f"| {part} | fp32, trim |"))
        speed = float(row.split("|")[3].replace(",", ""))
        assert speed > 0
        r = results[part]["fp32, trim"]
        assert r["rows"] == (64 if part == "embedding" else 2 * bench.BATCH_SIZE)
        assert r["dtype_policy"] == "float32" and r["peak_rss"] > 100
    assert results["embedding"]["fp32, trim"]["min_cosine"] == pytest.approx(1.0)
    assert json.loads(out.read_text())["results"]["training"]["fp32, trim"]["max_length"] == 128
    assert sys.modules["text_throughput"] is bench


def fake(speed: float, cpu: float | None = None) -> dict:
    r = {"sentences_per_s": speed, "min": speed, "max": speed, "peak_rss": 1000.0}
    return r if cpu is None else {**r, "per_cpu_s": cpu}


def test_tables_show_every_variant_and_the_ratios(bench: Any) -> None:
    ref2, ref1 = bench.reference_name(2), bench.reference_name(1)
    results = {
        "embedding": {"fp32, trim": fake(100, 50), "bf16, trim": fake(120, 60), "fp32, pad": fake(40, 20),
                      "bf16, pad": fake(60, 30), ref2: fake(50), ref1: fake(80)},
        "training": {"fp32, trim": fake(10, 5), "fp32, pad": fake(5, 4)},
    }
    text = bench.table(results)
    assert "| embedding | fp32, trim | 100.0 | 100.0–100.0 | 50.0 | 1,000 | 1.25 | – |" in text  # vs the faster ref
    assert f"| embedding | {ref1} | 80.0 |" in text
    assert "| embedding | trim / pad, fp32 | **2.50** | 2.50 |" in text
    assert "| embedding | bf16 / fp32, pad | **1.50** | 1.50 |" in text
    assert f"| embedding | mtl fp32, trim / {ref2} | **2.00** | – |" in text
    assert "| training | trim / pad, fp32 | **2.00** | 1.25 |" in text
    assert not any(line.startswith("| training | bf16") for line in text.splitlines())  # none measured
