"""Property tests of the one raw-value rule: every path reads the same raw value the same way.

One small model (real Adult rows, numeric and categorical columns with names TensorFlow does not allow) is fed
rows drawn by ``hypothesis``: arbitrary Unicode text, number-like strings with leading zeros, missing-value
spellings, integers, floats, ``None``, NaN, infinities, 401-digit integers and cells over the size limit. Each row
goes through every path (a CSV, JSON Lines and Parquet file and ``--row`` for ``mtl predict``, the REST row and
columnar formats, ``predict_raw``) and every path must give the same prediction (within 1e-5) or the same one-line
error naming the column and row, never a traceback or a 500. The predictions must also equal those of the row
written the way the documented rule reads it (``expected_cell`` below), so all paths cannot agree on a wrong
reading. A last property draws column names from arbitrary Unicode.
"""

from __future__ import annotations

import contextlib
import io
import json
import math
import re
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, Phase, assume, given, settings
from hypothesis import strategies as st

from mtl.serving import create_app
from mtl.testing import write_table

MISSING = {"", "NA", "N/A", "n/a", "NaN", "nan", "null", "NULL", "None", "<NA>"}
CELL_LIMIT = 1_000_000
TOLERANCE = 1e-5
NUMERIC = {"age": "Age (years)", "educational_num": "edu.num/yrs"}
CATEGORICAL = {"workclass": "Work class", "occupation": "occupation", "native_country": "Land (país)"}
COLUMNS = [*NUMERIC.values(), *CATEGORICAL.values()]
TASKS = ("income", "hours_per_week")
CORE = re.compile(r"column ['\"].*")
SETTINGS = {"deadline": None, "database": None, "print_blob": True,
            "suppress_health_check": [HealthCheck.function_scoped_fixture, HealthCheck.too_slow,
                                      HealthCheck.data_too_large]}


# ----------------------------------------------------------------------------- the documented rule, written once
class Bad(Exception):
    """A cell the rule refuses (an error naming its column and row)."""


def expected_cell(kind: str, value: Any) -> Any:
    """What the rule reads ``value`` as: a float or ``None`` (missing) for a numeric column, a string for a
    categorical one; raises ``Bad`` for a value that must be an error."""
    if isinstance(value, bytes):
        value = value.decode("utf-8")
    if isinstance(value, str) and len(value) > CELL_LIMIT:
        raise Bad("longer than the cell limit")
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return None if kind == "numeric" else ""
    if isinstance(value, str) and value.strip() in MISSING:
        return None if kind == "numeric" else ""
    if kind == "numeric":
        if isinstance(value, bool):
            raise Bad("a bool is not a number")
        if isinstance(value, str):
            text = value.strip()
            assume(text.isascii() and "_" not in text)  # Python's float() reads these; the rule says nothing
            try:
                number = float(text)
            except ValueError:
                raise Bad("not a number") from None
            assume(not math.isnan(number))  # "NAN", "+nan": spellings the rule leaves open
        else:
            try:
                number = float(value)
            except OverflowError:
                raise Bad("non-finite") from None
        if not math.isfinite(number):
            raise Bad("non-finite")
        return number
    if isinstance(value, bool):
        return str(value)
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        return str(int(value)) if value.is_integer() else repr(value)
    text = value.strip()
    assume(not re.fullmatch(r"[+-]?\d+\.0+", text) or re.fullmatch(r"[+-]?[0-9]+\.0+", text))  # Unicode digits
    match = re.fullmatch(r"([+-]?[0-9]+)\.0+", text)
    return match.group(1) if match else text


def expected_row(row: dict) -> dict | None:
    """The row as the rule reads it, or ``None`` when some cell must be an error."""
    kinds = {c: "numeric" for c in NUMERIC.values()} | {c: "categorical" for c in CATEGORICAL.values()}
    try:
        return {c: expected_cell(kinds[c], v) for c, v in row.items()}
    except Bad:
        return None


# ----------------------------------------------------------------------------- strategies
LONG = "7" * (CELL_LIMIT + 1)
missing_spellings = st.sampled_from(sorted(MISSING)).map(lambda s: f" {s} ") | st.sampled_from(sorted(MISSING))
number_like = st.from_regex(r"\A\s?[+-]?0{0,3}[0-9]{1,6}(\.[0-9]{0,3})?(e[+-]?[0-9]{1,3})?\s?\Z")
zero_fraction = st.from_regex(r"\A[+-]?0{0,2}[0-9]{1,5}\.0{1,3}\Z")
non_finite_text = st.sampled_from(["inf", "-inf", "Infinity", "-Infinity", "+inf", " INF ", "1e400", "-1e999"])
unicode_text = st.text(st.characters(exclude_categories=("Cs",), exclude_characters="\x00"), max_size=12)
string_cells = st.one_of(unicode_text, number_like, zero_fraction, missing_spellings, non_finite_text,
                         st.just(LONG))
