"""The TF Serving REST contract, in process (FastAPI TestClient) on a real export."""

from __future__ import annotations

import json
import shutil
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from conftest import ADULT_CATEGORICAL, ADULT_NUMERIC
from fastapi.testclient import TestClient

from mtl.serving import create_app, load

OUTPUTS = ["hours_per_week", "income", "income_label", "race", "race_classes"]


@pytest.fixture(scope="module")
def base(exported_model: dict, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A private copy of the export base, so tests may add versions."""
    target = tmp_path_factory.mktemp("serving") / "adult"
    shutil.copytree(exported_model["base"], target)
    return target


@pytest.fixture(scope="module")
def client(base: Path):  # noqa: ANN201
    with TestClient(create_app(base, "adult", poll_seconds=0.2, max_request_bytes=200_000)) as c:
        yield c


@pytest.fixture(scope="module")
def rows(exported_model: dict) -> pd.DataFrame:
    return exported_model["test_frame"].head(3).reset_index(drop=True)


def _instances(rows: pd.DataFrame) -> list[dict]:
    return json.loads(rows.to_json(orient="records"))


def test_status_and_metadata(client: TestClient) -> None:
    status = {"model_version_status": [{"version": "1", "state": "AVAILABLE",
                                        "status": {"error_code": "OK", "error_message": ""}}]}
    assert client.get("/v1/models/adult").json() == status
    assert client.get("/v1/models/adult/versions/1").json() == status
    meta = client.get("/v1/models/adult/metadata").json()
    assert meta["model_spec"] == {"name": "adult", "signature_name": "", "version": "1"}
    sig = meta["metadata"]["signature_def"]["signature_def"]["serving_default"]
    assert sig["method_name"] == "tensorflow/serving/predict"
    assert sig["inputs"]["age"] == {"dtype": "DT_FLOAT", "name": "serving_default_age:0",
                                    "tensor_shape": {"dim": [{"size": "-1", "name": ""}], "unknown_rank": False}}
    assert sig["inputs"]["workclass"]["dtype"] == "DT_STRING"
    assert sorted(sig["inputs"]) == sorted(ADULT_NUMERIC + ADULT_CATEGORICAL)
    assert sorted(sig["outputs"]) == OUTPUTS
    assert sig["outputs"]["race"]["tensor_shape"]["dim"] == [{"size": "-1", "name": ""}, {"size": "5", "name": ""}]
    assert client.get("/v1/models/adult/versions/1/metadata").json() == meta


def test_row_and_columnar_predict_equal_the_signature(client: TestClient, exported_model: dict,
                                                      rows: pd.DataFrame) -> None:
    expected = load(exported_model["version_dir"]).predict({c: rows[c].to_numpy() for c in rows.columns})
    answer = client.post("/v1/models/adult:predict", json={"instances": _instances(rows)})
    assert answer.status_code == 200, answer.text
    predictions = answer.json()["predictions"]
    assert len(predictions) == 3 and sorted(predictions[0]) == OUTPUTS
    np.testing.assert_allclose([p["income"] for p in predictions], expected["income"], atol=1e-6)
    np.testing.assert_allclose([p["hours_per_week"] for p in predictions], expected["hours_per_week"], rtol=1e-6)
    np.testing.assert_allclose([p["race"] for p in predictions], expected["race"], atol=1e-6)
    assert predictions[0]["race_classes"] == exported_model["result"].tasks["race"].classes_

    columnar = client.post("/v1/models/adult/versions/1:predict",
                           json={"inputs": {c: rows[c].tolist() for c in rows.columns}})
    assert columnar.status_code == 200, columnar.text
    outputs = columnar.json()["outputs"]
    assert sorted(outputs) == OUTPUTS
    np.testing.assert_allclose(outputs["income"], expected["income"], atol=1e-6)
    assert np.asarray(outputs["race"]).shape == (3, 5)


def test_b64_nan_and_one_element_lists_are_accepted(client: TestClient, rows: pd.DataFrame) -> None:
    import base64

    row = _instances(rows)[0]
    plain = client.post("/v1/models/adult:predict", json={"instances": [row]}).json()["predictions"][0]
    row_b64 = {**row, "workclass": {"b64": base64.b64encode(row["workclass"].encode()).decode()},
               "age": [row["age"]]}
    same = client.post("/v1/models/adult:predict", json={"instances": [row_b64]}).json()["predictions"][0]
    assert same["income"] == pytest.approx(plain["income"])
    body = json.dumps({"instances": [row]}).replace(f'"age": {row["age"]}', '"age": NaN')
    assert "NaN" in body
    missing_age = client.post("/v1/models/adult:predict", content=body)
    assert missing_age.status_code == 200 and np.isfinite(missing_age.json()["predictions"][0]["income"][0])


@pytest.mark.parametrize(("body", "needle"), [
    (b"{not json", "JSON Parse error"),
    (b"[1, 2]", "JSON object"),
    (b"{}", "Missing 'inputs' or 'instances' key"),
    (b'{"instances": [], "inputs": {}}', "Not both"),
    (b'{"instances": [{"age": 39}]}', "missing"),
    (None, "colour"),
    (None, "forty"),
    (None, "ragged"),
    (b'{"instances": [{"age": 39}, {"age": 40, "sex": "x"}]}', "unknown input(s) ['sex']"),
    (b'{"instances": [{"age": [1, 2]}]}', "missing"),
    (b'{"instances": [{"age": 1}], "signature_name": "other"}', 'Serving signature key "other" not found'),
    (b'{"instances": [{"age": 1}], "signature_name": 7}', "'signature_name' key must be a string value"),
])
def test_bad_bodies_get_400_json(client: TestClient, rows: pd.DataFrame, body: bytes | None, needle: str) -> None:
    """Structure errors carry TF Serving's words; value errors (``to_tensors``'s) name the input or the value."""
    row = _instances(rows)[0]
    if body is None:
        columns = {c: rows[c].tolist() for c in rows.columns}
        body = json.dumps({
            "colour": {"instances": [{**row, "colour": "red"}]},
            "forty": {"instances": [{**row, "age": "forty"}]},
            "ragged": {"inputs": {**columns, "age": columns["age"][:2]}},
        }[needle]).encode()
        needle = {"ragged": "values"}.get(needle, needle)
    answer = client.post("/v1/models/adult:predict", content=body)
    assert answer.status_code == 400, answer.text
    assert needle in answer.json()["error"]
    assert list(answer.json()) == ["error"]


def test_unknown_model_version_route_and_size_limit(client: TestClient, rows: pd.DataFrame) -> None:
    body = {"instances": _instances(rows)}
    for url in ("/v1/models/other:predict", "/v1/models/adult/versions/9:predict"):
        answer = client.post(url, json=body)
        assert answer.status_code == 404 and "Servable not found" in answer.json()["error"]
    assert client.get("/v1/models/other").status_code == 404
    assert client.get("/v1/models/adult/versions/9/metadata").status_code == 404
    assert client.get("/v1/nothing/here").status_code == 404
    big = client.post("/v1/models/adult:predict", content=b"{" + b" " * 300_000 + b"}")
    assert big.status_code == 413 and "limit" in big.json()["error"]
    assert client.post("/v1/models/adult:classify", json=body).status_code == 400
    assert client.post("/v1/models/adult:predict", json=body).status_code == 200  # still alive


def test_oversized_headers_get_431_and_the_metrics_count_it(client: TestClient) -> None:
    answer = client.get("/v1/models/adult", headers={"x-big": "a" * 20_000})
    assert answer.status_code == 431 and "exceed the limit" in answer.json()["error"]
    metrics = client.get("/monitoring/prometheus/metrics")
    assert metrics.status_code == 200 and metrics.headers["content-type"].startswith("text/plain")
    assert 'status="RESOURCE_EXHAUSTED"} 1.0' in metrics.text


def test_concurrent_clients(client: TestClient, rows: pd.DataFrame) -> None:
    body = {"instances": _instances(rows)}
    with ThreadPoolExecutor(8) as pool:
        answers = list(pool.map(lambda _: client.post("/v1/models/adult:predict", json=body), range(32)))
    assert {a.status_code for a in answers} == {200}
    assert len({json.dumps(a.json()) for a in answers}) == 1


def test_a_new_version_is_served_without_restart(client: TestClient, base: Path, exported_model: dict) -> None:
    from mtl.export import export_run

    (base / ".tmp-3-999").mkdir()  # a half-written version is never loaded
    export_run(exported_model["run_dir"], base.parent, base.name)
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:  # as TF Serving: the new version AVAILABLE, the one it replaced END
        states = {v["version"]: v["state"] for v in client.get("/v1/models/adult").json()["model_version_status"]}
        if states == {"2": "AVAILABLE", "1": "END"}:
            break
        time.sleep(0.1)
    assert states == {"2": "AVAILABLE", "1": "END"}
    assert client.get("/v1/models/adult/versions/2/metadata").status_code == 200
    assert client.post("/v1/models/adult/versions/1:predict", json={"instances": []}).status_code == 404
