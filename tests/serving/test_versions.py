"""The version lifecycle as TF Serving's, each case with marker models whose output says which model answered.

A marker model is a real SavedModel (``tf.saved_model.save``) taking one float input ``x`` and answering the
constant it was built with, so a prediction tells exactly which export on disk served it. Polls are explicit
(``poll()``, with a given clock for the back-off), so no test waits on a timer.
"""

from __future__ import annotations

import logging
import shutil
import threading
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from mtl.errors import MtlError
from mtl.serving import ModelRegistry, ModelVersions, VersionPolicy, create_app, load, read_model_config, versions


def _answer(client: TestClient, name: str = "m", version: int | None = None) -> tuple[int, str, float | str]:
    """``(HTTP status, served version, marker or error)`` of one prediction."""
    url = f"/v1/models/{name}" + (f"/versions/{version}" if version is not None else "") + ":predict"
    answer = client.post(url, json={"instances": [1.0]})
    if answer.status_code != 200:
        return answer.status_code, "", answer.json()["error"]
    status = client.get(f"/v1/models/{name}").json()["model_version_status"]
    available = [s["version"] for s in status if s["state"] == "AVAILABLE"]
    return 200, ",".join(available), answer.json()["predictions"][0]


def _states(client: TestClient, name: str = "m") -> dict[str, str]:
    return {s["version"]: s["state"] for s in client.get(f"/v1/models/{name}").json()["model_version_status"]}


@pytest.fixture
def served(tmp_path: Path):  # noqa: ANN201
    """``(base, model, client)``: one model ``m`` on ``tmp_path/m``, polled only when a test says so."""
    base = tmp_path / "m"
    base.mkdir()
    model = ModelVersions("m", base)
    registry = ModelRegistry({"m": model})
    with TestClient(create_app(registry=registry)) as client:
        yield base, model, client


def test_a_removed_version_is_unloaded_and_the_previous_one_serves(served, markers: dict,  # noqa: ANN001
                                                                   put_marker) -> None:  # noqa: ANN001
    base, model, client = served
    put_marker(markers, base, "1", 1)
    put_marker(markers, base, "2", 2)
    model.poll()
    assert _answer(client) == (200, "2", 2.0)
    assert _states(client) == {"2": "AVAILABLE"}
    shutil.rmtree(base / "2")
    model.poll()
    assert _answer(client) == (200, "1", 1.0)
    assert _states(client) == {"2": "END", "1": "AVAILABLE"}
    assert _answer(client, version=2)[0] == 404
    assert client.get("/v1/models/m/versions/2/metadata").status_code == 404
    shutil.rmtree(base / "1")
    model.poll()
    status, _, error = _answer(client)
    assert status == 404 and error == "Servable not found for request: Latest(m)"
    assert str(base) not in error


def test_a_version_re_exported_under_a_number_seen_before_is_loaded_fresh(served, markers: dict,  # noqa: ANN001
                                                                          put_marker) -> None:  # noqa: ANN001
    base, model, client = served
    put_marker(markers, base, "1", 1)
    model.poll()
    assert _answer(client) == (200, "1", 1.0)
    shutil.rmtree(base / "1")  # deleted and exported again between two polls
    put_marker(markers, base, "1", 3)
    model.poll()
    assert _answer(client) == (200, "1", 3.0)
    shutil.rmtree(base / "1")  # deleted, seen gone, then exported again
    model.poll()
    assert _answer(client)[0] == 404
    put_marker(markers, base, "1", 4)
    model.poll()
    assert _answer(client) == (200, "1", 4.0)
    assert _states(client) == {"1": "AVAILABLE"}


