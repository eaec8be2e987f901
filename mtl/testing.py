"""A test harness for feature kinds and task types: one call checks that every path gives the same predictions.

Modelled on keras-hub's ``run_task_test``: a new feature kind or task type is tested by one call of
``run_parity_test`` with a small slice of real data and a config that uses it. The call checks, in order:

1. the config round trip (``config_from_dict`` -> ``dump_config`` -> YAML -> ``config_from_dict`` is stable);
2. fit (``mtl.train`` for the config's epochs, on the rows written as a CSV, TSV, Parquet or JSON Lines file);
3. reload (``mtl.load_model(run_dir / "model.keras").predict_raw`` on a DataFrame and on a dict of lists);
4. export (``mtl.export.export_run``) and the Python serving API (``mtl.serving.load(...).predict_frame``);
5. ``mtl predict`` on CSV, JSON Lines and Parquet files (on a version folder, a run directory and an export
   base, ``--output``) and ``--row`` (in process; one real subprocess when asked);
6. the REST server (``mtl.serving.rest.create_app``) in the row (``instances``) and columnar (``inputs``) formats;
7. the Streamlit app (``app.py`` through ``streamlit.testing.v1.AppTest``) on one row.

Every path is fed the ORIGINAL column names and the raw values as each format holds them (a vector column as a
JSON list text in CSV, a list in JSON and Parquet); all numeric outputs agree within ``tolerance`` and all labels and
tags are equal. The function raises ``AssertionError`` naming the path that disagrees and returns what it computed,
so a test can check more.
"""

from __future__ import annotations

import contextlib
import copy
import csv
import io
import json
import math
import os
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

__all__ = ["ParityResult", "feature_columns", "json_value", "read_prediction_csv", "run_parity_test",
           "write_table"]

REPO_ROOT = Path(__file__).resolve().parents[1]
TABLE_FORMATS = ("csv", "tsv", "parquet", "jsonl")


@dataclass
class ParityResult:
    """What ``run_parity_test`` computed: the run, the export and each path's predictions."""

    run_dir: Path
    version_dir: Path
    rows: pd.DataFrame  # the raw feature rows predicted, original column names
    signature_outputs: dict[str, np.ndarray]  # REST columnar ``outputs``, per task
    table: pd.DataFrame  # ``predict_frame`` on the export
    tables: dict[str, pd.DataFrame] = field(default_factory=dict)  # path -> prediction table


def feature_columns(features: dict) -> list[str]:
    """The input columns a ``data.features`` mapping names, in the order numeric, categorical, text, vector."""
    text = features.get("text")
    return [*features.get("numeric", []), *features.get("categorical", []), *([text] if text else []),
            *features.get("vector", [])]


def json_value(value: Any) -> Any:
    """A raw cell as JSON holds it: numpy scalars become Python numbers, NaN and pandas' NA become ``None``,
    arrays become lists."""
    if isinstance(value, np.ndarray):
        return [json_value(v) for v in value.tolist()]
    if isinstance(value, list | tuple):
        return [json_value(v) for v in value]
    if isinstance(value, np.generic):
        value = value.item()
    if value is None or value is pd.NA or (isinstance(value, float) and math.isnan(value)):
        return None
    return value


def _csv_cell(value: Any) -> str:
    value = json_value(value)
    if value is None:
        return ""
    if isinstance(value, list):
        return json.dumps(value)
    return str(value)


def write_table(frame: pd.DataFrame, path: Path) -> Path:
    """Write ``frame`` as its suffix says (.csv, .tsv, .parquet, .jsonl), as a user's own file would hold it:
    list cells as JSON list text in CSV/TSV and as lists in Parquet and JSON Lines; missing cells empty or null."""
    suffix = path.suffix.lstrip(".")
    if suffix in ("csv", "tsv"):
        with path.open("w", encoding="utf-8", newline="") as out:
            writer = csv.writer(out, delimiter="," if suffix == "csv" else "\t")
            writer.writerow(frame.columns)
            for record in frame.itertuples(index=False):
                writer.writerow([_csv_cell(v) for v in record])
    elif suffix == "parquet":
        frame.to_parquet(path, index=False)
    elif suffix == "jsonl":
        with path.open("w", encoding="utf-8") as out:
            for record in frame.to_dict(orient="records"):
                out.write(json.dumps({k: json_value(v) for k, v in record.items()}, ensure_ascii=False) + "\n")
    else:
        raise ValueError(f"unsupported table format {suffix!r}; use one of {TABLE_FORMATS}")
    return path


