"""``mtl predict`` on a run directory, an export version folder and an export base."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from conftest import run_cli

from mtl.cli import main
from mtl.serving import load


def _predict(capsys: pytest.CaptureFixture, *args: str) -> pd.DataFrame:
    import io

    assert main(["predict", *args]) == 0
    return pd.read_csv(io.StringIO(capsys.readouterr().out))


@pytest.fixture(scope="module")
def rows(exported_model: dict) -> pd.DataFrame:
    return exported_model["test_frame"].head(20).reset_index(drop=True)


def test_predict_csv_matches_the_signature_and_labels_use_the_threshold(exported_model: dict, rows: pd.DataFrame,
                                                                        tmp_path: Path,
                                                                        capsys: pytest.CaptureFixture) -> None:
    rows.to_csv(tmp_path / "rows.csv", index=False)
    table = _predict(capsys, "--model", str(exported_model["base"]), "--input", str(tmp_path / "rows.csv"))
    classes = exported_model["result"].tasks["race"].classes_
    assert list(table.columns) == ["income", "income_label", "hours_per_week",
                                   *[f"race_{c}" for c in classes], "race_label"]
    raw = load(exported_model["version_dir"]).predict({c: rows[c].to_numpy() for c in rows.columns})
    np.testing.assert_allclose(table["income"], raw["income"][:, 0], atol=1e-6)
    np.testing.assert_allclose(table["hours_per_week"], raw["hours_per_week"][:, 0], atol=1e-4)
    np.testing.assert_allclose(table[[f"race_{c}" for c in classes]], raw["race"], atol=1e-6)
    expected = np.where(raw["income"][:, 0] >= 0.4, ">50K", "<=50K")  # the config's threshold, 0.4
    assert table["income_label"].tolist() == expected.tolist()
    assert table["race_label"].tolist() == [classes[i] for i in raw["race"].argmax(axis=1)]


def test_run_dir_version_folder_and_base_agree(exported_model: dict, rows: pd.DataFrame, tmp_path: Path,
                                               capsys: pytest.CaptureFixture) -> None:
    path = tmp_path / "rows.jsonl"
    rows.to_json(path, orient="records", lines=True)
    tables = [_predict(capsys, "--model", str(m), "--input", str(path), "--task", "income")
              for m in (exported_model["run_dir"], exported_model["version_dir"], exported_model["base"])]
    assert list(tables[0].columns) == ["income", "income_label"]
    for other in tables[1:]:
        np.testing.assert_allclose(other["income"], tables[0]["income"], atol=1e-6)


def test_single_row_and_output_file(exported_model: dict, rows: pd.DataFrame, tmp_path: Path,
                                    capsys: pytest.CaptureFixture) -> None:
    record = {k: (v.item() if hasattr(v, "item") else v) for k, v in rows.iloc[0].to_dict().items()}
    single = _predict(capsys, "--model", str(exported_model["base"]), "--row", json.dumps(record))
    assert len(single) == 1
    out = tmp_path / "preds.csv"
    assert main(["predict", "--model", str(exported_model["base"]), "--row", json.dumps(record),
                 "--output", str(out)]) == 0
    written = pd.read_csv(out)
    np.testing.assert_allclose(written["income"], single["income"])
    assert [p.name for p in tmp_path.iterdir()] == ["preds.csv"]


@pytest.mark.parametrize(("change", "message"), [
    (lambda r: r.drop(columns=["age", "workclass"]), "missing column(s) ['age', 'workclass']"),
    (lambda r: r.assign(colour="red"), "unexpected column(s) ['colour']"),
    (lambda r: r.assign(age="forty"), "column 'age', row 1: 'forty' is not a number"),
])
def test_bad_columns_are_named(exported_model: dict, rows: pd.DataFrame, tmp_path: Path,
                               capsys: pytest.CaptureFixture, change, message: str) -> None:  # noqa: ANN001
    path = tmp_path / "rows.csv"
    change(rows.head(3)).to_csv(path, index=False)
    assert main(["predict", "--model", str(exported_model["base"]), "--input", str(path)]) == 2
    err = capsys.readouterr().err
    assert f"error: --input {path}: " in err and message in err


def test_cli_errors_are_one_line(exported_model: dict, tmp_path: Path) -> None:
    done = run_cli("predict", "--model", str(tmp_path), "--row", '{"age": 39}')
    assert done.returncode == 2
    assert done.stderr.strip().splitlines()[-1].startswith("error: --model: ")
    bad = run_cli("predict", "--model", str(exported_model["base"]), "--row", '{"age": 39')
    assert bad.returncode == 2 and "error: --row: not valid JSON" in bad.stderr
    assert "Traceback" not in done.stderr + bad.stderr
