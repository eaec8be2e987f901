"""A test harness for feature kinds and task types: one call checks that every path gives the same predictions.

Modelled on keras-hub's ``run_task_test``: a new feature kind or task type is tested by one call of
``run_parity_test`` with a small slice of real data and a config that uses it. The call checks, in order:

1. the config round trip (``config_from_dict`` -> ``dump_config`` -> YAML -> ``config_from_dict`` is stable);
2. fit (``mtl.train`` for the config's epochs, on the rows written as a CSV, TSV, Parquet or JSON Lines file);
3. reload (``mtl.load_model(run_dir / "model.keras").predict_raw`` on a DataFrame and on a dict of lists);
4. export (``mtl.export.export_run``) and the Python serving API (``mtl.serving.load(...).predict_frame``);
5. ``mtl predict`` on CSV, JSON Lines and Parquet files (on a version folder, a run directory and an export
   base, ``--output``) and ``--row`` (in process; one real subprocess when asked);
6. the REST server (``mtl.serving.create_app``) in the row (``instances``) and columnar (``inputs``) formats;
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
    """The input columns a raw ``data.features`` mapping names, kinds in registry order (``FEATURE_KINDS``)."""
    from mtl.features import FEATURE_KINDS

    columns: list[str] = []
    for kind, cls in FEATURE_KINDS.items():
        value = features.get(kind)
        columns += list(value or []) if cls.many else ([value] if value else [])
    return columns


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


def read_prediction_csv(text: str, list_columns: list[str]) -> pd.DataFrame:
    """The CSV ``mtl predict`` prints, ``list_columns`` (one value per word) parsed from JSON lists; labels stay
    strings."""
    table = pd.read_csv(io.StringIO(text), keep_default_na=False, dtype=str)
    for column in table.columns:
        if column in list_columns:
            table[column] = [json.loads(v) for v in table[column]]
    return table


def _records(rows: pd.DataFrame) -> list[dict]:
    return [{k: json_value(v) for k, v in record.items()} for record in rows.to_dict(orient="records")]


def _list_columns(raw: dict) -> list[str]:
    """The tasks whose table column holds a list per row (one value per word: ``Task.level == "word"``)."""
    from mtl.tasks import TASK_TYPES

    return [name for name, task in raw["tasks"].items() if TASK_TYPES[task["type"]].level == "word"]


def _values_agree(path: str, column: str, other: list, reference: list, tolerance: float) -> None:
    """Lists and texts equal; numbers within ``tolerance`` (relative to their size above 1)."""
    for i, (got, want) in enumerate(zip(other, reference, strict=True)):
        if isinstance(want, list | tuple | np.ndarray):
            assert [str(v) for v in got] == [str(v) for v in want], f"{path}: {column!r} row {i + 1}: {got} != {want}"
        elif isinstance(want, str):
            assert str(got) == want, f"{path}: {column!r} row {i + 1}: {got!r} != {want!r}"
        else:
            assert abs(float(got) - float(want)) <= tolerance * max(1.0, abs(float(want))), (
                f"{path}: {column!r} row {i + 1}: {got} != {want}")


def _assert_tables_agree(reference: pd.DataFrame, other: pd.DataFrame, path: str, tolerance: float) -> None:
    """Same columns in the same order and the same rows: numbers within ``tolerance``, labels and lists equal."""
    assert list(other.columns) == list(reference.columns), (
        f"{path}: columns {list(other.columns)} differ from {list(reference.columns)}")
    assert len(other) == len(reference), f"{path}: {len(other)} rows, expected {len(reference)}"
    for column in reference.columns:
        _values_agree(path, column, list(other[column]), list(reference[column]), tolerance)


def _check_table_layout(table: pd.DataFrame, served: Any, outputs: dict[str, np.ndarray], tolerance: float) -> None:
    """``predict_frame``'s table holds exactly the columns each task type makes (``Task.table_columns``) of the
    signature's outputs as the REST server returned them."""
    from mtl.tasks import TASK_TYPES

    expected: dict[str, Any] = {}
    for name, entry in served.tasks.items():
        expected.update(TASK_TYPES[entry["type"]].table_columns(name, entry, outputs))
    assert list(table.columns) == list(expected), (
        f"predict_frame: columns {list(table.columns)}, expected {list(expected)}")
    reference = _normalise(pd.DataFrame(expected), served)
    _assert_tables_agree(reference, table, "predict_frame vs the signature's outputs", tolerance)


