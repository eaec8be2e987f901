"""``mtl evaluate`` (a run on its own test rows reproduces its metrics.json), ``mtl predict --keep/--threshold``
with label columns in the file, ``mtl compare`` and what a run records for comparisons."""

from __future__ import annotations

import io
import json
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml

from mtl.cli import main
from mtl.evaluation import compare_runs, format_comparison, multitask_delta, read_run


@pytest.fixture(scope="module")
def test_rows(exported_model: dict, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The run's own test rows (raw cells, labels included) as a Parquet file, with an ID column."""
    result = exported_model["result"]
    source = pd.read_csv(exported_model["run_dir"].parent / "adult.csv")
    rows = source.iloc[result.data.test.rows].copy()
    rows.insert(0, "row_id", [f"r{i}" for i in result.data.test.rows])
    path = tmp_path_factory.mktemp("evaluate") / "test_rows.parquet"
    rows.to_parquet(path, index=False)
    return path


def _cli(capsys: pytest.CaptureFixture, *args: str) -> tuple[int, str, str]:
    code = main(list(args))
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def test_evaluate_a_run_on_its_test_rows_reproduces_its_metrics(exported_model: dict, test_rows: Path,
                                                                tmp_path: Path, capsys) -> None:
    run = exported_model["run_dir"]
    code, out, err = _cli(capsys, "evaluate", str(run), "--data", str(test_rows), "--out", str(tmp_path / "ev"))
    assert code == 0, err
    written = json.loads((tmp_path / "ev" / "metrics.json").read_text())
    assert written["metrics"] == json.loads((run / "metrics.json").read_text())["test"]
    assert "income: auc" in out and {p.name for p in (tmp_path / "ev" / "plots").iterdir()} == {
        "roc_income.png", "pred_vs_true_hours_per_week.png", "confusion_race.png"}


def test_evaluate_an_export_agrees_with_its_run(exported_model: dict, test_rows: Path, tmp_path: Path,
                                                capsys) -> None:
    code, _, err = _cli(capsys, "evaluate", str(exported_model["base"]), "--data", str(test_rows), "--out",
                        str(tmp_path / "ev"))
    assert code == 0, err
    written = json.loads((tmp_path / "ev" / "metrics.json").read_text())["metrics"]
    expected = json.loads((exported_model["run_dir"] / "metrics.json").read_text())["test"]
    assert written.keys() == expected.keys()
    for task, scores in expected.items():
        assert written[task] == pytest.approx(scores, rel=1e-4, abs=1e-5), task


def test_evaluate_bad_input_is_one_line(exported_model: dict, test_rows: Path, tmp_path: Path, capsys) -> None:
    rows = pd.read_parquet(test_rows).drop(columns=["age"])
    rows.to_csv(tmp_path / "no_age.csv", index=False)
    code, _, err = _cli(capsys, "evaluate", str(exported_model["run_dir"]), "--data", str(tmp_path / "no_age.csv"))
    assert code == 2 and err.startswith("error: --data") and "['age']" in err and len(err.splitlines()) == 1
    code, _, err = _cli(capsys, "evaluate", str(tmp_path), "--data", str(test_rows))
    assert code == 2 and "neither a finished run directory" in err


def test_predict_keeps_id_columns_ignores_labels_and_takes_a_threshold(exported_model: dict, test_rows: Path,
                                                                       tmp_path: Path, capsys) -> None:
    from conftest import ADULT_CATEGORICAL, ADULT_NUMERIC

    rows = pd.read_parquet(test_rows)[["row_id", *ADULT_NUMERIC, *ADULT_CATEGORICAL, "income", "race",
                                       "hours_per_week"]]
    rows.to_csv(tmp_path / "rows.csv", index=False)
    code, out, err = _cli(capsys, "predict", "--model", str(exported_model["base"]), "--input",
                          str(tmp_path / "rows.csv"), "--keep", "row_id", "--threshold", "income=0.9")
    assert code == 0, err
    assert "label column(s)" in err and "'income'" in err and "'race'" in err
    table = pd.read_csv(io.StringIO(out))
    assert list(table.columns[:3]) == ["row_id", "income", "income_label"]
    assert table["row_id"].tolist() == rows["row_id"].tolist()
    assert table["income_label"].tolist() == np.where(table["income"] >= 0.9, ">50K", "<=50K").tolist()
    code, _, err = _cli(capsys, "predict", "--model", str(exported_model["base"]), "--input", str(test_rows),
                        "--threshold", "race=0.3")
    assert code == 2 and "error: --threshold race=0.3: task 'race' (multiclass) has no threshold" in err
    code, _, err = _cli(capsys, "predict", "--model", str(exported_model["base"]), "--input", str(test_rows),
                        "--keep", "nope")
    assert code == 2 and err.startswith("error: --keep: column(s) ['nope'] not in the rows")


def _variant(run: Path, target: Path, factor: float, learning_rate: float) -> Path:
    """A copy of ``run`` whose test metrics are multiplied by ``factor`` and whose learning rate differs."""
    shutil.copytree(run, target, ignore=shutil.ignore_patterns("tensorboard", "checkpoints", "plots", "*.keras"))
    metrics = json.loads((target / "metrics.json").read_text())
    metrics["test"] = {task: {m: (v if m == "n" else v * factor) for m, v in scores.items()}
                       for task, scores in metrics["test"].items()}
    (target / "metrics.json").write_text(json.dumps(metrics))
    config = yaml.safe_load((target / "config.yaml").read_text())
    config["training"]["learning_rate"] = learning_rate
    (target / "config.yaml").write_text(yaml.safe_dump(config))
    return target


def test_compare_table_config_differences_and_multitask_delta(exported_model: dict, tmp_path: Path, capsys) -> None:
    run = exported_model["run_dir"]
    better = _variant(run, tmp_path / "better", 1.1, 0.01)
    base = read_run(run)
    # every metric 10 % higher: +10 % where higher is better, -10 % where lower is better (rmse, mae, mape)
    per_task = {"income": 0.1, "race": 0.1, "hours_per_week": (0.1 - 0.1 - 0.1 - 0.1) / 4}
    assert multitask_delta(read_run(better), base) == pytest.approx(100 * np.mean(list(per_task.values())))
    comparison = compare_runs([better], [run])
    assert list(comparison.metrics.columns) == ["run", "better"]
    assert comparison.metrics.loc["delta_m (%)", "run"] == pytest.approx(0.0)
    assert list(comparison.config.index) == ["training.learning_rate"]
    markdown = format_comparison(comparison, "markdown")
    assert "| training.learning_rate | 0.001 | 0.01 |" in markdown and "| income.auc |" in markdown
    code, out, err = _cli(capsys, "compare", str(run), str(better), "--baseline", str(run), "--format", "csv")
    assert code == 0, err
    table = pd.read_csv(io.StringIO(out), index_col="row", dtype=str)
    assert float(table.loc["delta_m (%)", "better"]) == pytest.approx(
        comparison.metrics.loc["delta_m (%)", "better"])
    assert table.loc["config.training.learning_rate", "better"] == "0.01"
    code, _, err = _cli(capsys, "compare", str(tmp_path))
    assert code == 2 and "not a finished run directory" in err


def test_a_run_records_model_summary_and_hparams(exported_model: dict) -> None:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    run = exported_model["run_dir"]
    summary = (run / "model_summary.txt").read_text()
    total = exported_model["result"].model.count_params()
    assert summary.startswith(f"parameters: {total:,} (") and "income" in summary
    events = EventAccumulator(str(run / "tensorboard" / "hparams"), size_guidance={"tensors": 0})
    events.Reload()
    tags = events.Tags()["tensors"]
    assert "_hparams_/session_start_info" in tags and "test/income/auc" in tags
    expected = json.loads((run / "metrics.json").read_text())["test"]["income"]["auc"]
    import tensorflow as tf

    value = float(tf.make_ndarray(events.Tensors("test/income/auc")[0].tensor_proto))
    assert value == pytest.approx(expected, rel=1e-6)