finite_floats = st.floats(min_value=-1e15, max_value=1e15, allow_nan=False)
native_cells = st.one_of(
    st.none(), st.just(float("nan")), st.just(float("inf")), st.just(float("-inf")), st.booleans(),
    st.integers(-10**9, 10**9), st.just(10**400), st.just(-(10**400)), finite_floats,
    st.integers(-99999, 99999).map(float),  # integral floats: 1996.0 must read as "1996"
    string_cells,
)


def rows_of(cells: st.SearchStrategy, max_rows: int) -> st.SearchStrategy:
    row = st.fixed_dictionaries({c: cells for c in COLUMNS})
    return st.lists(row, min_size=1, max_size=max_rows)


# ----------------------------------------------------------------------------- the model and the paths
@pytest.fixture(scope="module")
def model(tmp_path_factory: pytest.TempPathFactory, adult_slice: pd.DataFrame) -> dict:
    """One tiny model on 300 real Adult rows whose feature columns carry awkward names, exported."""
    import mtl
    from mtl.config import config_from_dict
    from mtl.export import export_run
    from mtl.serving import load

    root = tmp_path_factory.mktemp("property")
    frame = adult_slice.head(300).rename(columns={**NUMERIC, **CATEGORICAL})
    path = write_table(frame, root / "train.csv")
    raw = {
        "seed": 2,
        "data": {"path": str(path), "features": {"numeric": list(NUMERIC.values()),
                                                 "categorical": list(CATEGORICAL.values())}},
        "tasks": {"income": {"type": "binary", "column": "income", "positive": ">50K"},
                  "hours_per_week": {"type": "regression", "column": "hours_per_week"}},
        "model": {"trunk": {"units": [8]}, "head": {"units": []}},
        "training": {"epochs": 1, "batch_size": 64, "verbose": 0},
    }
    result = mtl.train(config_from_dict(raw), str(root / "run"))
    version = export_run(result.run_dir, root / "exports", "prop")
    keras_model = mtl.load_model(str(Path(result.run_dir) / "model.keras"))
    with TestClient(create_app(version.parent, watch=False)) as client:
        yield {"root": root, "version": version, "served": load(version), "keras": keras_model, "client": client}


class Outcome:
    """One path's answer: predictions per task, or the core of a one-line error (``column '...', row n: ...``)."""

    def __init__(self, path: str, predictions: dict[str, np.ndarray] | None = None, error: str | None = None):
        self.path, self.predictions, self.error = path, predictions, error

    def __repr__(self) -> str:
        return f"{self.path}: {self.error if self.error is not None else 'ok'}"


def _core(path: str, message: str) -> Outcome:
    """The ``column '<name>', row <n>: <problem>`` part of a one-line error message."""
    assert "Traceback" not in message, f"{path}: a traceback: {message[-1000:]}"
    line = message.strip()
    assert "\n" not in line, f"{path}: the error is not one line: {line[:1000]!r}"
    match = CORE.search(line)
    assert match is not None, f"{path}: the error does not name a column and row: {line[:500]!r}"
    assert len(line) < 1000, f"{path}: the error quotes too much of the value ({len(line)} characters)"
    return Outcome(path, error=match.group(0))


def _rest(model: dict, rows: list[dict], style: str) -> Outcome:
    body = ({"instances": rows} if style == "row" else {"inputs": {c: [r[c] for r in rows] for c in COLUMNS}})
    answer = model["client"].post("/v1/models/prop:predict", content=json.dumps(body, allow_nan=True))
    path = f"REST {style}"
    if answer.status_code == 400:
        assert list(answer.json()) == ["error"], f"{path}: {answer.text[:500]}"
        return _core(path, answer.json()["error"])
    assert answer.status_code == 200, f"{path}: HTTP {answer.status_code}: {answer.text[:1000]}"
    if style == "row":
        predictions = {t: np.asarray([p[t] for p in answer.json()["predictions"]], dtype=float) for t in TASKS}
    else:
        predictions = {t: np.asarray(answer.json()["outputs"][t], dtype=float) for t in TASKS}
    return Outcome(path, {t: v.reshape(len(rows)) for t, v in predictions.items()})