def test_a_failing_version_is_logged_once_backs_off_and_blocks_nothing(tmp_path: Path, markers: dict, put_marker,
                                                                       caplog: pytest.LogCaptureFixture) -> None:
    base = tmp_path / "m"
    base.mkdir()
    put_marker(markers, base, "1", 1)
    put_marker(markers, base, "2", 2)
    (base / "2" / "saved_model.pb").write_bytes(b"not a protobuf")
    attempts: list[Path] = []

    def counting_load(folder: Path):  # noqa: ANN202
        attempts.append(folder)
        return load(folder)

    model = ModelVersions("m", base, poll_seconds=1.0, loader=counting_load)
    registry = ModelRegistry({"m": model})
    with caplog.at_level(logging.ERROR, logger="mtl.serve"):
        registry.start(watch=False)  # start-up goes on; the version that loads serves
        with TestClient(create_app(registry=registry)) as client:
            assert _answer(client) == (200, "1", 1.0)
            assert _answer(client, version=1) == (200, "1", 1.0)
            states = client.get("/v1/models/m").json()["model_version_status"]
            assert states[0]["version"] == "2" and states[0]["state"] == "END"
            assert states[0]["status"]["error_code"] == "UNKNOWN" and states[0]["status"]["error_message"]
            assert str(base) not in states[0]["status"]["error_message"]
            tries = [a.name for a in attempts].count("2")
            for _ in range(3):  # within the back-off: no new attempt
                model.poll(now=model._versions[2].retry_at - 0.01)
            assert [a.name for a in attempts].count("2") == tries
            first_delay = model._versions[2].retry_at
            model.poll(now=first_delay)  # due: tried again, fails again, waits twice as long
            assert [a.name for a in attempts].count("2") == tries + 1
            assert model._versions[2].retry_at - first_delay == pytest.approx(2 * model.poll_seconds * 2)
            errors = [r for r in caplog.records if "version 2 not loaded" in r.getMessage()]
            assert len(errors) == 1  # logged once, not at every retry
            shutil.rmtree(base / "2")
            put_marker(markers, base, "2", 2)  # fixed: new files, loaded at the next poll without waiting
            model.poll(now=first_delay + 0.1)
            assert _answer(client) == (200, "2", 2.0)
            assert _states(client) == {"2": "AVAILABLE", "1": "END"}


def test_a_truncated_metadata_file_or_no_loadable_version_never_stops_start_up(tmp_path: Path,
                                                                             markers: dict, put_marker) -> None:
    base = tmp_path / "m"
    base.mkdir()
    put_marker(markers, base, "1", 1)
    (base / "1" / "assets").mkdir(exist_ok=True)
    (base / "1" / "assets" / "mtl_metadata.json").write_text('{"tasks": {"inc')
    registry = ModelRegistry({"m": ModelVersions("m", base)})
    registry.start(watch=False)
    with TestClient(create_app(registry=registry)) as client:
        assert _answer(client)[0] == 404
        assert _states(client) == {"1": "END"}
        assert client.get("/v1/models/m/metadata").status_code == 404


def test_folder_names_that_are_not_integers_are_ignored(served, markers: dict, put_marker) -> None:  # noqa: ANN001
    base, model, client = served
    put_marker(markers, base, "1", 1)
    for name in ("1²", "01", "+2", "1_0", "-3", "٣", "two", ".tmp-9"):
        put_marker(markers, base, name, 4)
    assert versions(base) == [1]
    model.poll()
    assert _answer(client) == (200, "1", 1.0)
    assert _states(client) == {"1": "AVAILABLE"}


def test_loading_is_reported_while_a_version_loads(tmp_path: Path, markers: dict, put_marker) -> None:
    base = tmp_path / "m"
    base.mkdir()
    put_marker(markers, base, "1", 1)
    release = threading.Event()
    started = threading.Event()

    def slow_load(folder: Path):  # noqa: ANN202
        started.set()
        assert release.wait(60)
        return load(folder)

    model = ModelVersions("m", base, loader=slow_load)
    poller = threading.Thread(target=model.poll)
    poller.start()
    assert started.wait(60)
    assert [(s["version"], s["state"]) for s in model.status()] == [(1, "LOADING")]
    release.set()
    poller.join(60)
    assert [(s["version"], s["state"]) for s in model.status()] == [(1, "AVAILABLE")]