def read_prediction_csv(text: str, tagging: list[str]) -> pd.DataFrame:
    """The CSV ``mtl predict`` prints, tagging columns parsed from JSON lists; labels stay strings."""
    table = pd.read_csv(io.StringIO(text), keep_default_na=False, dtype=str)
    for column in table.columns:
        if column in tagging:
            table[column] = [json.loads(v) for v in table[column]]
    return table


def _records(rows: pd.DataFrame) -> list[dict]:
    return [{k: json_value(v) for k, v in record.items()} for record in rows.to_dict(orient="records")]


def _tasks_by_type(raw: dict) -> dict[str, str]:
    return {name: task["type"] for name, task in raw["tasks"].items()}


def _assert_tables_agree(reference: pd.DataFrame, other: pd.DataFrame, path: str, types: dict[str, str],
                         tolerance: float) -> None:
    """Same columns in the same order; numbers within ``tolerance``; labels and tag lists equal."""
    assert list(other.columns) == list(reference.columns), (
        f"{path}: columns {list(other.columns)} differ from {list(reference.columns)}")
    assert len(other) == len(reference), f"{path}: {len(other)} rows, expected {len(reference)}"
    for column in reference.columns:
        if column in types and types[column] == "tagging":
            assert [list(v) for v in other[column]] == [list(v) for v in reference[column]], (
                f"{path}: tags of {column!r} differ")
        elif column.endswith("_label"):
            assert [str(v) for v in other[column]] == [str(v) for v in reference[column]], (
                f"{path}: labels of {column!r} differ")
        else:
            np.testing.assert_allclose(other[column].astype(float).to_numpy(),
                                       reference[column].astype(float).to_numpy(), rtol=tolerance, atol=tolerance,
                                       err_msg=f"{path}: {column!r}")


def _check_table_layout(table: pd.DataFrame, types: dict[str, str], outputs: dict[str, np.ndarray],
                        tolerance: float) -> None:
    """The documented columns per task type, and their numbers equal the signature's outputs."""
    for task, kind in types.items():
        values = np.asarray(outputs[task], dtype=float)
        if kind in ("binary", "regression"):
            np.testing.assert_allclose(table[task].astype(float), values.reshape(len(table), -1)[:, 0],
                                       rtol=tolerance, atol=tolerance, err_msg=f"predict_frame {task!r}")
            assert (f"{task}_label" in table.columns) == (kind == "binary"), f"{task}: label column"
        elif kind == "multiclass":
            columns = [c for c in table.columns if c.startswith(f"{task}_") and c != f"{task}_label"]
            assert f"{task}_label" in table.columns and len(columns) == values.shape[1], (
                f"{task}: expected one probability column per class and {task}_label, got {columns}")
            np.testing.assert_allclose(table[columns].astype(float).to_numpy(), values, rtol=tolerance,
                                       atol=tolerance, err_msg=f"predict_frame {task!r}")
            classes = [c[len(task) + 1:] for c in columns]
            assert list(table[f"{task}_label"]) == [classes[i] for i in values.argmax(axis=1)], f"{task}: labels"
        else:
            assert kind == "tagging", f"unknown task type {kind!r}"
            assert all(isinstance(tags, list) for tags in table[task]), f"{task}: tags are not lists"


def _cli(args: list[str]) -> tuple[int, str, str]:
    """``mtl ...`` in process: ``(exit code, stdout, stderr)``."""
    from mtl.cli import main

    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = main(args)
    return code, out.getvalue(), err.getvalue()


def _predict_cli(args: list[str], tagging: list[str], path: str) -> pd.DataFrame:
    code, out, err = _cli(["predict", *args])
    assert code == 0, f"{path}: mtl predict exited {code}: {err.strip()[-2000:]}"
    return read_prediction_csv(out, tagging)


def _normalise(table: pd.DataFrame, types: dict[str, str]) -> pd.DataFrame:
    """``predict_frame``'s table as ``mtl predict`` prints it would read back (tags as lists, labels as text)."""
    table = table.reset_index(drop=True).copy()
    for column in table.columns:
        if column.endswith("_label") or types.get(column) == "tagging":
            table[column] = [list(v) if types.get(column) == "tagging" else str(v) for v in table[column]]
    return table


