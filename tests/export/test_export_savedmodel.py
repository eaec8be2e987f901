"""Exports of a real trained model: TF Serving layout, signature, values, size, atomic versioned writes."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import tensorflow as tf
from conftest import ADULT_CATEGORICAL, ADULT_NUMERIC, run_cli, tiny_config, write_yaml

from mtl.errors import MtlError
from mtl.export import METADATA_FILE, export_run

SAVED_MODEL_CLI = str(Path(sys.executable).parent / "saved_model_cli")


def _cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([SAVED_MODEL_CLI, *args], capture_output=True, text=True, timeout=120,
                          env={"TF_CPP_MIN_LOG_LEVEL": "2", "PATH": str(Path(sys.executable).parent)})


def test_layout_is_what_tf_serving_loads(exported_model: dict) -> None:
    version = exported_model["version_dir"]
    assert version == exported_model["base"] / "1"
    assert (version / "saved_model.pb").is_file() and (version / "variables" / "variables.index").is_file()
    # no temporary folder left behind; the lock file of the base stays (TF Serving reads integer folders only)
    assert sorted(p.name for p in exported_model["base"].iterdir()) == [".export.lock", "1"]


def test_saved_model_cli_show_lists_the_named_signature(exported_model: dict) -> None:
    shown = _cli("show", "--dir", str(exported_model["version_dir"]), "--all")
    assert shown.returncode == 0, shown.stderr
    text = shown.stdout
    assert "signature_def['serving_default']" in text
    assert "Method name is: tensorflow/serving/predict" in text
    for column in ADULT_NUMERIC:
        assert f"inputs['{column}'] tensor_info:\n        dtype: DT_FLOAT\n        shape: (-1)" in text
    for column in ADULT_CATEGORICAL:
        assert f"inputs['{column}'] tensor_info:\n        dtype: DT_STRING\n        shape: (-1)" in text
    assert "outputs['income'] tensor_info:\n        dtype: DT_FLOAT\n        shape: (-1, 1)" in text
    assert "outputs['hours_per_week'] tensor_info:\n        dtype: DT_FLOAT\n        shape: (-1, 1)" in text
    assert "outputs['race'] tensor_info:\n        dtype: DT_FLOAT\n        shape: (-1, 5)" in text
    assert "outputs['race_classes'] tensor_info:\n        dtype: DT_STRING\n        shape: (-1, 5)" in text
    assert "output_0" not in text


def test_saved_model_cli_run_on_raw_values(exported_model: dict) -> None:
    """The TF1 session loader (what TF Serving's C++ loader does) restores every variable the signature reads."""
    exprs = ('age=[39.0,50.0];educational_num=[13.0,9.0];capital_gain=[0.0,0.0];capital_loss=[0.0,0.0];'
             'workclass=["Private","Self-emp-inc"];marital_status=["Never-married","Married-civ-spouse"];'
             'occupation=["Sales","Exec-managerial"];relationship=["Not-in-family","Husband"]')
    ran = _cli("run", "--dir", str(exported_model["version_dir"]), "--tag_set", "serve",
               "--signature_def", "serving_default", "--input_exprs", exprs)
    assert ran.returncode == 0, ran.stderr[-2000:]
    for key in ("income", "hours_per_week", "race", "race_classes"):
        assert f"Result for output key {key}:" in ran.stdout
    assert "b'White'" in ran.stdout


def test_signature_equals_keras_predictions_on_the_test_split(exported_model: dict) -> None:
    from mtl.evaluation import predict

    result = exported_model["result"]
    expected = predict(result.model, result.data.test)
    loaded = tf.saved_model.load(str(exported_model["version_dir"]))
    features = result.data.test.features
    inputs = {c: tf.constant(np.asarray(features[c], "float32")) for c in ADULT_NUMERIC}
    inputs |= {c: tf.constant(np.asarray(features[c]).astype(str)) for c in ADULT_CATEGORICAL}
    got = loaded.signatures["serving_default"](**inputs)
    assert len(features["age"]) > 100
    for task in ("income", "hours_per_week", "race"):
        np.testing.assert_allclose(got[task].numpy(), expected[task], atol=1e-5, rtol=0)
    classes = got["race_classes"].numpy()
    assert classes.shape == expected["race"].shape
    assert [c.decode() for c in classes[0]] == result.tasks["race"].classes_


def test_weights_are_stored_once(exported_model: dict) -> None:
    model = exported_model["result"].model
    weight_bytes = sum(np.prod(w.shape) * 4 for w in model.weights)
    stored = sum(p.stat().st_size for p in (exported_model["version_dir"] / "variables").iterdir())
    assert stored < 1.3 * weight_bytes + 8192, (stored, weight_bytes)
    reader = tf.train.load_checkpoint(str(exported_model["version_dir"] / "variables" / "variables"))
    tensors = [k for k in reader.get_variable_to_shape_map() if k != "_CHECKPOINTABLE_OBJECT_GRAPH"]
    trained = [w for w in model.weights if not w.path.endswith("_weight")]  # loss weights are not read
    assert len(tensors) == len(trained)


def test_metadata_asset_has_features_vocabularies_tasks(exported_model: dict) -> None:
    meta = json.loads((exported_model["version_dir"] / "assets" / METADATA_FILE).read_text())
    result = exported_model["result"]
    features = {f["column"]: f for f in meta["features"]}
    assert sorted(c for c, f in features.items() if f["kind"] == "numeric") == sorted(ADULT_NUMERIC)
    for column in ADULT_NUMERIC:
        assert features[column]["mean_"] == pytest.approx(float(np.nanmean(result.data.train.features[column])),
                                                          rel=1e-5)
    for column in ADULT_CATEGORICAL:
        assert features[column]["kind"] == "categorical" and features[column]["input_name"] == column
        assert features[column]["vocabulary_"] == sorted(set(result.data.train.features[column]))
    assert meta["tasks"]["income"] == {"type": "binary", "outputs": ["income"], "classes": ["<=50K", ">50K"],
                                       "threshold": 0.4}
    assert meta["tasks"]["race"]["classes"] == result.tasks["race"].classes_
    assert meta["tasks"]["hours_per_week"]["type"] == "regression"


def test_versions_increment_and_existing_versions_are_refused(exported_model: dict, tmp_path: Path) -> None:
    run = exported_model["run_dir"]
    assert export_run(run, tmp_path, "m") == tmp_path / "m" / "1"
    assert export_run(run, tmp_path, "m", version=5) == tmp_path / "m" / "5"
    assert export_run(run, tmp_path, "m") == tmp_path / "m" / "6"
    with pytest.raises(MtlError, match="already exists"):
        export_run(run, tmp_path, "m", version=5)
    with pytest.raises(MtlError, match="not a finished run"):
        export_run(tmp_path, tmp_path, "m")
    assert sorted(p.name for p in (tmp_path / "m").iterdir()) == [".export.lock", "1", "5", "6"]


def test_a_failed_write_leaves_no_version_folder(exported_model: dict, tmp_path: Path,
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    def broken_save(module, path, signatures=None) -> None:  # noqa: ANN001
        Path(path, "saved_model.pb").parent.mkdir(parents=True, exist_ok=True)
        Path(path, "saved_model.pb").write_bytes(b"half")
        raise OSError("disk full")

    monkeypatch.setattr(tf.saved_model, "save", broken_save)
    with pytest.raises(OSError, match="disk full"):
        export_run(exported_model["run_dir"], tmp_path, "m")
    assert [p.name for p in (tmp_path / "m").iterdir()] == [".export.lock"]


@pytest.mark.slow
def test_cli_export_and_export_at_the_end_of_training(slice_csv: Path, tmp_path: Path) -> None:
    raw = tiny_config(str(slice_csv), training__epochs=1)
    raw["output"] = {"export": {"base_path": str(tmp_path / "exports"), "name": "adult"}}
    done = run_cli("train", "--config", str(write_yaml(tmp_path / "c.yaml", raw)), "--run-dir", str(tmp_path / "run"))
    assert done.returncode == 0, done.stderr
    assert (tmp_path / "exports" / "adult" / "1" / "saved_model.pb").is_file()
    assert (tmp_path / "run" / "metrics.json").is_file()

    exported = run_cli("export", str(tmp_path / "run"), "--base-path", str(tmp_path / "exports"), "--name", "adult")
    assert exported.returncode == 0, exported.stderr
    assert (tmp_path / "exports" / "adult" / "2" / "saved_model.pb").is_file()
    again = run_cli("export", str(tmp_path / "run"), "--base-path", str(tmp_path / "exports"), "--name", "adult",
                    "--version", "2")
    assert again.returncode == 2
    assert again.stderr.strip().splitlines()[-1].startswith("error: --version:")
    assert "Traceback" not in again.stderr


def test_an_existing_configured_version_is_refused_before_training(slice_csv: Path, tmp_path: Path) -> None:
    import mtl
    from mtl.config import config_from_dict

    (tmp_path / "exports" / "adult" / "3").mkdir(parents=True)
    raw = tiny_config(str(slice_csv))
    raw["output"] = {"export": {"base_path": str(tmp_path / "exports"), "name": "adult", "version": 3}}
    with pytest.raises(MtlError, match=r"^output.export.version: .* already exists"):
        mtl.train(config_from_dict(raw), tmp_path / "run")
    assert not (tmp_path / "run").exists()