def test_model_config_file_with_policies_and_labels(tmp_path: Path, markers: dict, put_marker) -> None:
    for name in ("a", "b", "c"):
        (tmp_path / name).mkdir()
        for version in (1, 2, 3):
            put_marker(markers, tmp_path / name, str(version), version)
    config = tmp_path / "models.config"
    config.write_text(f"""
model_config_list {{
  config {{ name: "a" base_path: "{tmp_path / 'a'}" model_platform: "tensorflow"
           model_version_policy {{ latest {{ num_versions: 2 }} }} }}
  config {{ name: "b" base_path: "{tmp_path / 'b'}"
           model_version_policy {{ specific {{ versions: 1 versions: 2 }} }}
           version_labels {{ key: "stable" value: 1 }} version_labels {{ key: "canary" value: 2 }} }}
  config {{ name: "c" base_path: "{tmp_path / 'c'}" model_version_policy {{ all {{}} }} }}
}}
""")
    registry = ModelRegistry.from_config_file(config)
    registry.start(watch=False)
    with TestClient(create_app(registry=registry)) as client:
        assert _states(client, "a") == {"3": "AVAILABLE", "2": "AVAILABLE"}
        assert _answer(client, "a")[2] == 3.0 and _answer(client, "a", 2)[2] == 2.0
        assert _answer(client, "a", 1)[0] == 404
        assert _states(client, "b") == {"2": "AVAILABLE", "1": "AVAILABLE"}
        assert _answer(client, "b")[2] == 2.0
        stable = client.post("/v1/models/b/labels/stable:predict", json={"instances": [1.0]})
        assert stable.json()["predictions"] == [1.0]
        canary = client.post("/v1/models/b/labels/canary:predict", json={"inputs": [5.0, 6.0]})
        assert canary.json()["outputs"] == [2.0, 2.0]
        assert client.get("/v1/models/b/labels/stable").json()["model_version_status"][0]["version"] == "1"
        unknown = client.post("/v1/models/b/labels/nope:predict", json={"instances": [1.0]})
        assert unknown.status_code == 400 and unknown.json()["error"] == "Unrecognized servable version label: nope"
        assert _states(client, "c") == {"3": "AVAILABLE", "2": "AVAILABLE", "1": "AVAILABLE"}
        assert _answer(client, "c", 1)[2] == 1.0
        assert client.get("/v1/models/d").status_code == 404


@pytest.mark.parametrize(("text", "needle"), [
    ("model_config_list { config { name: 'a' } }", "has no base_path"),
    ("model_config_list { config { name: 'a' base_path: '/x' } config { name: 'a' base_path: '/y' } }",
     "given twice"),
    ("model_config_list { config { name 'a' } }", "not a model_config_list text proto"),
    ("model_config_list { }", "holds no model_config_list"),
    ("model_config_list { config { name: 'a' base_path: '/x' model_platform: 'onnx' } }", "only 'tensorflow'"),
    ("model_config_list { config { name: 'a' base_path: '/x' model_version_policy { specific { versions: 1 } } "
     "version_labels { key: 'x' value: 2 } } }", "never serves"),
])
def test_bad_model_config_files_are_one_line_errors(tmp_path: Path, text: str, needle: str) -> None:
    config = tmp_path / "models.config"
    config.write_text(text)
    with pytest.raises(MtlError) as info:
        read_model_config(config)
    assert needle in str(info.value) and str(info.value).startswith(f"--model_config_file {config}")
    assert "\n" not in str(info.value)


def test_the_latest_policy_counts_only_versions_that_load(tmp_path: Path, markers: dict, put_marker) -> None:
    base = tmp_path / "m"
    base.mkdir()
    for version in (1, 2, 3):
        put_marker(markers, base, str(version), version)
    (base / "3" / "saved_model.pb").write_bytes(b"broken")
    model = ModelVersions("m", base, VersionPolicy("latest", count=2))
    model.poll()
    assert [(s["version"], s["state"]) for s in model.status()] == [(3, "END"), (2, "AVAILABLE"), (1, "AVAILABLE")]
    assert model.resolve()[0] == 2


def test_mtl_serve_config_errors_are_one_line_exit_2(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    from mtl.cli import main

    config = tmp_path / "models.config"
    config.write_text("model_config_list { config { name: 'a' } }")
    assert main(["serve", "--model_config_file", str(config)]) == 2
    expected = f"error: --model_config_file {config}: config 1: model 'a' has no base_path"
    assert capsys.readouterr().err.strip() == expected
    batching = tmp_path / "batching.config"
    batching.write_text("max_batch_size { value: 8 }")
    assert main(["serve", "--model_base_path", str(tmp_path), "--batching_parameters_file", str(batching)]) == 2
    assert "needs --enable_batching" in capsys.readouterr().err


def test_a_taken_rest_port_is_one_line_exit_2(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    import socket

    from mtl.cli import main

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        assert main(["serve", "--model_base_path", str(tmp_path), "--rest_api_port", str(port)]) == 2
    assert capsys.readouterr().err.startswith(f"error: --rest_api_port: cannot listen on 127.0.0.1:{port}")