def _app_check(version_dir: Path, row: dict, features: dict, types: dict[str, str], served: Any,
               tolerance: float) -> None:
    """Fill the app's form with ``row`` (widgets found by the original column names), press Predict and compare
    what it shows with ``predict_frame`` on the same row."""
    from streamlit.testing.v1 import AppTest

    previous, main_module = os.environ.get("MTL_EXPORT"), sys.modules.get("__main__")
    os.environ["MTL_EXPORT"] = str(version_dir)
    try:
        app = AppTest.from_file(str(REPO_ROOT / "app.py"), default_timeout=180).run()
        assert not app.exception, f"app: {app.exception}"
        filled = dict(row)
        for name in features.get("numeric", []):
            widget = next((w for w in app.number_input if w.label == name), None)
            assert widget is not None, f"app: no number input labelled {name!r}"
            widget.set_value(float(row[name]))
        for name in features.get("categorical", []):
            widget = next((w for w in app.selectbox if w.label == name), None)
            assert widget is not None, f"app: no select box labelled {name!r}"
            options = list(widget.options)
            value = str(row[name]) if str(row[name]) in options else options[-1]
            widget.set_value(value)
            filled[name] = value
        if features.get("text"):
            name = features["text"]
            widget = next((w for w in app.text_area if w.label == name), None)
            assert widget is not None, f"app: no text area labelled {name!r}"
            widget.set_value(str(row[name]))
        for name in features.get("vector", []):
            widget = next((w for w in app.text_input if w.label == name), None)
            assert widget is not None, f"app: no text input (a JSON list) labelled {name!r}"
            widget.set_value(json.dumps(json_value(row[name])))
        app.button(key="predict").click().run()
        assert not app.exception, f"app: {app.exception}"
    finally:
        if previous is None:
            os.environ.pop("MTL_EXPORT", None)
        else:
            os.environ["MTL_EXPORT"] = previous
        if main_module is not None:
            sys.modules["__main__"] = main_module
    expected = served.predict_frame(pd.DataFrame([filled])).iloc[0]
    metrics = {m.label: m.value for m in app.metric}
    for task, kind in types.items():
        if kind == "binary":
            shown = next((v for k, v in metrics.items() if k.startswith(f"{task}: P(")), None)
            assert shown is not None, f"app: no probability shown for {task!r}; metrics {list(metrics)}"
            assert abs(float(shown) - float(expected[task])) <= tolerance, f"app: {task!r} {shown} != {expected[task]}"
        elif kind == "regression":
            assert abs(float(metrics[task]) - float(expected[task])) <= tolerance * max(1.0, abs(expected[task])), (
                f"app: {task!r} {metrics[task]} != {expected[task]}")
        elif kind == "multiclass":
            assert metrics[f"{task}: most likely"] == str(expected[f"{task}_label"]), f"app: {task!r} label"
        else:
            frames = [d.value for d in app.dataframe if "tag" in d.value.columns]
            assert frames, f"app: no tag table for {task!r}"
            assert [str(t) for t in frames[0]["tag"]] == list(expected[task])[:len(frames[0])], f"app: {task!r} tags"