def _cli(args: list[str]) -> tuple[int, str, str]:
    """``mtl ...`` in process: ``(exit code, stdout, stderr)``."""
    from mtl.cli import main

    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = main(args)
    return code, out.getvalue(), err.getvalue()


def _predict_cli(args: list[str], list_columns: list[str], path: str) -> pd.DataFrame:
    code, out, err = _cli(["predict", *args])
    assert code == 0, f"{path}: mtl predict exited {code}: {err.strip()[-2000:]}"
    return read_prediction_csv(out, list_columns)


def _normalise(table: pd.DataFrame, served: Any) -> pd.DataFrame:
    """A table as ``mtl predict``'s CSV reads back: list cells as lists of texts, non-numeric cells as text."""
    table = table.reset_index(drop=True).copy()
    for column in table.columns:
        values = list(table[column])
        if any(isinstance(v, list | tuple | np.ndarray) for v in values):
            table[column] = [[str(x) for x in v] for v in values]
        elif not all(isinstance(v, int | float | np.number) and not isinstance(v, bool | np.bool_) for v in values):
            table[column] = [str(v) for v in values]
    return table


def _app_check(version_dir: Path, row: dict, served: Any, tolerance: float) -> None:
    """Fill the app's form with ``row`` (each feature sets its own widget: ``Feature.fill_app_input``), press
    Predict, and compare what each task shows (``Task.read_app_output``) with ``predict_frame`` on the same row."""
    from streamlit.testing.v1 import AppTest

    from mtl.tasks import TASK_TYPES

    previous, main_module = os.environ.get("MTL_EXPORT"), sys.modules.get("__main__")
    os.environ["MTL_EXPORT"] = str(version_dir)
    try:
        app = AppTest.from_file(str(REPO_ROOT / "app.py"), default_timeout=180).run()
        assert not app.exception, f"app: {app.exception}"
        filled = {column: feature.fill_app_input(app, row[column]) for column, feature in served.features.items()}
        app.button(key="predict").click().run()
        assert not app.exception, f"app: {app.exception}"
    finally:
        if previous is None:
            os.environ.pop("MTL_EXPORT", None)
        else:
            os.environ["MTL_EXPORT"] = previous
        if main_module is not None:
            sys.modules["__main__"] = main_module
    expected = _normalise(served.predict_frame(pd.DataFrame([filled])), served).iloc[0]
    for name, entry in served.tasks.items():
        shown = TASK_TYPES[entry["type"]].read_app_output(app, name, entry)
        assert shown, f"app: nothing shown for {name!r}"
        for column, value in shown.items():
            want = expected[column]
            if isinstance(want, list):  # the app shows one value per word of the text it was given
                want = want[:len(value)]
            _values_agree("app", column, [value], [want], tolerance)


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
    from mtl.serving import create_app

    work_dir = Path(work_dir)
    work_dir.mkdir(parents=True, exist_ok=True)
    raw = copy.deepcopy(config)
    features = raw["data"]["features"]
    columns = feature_columns(features)
    task_names = list(raw["tasks"])
    list_columns = _list_columns(raw)

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
    assert sorted(from_frame) == sorted(task_names), f"predict_raw: outputs {sorted(from_frame)}, tasks {task_names}"

    # 4. export and the Python serving API
    version_dir = export_run(run_dir, work_dir / "exports", "parity")
    served = mtl.serving.load(version_dir)
    table = _normalise(served.predict_frame(rows), served)

    # 6. REST, both formats (first, as it gives the signature's outputs)
    records = _records(rows)
    with TestClient(create_app(version_dir.parent, watch=False)) as client:
        url = f"/v1/models/{version_dir.parent.name}:predict"
        columnar = client.post(url, json={"inputs": {c: [r[c] for r in records] for c in columns}})
        assert columnar.status_code == 200, f"REST columnar: {columnar.status_code} {columnar.text[:2000]}"
        by_row = client.post(url, json={"instances": records})
        assert by_row.status_code == 200, f"REST row: {by_row.status_code} {by_row.text[:2000]}"
    outputs = {name: np.asarray(values, dtype=float if name in task_names else object)
               for name, values in columnar.json()["outputs"].items()}
    predictions = by_row.json()["predictions"]
    for task in task_names:
        row_values = np.asarray([p[task] for p in predictions], dtype=float)
        np.testing.assert_allclose(row_values, outputs[task], rtol=tolerance, atol=tolerance,
                                   err_msg=f"REST row vs columnar: {task!r}")
        for name, raw_outputs in (("predict_raw(DataFrame)", from_frame), ("predict_raw(dict)", from_dict)):
            np.testing.assert_allclose(np.asarray(raw_outputs[task], dtype=float), outputs[task], rtol=tolerance,
                                       atol=tolerance, err_msg=f"{name} vs the signature: {task!r}")
    _check_table_layout(table, served, outputs, tolerance)

    # 5. mtl predict on files and rows: a version folder, a run directory and an export base (with --output)
    tables = {"predict_frame": table}
    for suffix in ("csv", "jsonl", "parquet"):
        write_table(rows, work_dir / f"rows.{suffix}")
    tables["mtl predict VERSION --input .csv"] = _predict_cli(
        ["--model", str(version_dir), "--input", str(work_dir / "rows.csv")], list_columns, "mtl predict .csv")
    tables["mtl predict RUN_DIR --input .jsonl"] = _predict_cli(
        ["--model", str(run_dir), "--input", str(work_dir / "rows.jsonl")], list_columns, "mtl predict .jsonl")
    out_file = work_dir / "predictions.csv"
    code, _, err = _cli(["predict", "--model", str(version_dir.parent), "--input", str(work_dir / "rows.parquet"),
                         "--output", str(out_file)])
    assert code == 0, f"mtl predict .parquet --output: exited {code}: {err.strip()[-2000:]}"
    tables["mtl predict BASE --input .parquet --output"] = read_prediction_csv(out_file.read_text(encoding="utf-8"),
                                                                               list_columns)
    singles = [_predict_cli(["--model", str(version_dir), "--row", json.dumps(record, ensure_ascii=False)],
                            list_columns, f"mtl predict --row {i + 1}") for i, record in enumerate(records[:row_calls])]
    tables["mtl predict --row"] = pd.concat(singles, ignore_index=True)
    if subprocess_cli:
        env = {**os.environ, "PYTHONPATH": str(REPO_ROOT), "TF_CPP_MIN_LOG_LEVEL": "2"}
        done = subprocess.run([sys.executable, "-m", "mtl.cli", "predict", "--model", str(version_dir),
                               "--input", str(work_dir / "rows.parquet")], capture_output=True, text=True,
                              cwd=REPO_ROOT, env=env, timeout=300)
        assert done.returncode == 0, f"mtl predict (subprocess): {done.stderr.strip()[-2000:]}"
        tables["mtl predict (subprocess)"] = read_prediction_csv(done.stdout, list_columns)
    for path, other in tables.items():
        if path != "predict_frame":
            reference = table.head(row_calls) if path == "mtl predict --row" else table
            _assert_tables_agree(reference, other, path, tolerance)

    # 7. the app, on the first row without a missing value
    if app:
        complete = [r for r in records if all(v is not None and v != "" for v in r.values())]
        assert complete, "app: every predicted row has a missing value; give rows with all values"
        _app_check(version_dir, complete[0], served, tolerance)

    return ParityResult(run_dir, version_dir, rows, outputs, table, tables)