def _predict_raw(model: dict, columns: Any, path: str) -> Outcome:
    from mtl.errors import MtlError

    try:
        raw = model["keras"].predict_raw(columns)
    except MtlError as exc:
        return _core(path, str(exc))
    return Outcome(path, {t: np.asarray(raw[t], dtype=float).reshape(-1) for t in TASKS})


def _cli(model: dict, args: list[str], path: str, tasks: tuple[str, ...] = TASKS) -> Outcome:
    from mtl.cli import main

    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = main(["predict", "--model", str(model["version"]), *args])
    if code == 2:
        lines = [line for line in err.getvalue().splitlines() if line.startswith("error: ")]
        assert len(lines) == 1, f"{path}: expected one error line, got {err.getvalue()[-1000:]!r}"
        return _core(path, lines[0])
    assert code == 0, f"{path}: exit {code}: {err.getvalue()[-1000:]}"
    table = pd.read_csv(io.StringIO(out.getvalue()))
    return Outcome(path, {t: table[t].to_numpy(dtype=float) for t in tasks})


def _assert_same(outcomes: list[Outcome], expected: Outcome | None = None) -> None:
    """All outcomes equal each other (and ``expected``, the rule's reading, when given)."""
    first = outcomes[0]
    for other in [*outcomes[1:], *([expected] if expected else [])]:
        if first.error is not None or other.error is not None:
            assert first.error == other.error, f"{first} <> {other}"
            continue
        for task in TASKS:
            np.testing.assert_allclose(other.predictions[task], first.predictions[task], rtol=TOLERANCE,
                                       atol=TOLERANCE, err_msg=f"{other.path} <> {first.path}: {task}")


def _check_against_rule(model: dict, rows: list[dict], outcomes: list[Outcome]) -> None:
    """Errors exactly when the rule refuses a cell; otherwise the predictions of the rule's reading."""
    readings = [expected_row(r) for r in rows]
    if any(r is None for r in readings):
        assert outcomes[0].error is not None, f"{outcomes[0].path}: predicted a row the rule refuses: {rows!r:.300}"
        return
    assert outcomes[0].error is None, f"{outcomes[0].path}: refused a row the rule reads: {outcomes[0].error}"
    _assert_same(outcomes, _rest(model, readings, "columnar"))


# ----------------------------------------------------------------------------- properties
@settings(max_examples=25, **SETTINGS)
@given(rows=rows_of(st.one_of(st.none(), string_cells), max_rows=3))
def test_text_cells_read_alike_on_every_path(model: dict, rows: list[dict]) -> None:
    """Cells as text (what a CSV holds; ``None`` is an empty cell or null): files, --row, REST and the Python API."""
    root = model["root"]
    frame = pd.DataFrame(rows, columns=COLUMNS, dtype=object)
    outcomes = [_rest(model, rows, "columnar"), _rest(model, rows, "row"),
                _predict_raw(model, frame, "predict_raw(DataFrame)"),
                _predict_raw(model, {c: [r[c] for r in rows] for c in COLUMNS}, "predict_raw(dict)")]
    for suffix in ("csv", "jsonl", "parquet"):
        file = write_table(frame, root / f"rows.{suffix}")
        outcomes.append(_cli(model, ["--input", str(file)], f"mtl predict .{suffix}"))
    _assert_same(outcomes)
    _check_against_rule(model, rows, outcomes)
    single = [_rest(model, rows[:1], "row"), _cli(model, ["--row", json.dumps(rows[0])], "mtl predict --row")]
    _assert_same(single)


@settings(max_examples=700, **SETTINGS)
@given(rows=rows_of(native_cells, max_rows=3))
def test_json_values_read_alike_on_every_path(model: dict, rows: list[dict]) -> None:
    """Cells as JSON carries them (numbers, null, NaN, Infinity, booleans, strings): REST and the Python API."""
    outcomes = [_rest(model, rows, "columnar"), _rest(model, rows, "row"),
                _predict_raw(model, {c: [r[c] for r in rows] for c in COLUMNS}, "predict_raw(dict)")]
    _assert_same(outcomes)
    _check_against_rule(model, rows, outcomes)


@settings(max_examples=275, **SETTINGS)
@given(value=st.one_of(st.integers(-10**6, 10**6), st.integers(-99999, 99999).map(float), finite_floats),
       column=st.sampled_from(list(CATEGORICAL.values())))