def run_parity_test(frame: pd.DataFrame, config: dict, work_dir: str | Path, *, train_format: str = "csv",
                    predict_rows: int = 5, row_calls: int = 1, tolerance: float = 1e-5,
                    subprocess_cli: bool = False, app: bool = True) -> ParityResult:
    """Train ``config`` on ``frame`` (real rows, original column names, features and targets), then predict the
    last ``predict_rows`` rows through every path and assert they all agree (``--row`` for the first
    ``row_calls`` of them, as each call loads the model).

    ``config`` is a raw config dict without ``data.path``/``data.dataset`` (the rows are written to
    ``work_dir/train.<train_format>``). ``subprocess_cli`` also runs ``mtl predict`` once as a real process.
    """
    import yaml
    from fastapi.testclient import TestClient

    import mtl
    import mtl.serving
    from mtl.config import config_from_dict, dump_config
    from mtl.export import export_run
    from mtl.serving.rest import create_app

    work_dir = Path(work_dir)
    work_dir.mkdir(parents=True, exist_ok=True)
    raw = copy.deepcopy(config)
    features = raw["data"]["features"]
    columns = feature_columns(features)
    types = _tasks_by_type(raw)
    tagging = [t for t, k in types.items() if k == "tagging"]

    # 1. the config round trip
    train_file = write_table(frame, work_dir / f"train.{train_format}")
    raw["data"].pop("dataset", None)
    raw["data"]["path"] = str(train_file)
    parsed = config_from_dict(raw)
    dumped = dump_config(parsed)
    assert dump_config(config_from_dict(yaml.safe_load(dumped))) == dumped, "config: the dump does not round-trip"
    dumped_features = yaml.safe_load(dumped)["data"]["features"]
    for kind, value in features.items():
        assert dumped_features[kind] == value, f"config: data.features.{kind} dumped as {dumped_features[kind]!r}"

    # 2. fit
    result = mtl.train(parsed, str(work_dir / "run"))
    run_dir = Path(result.run_dir)
    rows = frame[columns].tail(predict_rows).reset_index(drop=True)

    # 3. reload from model.keras
    model = mtl.load_model(str(run_dir / "model.keras"))
    from_frame = model.predict_raw(rows)
    from_dict = model.predict_raw({c: [json_value(v) for v in rows[c]] for c in columns})
    assert sorted(from_frame) == sorted(types), f"predict_raw: outputs {sorted(from_frame)}, tasks {sorted(types)}"

    # 4. export and the Python serving API
    version_dir = export_run(run_dir, work_dir / "exports", "parity")
    served = mtl.serving.load(version_dir)
    table = _normalise(served.predict_frame(rows), types)

    # 6. REST, both formats (first, as it gives the signature's outputs)
    records = _records(rows)
    with TestClient(create_app(version_dir.parent, watch=False)) as client:
        url = f"/v1/models/{version_dir.parent.name}:predict"
        columnar = client.post(url, json={"inputs": {c: [r[c] for r in records] for c in columns}})
        assert columnar.status_code == 200, f"REST columnar: {columnar.status_code} {columnar.text[:2000]}"
        by_row = client.post(url, json={"instances": records})
        assert by_row.status_code == 200, f"REST row: {by_row.status_code} {by_row.text[:2000]}"
    outputs = {t: np.asarray(columnar.json()["outputs"][t], dtype=float) for t in types}
    predictions = by_row.json()["predictions"]
    for task in types:
        row_values = np.asarray([p[task] for p in predictions], dtype=float)
        np.testing.assert_allclose(row_values, outputs[task], rtol=tolerance, atol=tolerance,
                                   err_msg=f"REST row vs columnar: {task!r}")
        for name, raw_outputs in (("predict_raw(DataFrame)", from_frame), ("predict_raw(dict)", from_dict)):
            np.testing.assert_allclose(np.asarray(raw_outputs[task], dtype=float), outputs[task], rtol=tolerance,
                                       atol=tolerance, err_msg=f"{name} vs the signature: {task!r}")
    _check_table_layout(table, types, outputs, tolerance)

    # 5. mtl predict on files and rows: a version folder, a run directory and an export base (with --output)
    tables = {"predict_frame": table}
    for suffix in ("csv", "jsonl", "parquet"):
        write_table(rows, work_dir / f"rows.{suffix}")
    tables["mtl predict VERSION --input .csv"] = _predict_cli(
        ["--model", str(version_dir), "--input", str(work_dir / "rows.csv")], tagging, "mtl predict .csv")
    tables["mtl predict RUN_DIR --input .jsonl"] = _predict_cli(
        ["--model", str(run_dir), "--input", str(work_dir / "rows.jsonl")], tagging, "mtl predict .jsonl")
    out_file = work_dir / "predictions.csv"
    code, _, err = _cli(["predict", "--model", str(version_dir.parent), "--input", str(work_dir / "rows.parquet"),
                         "--output", str(out_file)])
    assert code == 0, f"mtl predict .parquet --output: exited {code}: {err.strip()[-2000:]}"
    tables["mtl predict BASE --input .parquet --output"] = read_prediction_csv(out_file.read_text(encoding="utf-8"),
                                                                               tagging)
    singles = [_predict_cli(["--model", str(version_dir), "--row", json.dumps(record, ensure_ascii=False)],
                            tagging, f"mtl predict --row {i + 1}") for i, record in enumerate(records[:row_calls])]
    tables["mtl predict --row"] = pd.concat(singles, ignore_index=True)
    if subprocess_cli:
        env = {**os.environ, "PYTHONPATH": str(REPO_ROOT), "TF_CPP_MIN_LOG_LEVEL": "2"}
        done = subprocess.run([sys.executable, "-m", "mtl.cli", "predict", "--model", str(version_dir),
                               "--input", str(work_dir / "rows.parquet")], capture_output=True, text=True,
                              cwd=REPO_ROOT, env=env, timeout=300)
        assert done.returncode == 0, f"mtl predict (subprocess): {done.stderr.strip()[-2000:]}"
        tables["mtl predict (subprocess)"] = read_prediction_csv(done.stdout, tagging)
    for path, other in tables.items():
        if path != "predict_frame":
            reference = table.head(row_calls) if path == "mtl predict --row" else table
            _assert_tables_agree(reference, other, path, types, tolerance)

    # 7. the app, on the first row without a missing value
    if app:
        complete = [r for r in records if all(v is not None and v != "" for v in r.values())]
        assert complete, "app: every predicted row has a missing value; give rows with all values"
        _app_check(version_dir, complete[0], features, types, served, tolerance)

    return ParityResult(run_dir, version_dir, rows, outputs, table, tables)
