"""Issue 15's small things: --set errors, the stratify fallback, unseen classes, MMoE/PLE units, a taken port, quiet
export, model.keras without optimizer state, tune over training.weighting with task weights."""

from __future__ import annotations

import json
import logging
import socket
from pathlib import Path

import h5py
import pandas as pd
import pytest
from conftest import tiny_config, write_yaml

import mtl.tuning
from mtl.cli import main
from mtl.config import config_from_dict, load_config
from mtl.data import prepare
from mtl.errors import MtlError
from mtl.tasks import MulticlassTask, build_tasks


def test_a_set_error_names_the_override_not_the_config_file(tmp_path: Path) -> None:
    config = write_yaml(tmp_path / "ok.yaml", tiny_config())
    with pytest.raises(MtlError) as caught:
        load_config(config, ["training.epochs=2", "training.batch_size=-3"])
    assert str(caught.value).startswith("--set training.batch_size=-3: training.batch_size:")
    with pytest.raises(MtlError) as caught:
        load_config(config, ["data.split.stratify=incme"])
    assert str(caught.value).startswith("--set data.split.stratify=incme:") and "did you mean 'income'" in str(
        caught.value)
    broken = write_yaml(tmp_path / "bad.yaml", tiny_config(training__epochs=0))
    with pytest.raises(MtlError) as caught:
        load_config(broken, ["training.batch_size=64"])
    assert str(caught.value).startswith(f"{broken}: training.epochs")  # the file's own mistake names the file


def test_the_stratify_fallback_is_said_once(adult_slice: pd.DataFrame, caplog: pytest.LogCaptureFixture) -> None:
    frame = adult_slice.head(200).copy()
    frame.loc[0, "race"] = "Unique"  # a class of one row: neither cut can stratify on it
    raw = tiny_config(tasks__race={"type": "multiclass", "column": "race", "unseen_labels": "ignore"},
                      data__split__stratify="race")
    config = config_from_dict(raw)
    with caplog.at_level(logging.INFO, logger="mtl"):
        prepare(frame, config, build_tasks(config.tasks))
    assert sum("stratified split not possible" in r.getMessage() for r in caplog.records) == 1


def test_an_unseen_class_error_suggests_unseen_labels_ignore() -> None:
    task = MulticlassTask("department", "Department Name").fit(pd.Series(["Tops", "Dresses", "Bottoms"]))
    with pytest.raises(MtlError, match=r"set tasks.department.unseen_labels: ignore"):
        task.encode(pd.Series(["Tops", "Jackets"]))


@pytest.mark.parametrize("trunk", ["mmoe", "ple"])
def test_mixture_trunks_warn_that_units_are_ignored(trunk: str, caplog: pytest.LogCaptureFixture) -> None:
    import keras

    from mtl.config import Config
    from mtl.model import build_trunk

    trunk_config = Config.model_fields["model"].default.trunk.model_copy(update={"type": trunk, "units": [256]})
    with caplog.at_level(logging.WARNING, logger="mtl"):
        build_trunk(keras.Input((4,)), trunk_config, ["a", "b"])
    assert [r.getMessage() for r in caplog.records] == [
        f"model.trunk.units [256] is ignored by a {trunk} trunk: its experts' layers are model.trunk.expert_units "
        "([64])"]
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="mtl"):
        build_trunk(keras.Input((4,)), trunk_config.model_copy(update={"units": [128, 64]}), ["a", "b"])
    assert not caplog.records


def test_a_taken_port_is_an_error_line_and_exit_2(exported_model: dict, capsys: pytest.CaptureFixture) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = str(taken.getsockname()[1])
        for flags, where in ((["--rest_api_port", port, "--port", "0"], "--rest_api_port"),
                             (["--rest_api_port", "0", "--port", port], "--port")):
            assert main(["serve", "--model_base_path", str(exported_model["base"]), *flags]) == 2
            err = capsys.readouterr().err
            assert err == f"error: {where}: cannot listen on 127.0.0.1:{port}: Address already in use\n"


def test_export_is_quiet_and_model_keras_holds_no_optimizer_state(exported_model: dict, tmp_path: Path,
                                                                  caplog: pytest.LogCaptureFixture) -> None:
    from mtl.export import export_run

    with caplog.at_level(logging.INFO):
        export_run(exported_model["run_dir"], tmp_path, "quiet")
    assert not [r.getMessage() for r in caplog.records if r.name in ("tensorflow", "absl")]
    import zipfile

    with zipfile.ZipFile(exported_model["run_dir"] / "model.keras") as archive:
        archive.extract("model.weights.h5", tmp_path)
    with h5py.File(tmp_path / "model.weights.h5") as weights:
        assert "optimizer" not in weights and "layers" in weights


def test_tune_searches_weighting_when_tasks_have_weights(tmp_path: Path, slice_csv: Path, monkeypatch) -> None:
    trained = []

    def fake_train(config, run_dir):  # record the trial's config; "train" in no time
        trained.append(config)
        run_dir.mkdir()
        (run_dir / "metrics.json").write_text(json.dumps({"val": {"income": {"auc": 0.5 + len(trained) / 100}}}))

    monkeypatch.setattr(mtl.tuning, "train", fake_train)
    tune = {"objective": {"task": "income", "metric": "auc"}, "sampler": "random",
            "space": {"training.weighting": ["fixed", "uncertainty", "dwa"]}}
    config = write_yaml(tmp_path / "search.yaml", tiny_config(str(slice_csv), tasks__income__weight=2.0, tune=tune))
    assert main(["tune", "--config", str(config), "--trials", "4", "--out", str(tmp_path / "search")]) == 0
    for trial in trained:
        weights = {name: task.weight for name, task in trial.tasks.items()}
        fixed = trial.training.weighting.name == "fixed"
        assert weights == ({"income": 2.0, "hours_per_week": 1.0} if fixed else {"income": 1.0, "hours_per_week": 1.0})
    assert len({t.training.weighting.name for t in trained}) > 1