def test_a_number_and_its_text_are_one_category(model: dict, value: int | float, column: str) -> None:
    """A JSON number (integer or float), its text, the text in white space and with a zero fraction
    (``1996``, ``1996.0``, ``"1996"``, ``" 1996 "``, ``"1996.0"``) are one category on every path."""
    base = {c: None for c in COLUMNS}
    text = str(int(value)) if isinstance(value, int) or value.is_integer() else repr(value)
    forms: list[Any] = [value, text, f" {text} "]
    if re.fullmatch(r"-?[0-9]+", text):
        forms += [f"{text}.0", float(int(text))]
    outcomes = [_rest(model, [{**base, column: form}], style) for form in forms for style in ("row", "columnar")]
    outcomes.append(_predict_raw(model, {**{c: [None] for c in COLUMNS}, column: [value]}, "predict_raw(dict)"))
    assert outcomes[0].error is None, outcomes[0].error
    _assert_same(outcomes)


@settings(max_examples=3, phases=[Phase.explicit, Phase.generate], **SETTINGS)  # no shrinking: each case trains
@given(drawn=st.lists(st.text(st.characters(exclude_categories=("Cs", "Cc")), min_size=1, max_size=16),
                      min_size=3, max_size=3))
def test_any_column_names_train_export_predict_and_serve(adult_slice: pd.DataFrame,
                                                         tmp_path_factory: pytest.TempPathFactory,
                                                         drawn: list[str]) -> None:
    """Column names drawn from arbitrary Unicode (each given a `` #i`` suffix, so it is unique and TensorFlow
    cannot take it as an input name): the model trains, exports, and ``mtl predict`` and the REST server accept
    the original names (REST also the signature's input names) with the same predictions."""
    names = [f"{name.strip() or '?'} #{i}" for i, name in enumerate(drawn)]
    import mtl
    from mtl.config import config_from_dict
    from mtl.export import export_run
    from mtl.serving import create_app

    root = tmp_path_factory.mktemp("names")
    frame = adult_slice.head(150).rename(columns=dict(zip(["age", "capital_gain", "workclass"], names,
                                                          strict=True)))
    raw = {"seed": 0, "data": {"path": str(write_table(frame, root / "train.csv")),
                               "features": {"numeric": names[:2], "categorical": names[2:]}},
           "tasks": {"income": {"type": "binary", "column": "income", "positive": ">50K"},
                     "hours_per_week": {"type": "regression", "column": "hours_per_week"}},
           "model": {"trunk": {"units": [4]}, "head": {"units": []}},
           "training": {"epochs": 1, "batch_size": 64, "verbose": 0}}
    result = mtl.train(config_from_dict(raw), str(root / "run"))
    version = export_run(result.run_dir, root / "exports", "names")
    rows = frame[names].tail(3)
    records = json.loads(rows.to_json(orient="records", force_ascii=False))
    with TestClient(create_app(version.parent, watch=False)) as client:
        by_name = client.post("/v1/models/names:predict", json={"instances": records})
        assert by_name.status_code == 200, by_name.text[:1000]
        signature = client.get("/v1/models/names/metadata").json()["metadata"]["signature_def"]
        inputs = sorted(signature["signature_def"]["serving_default"]["inputs"])
        meta = json.loads((version / "assets" / "mtl_metadata.json").read_text(encoding="utf-8"))
        mapping = {n: n for n in names if n in inputs}
        for candidate in _mappings(meta):  # the reversible mapping for names TF does not allow
            mapping |= {k: v for k, v in candidate.items() if k in names and k not in mapping and v in inputs}
        assert sorted(mapping) == sorted(names) and sorted(mapping.values()) == inputs, (
            f"signature inputs {inputs} are not the names {names} or a mapping of them kept in the export "
            f"metadata: {meta!r:.800}")
        by_signature = client.post("/v1/models/names:predict", json={
            "instances": [{mapping[k]: v for k, v in r.items()} for r in records]})
        assert by_signature.status_code == 200, by_signature.text[:1000]
    served = [p["income"] for p in by_name.json()["predictions"]]
    np.testing.assert_allclose([p["income"] for p in by_signature.json()["predictions"]], served, atol=TOLERANCE)
    single = _cli({"version": version}, ["--row", json.dumps(records[0], ensure_ascii=False)], "mtl predict --row",
                  tasks=("income",))
    assert single.error is None, single.error
    np.testing.assert_allclose(single.predictions["income"], np.asarray(served[:1], dtype=float).reshape(-1),
                               atol=TOLERANCE)


def _mappings(node: Any) -> list[dict]:
    """Every ``{str: str}`` mapping anywhere in the export metadata (where the name mapping is kept)."""
    found = []
    if isinstance(node, dict):
        if node and all(isinstance(k, str) and isinstance(v, str) for k, v in node.items()):
            found.append(node)
        for value in node.values():
            found.extend(_mappings(value))
    elif isinstance(node, list):
        for value in node:
            found.extend(_mappings(value))
    return found
