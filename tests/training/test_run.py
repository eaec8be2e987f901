"""Whole runs: what a run directory holds, a killed run resumed, divergence, the default config."""

import json
import math
import os
import signal
import subprocess
import sys
import time

import keras
import numpy as np
import pandas as pd
import pytest
from conftest import ROOT, run_cli, tiny_config, write_yaml

import mtl
from mtl.config import config_from_dict, load_config
from mtl.errors import MtlError


def test_run_directory_contents(tmp_path, slice_csv):
    config = config_from_dict(tiny_config(
        path=str(slice_csv), training__epochs=3,
        tasks__race={"type": "multiclass", "column": "race"},
        tasks__income__weight={"schedule": "linear", "start": 0.0, "end": 1.0}))
    result = mtl.train(config, str(tmp_path / "run"))
    run = result.run_dir
    metrics = json.loads((run / "metrics.json").read_text())
    assert set(metrics) == {"val", "test"}
    assert set(metrics["test"]) == {"income", "hours_per_week", "race"}
    assert set(metrics["test"]["income"]) == {"auc", "pr_auc", "accuracy", "balanced_accuracy", "precision", "recall",
                                              "f1", "mcc", "n"}
    assert set(metrics["test"]["hours_per_week"]) == {"rmse", "mae", "mape", "r2", "n"}
    assert set(metrics["test"]["race"]) == {"accuracy", "macro_f1", "top_k_accuracy", "n"}
    history = pd.read_csv(run / "history.csv")
    assert history["epoch"].tolist() == [0, 1, 2]
    assert history["income_weight"].tolist() == [0.0, 0.5, 1.0]
    for column in ("loss", "income_loss", "val_income_auc", "hours_per_week_rmse", "learning_rate"):
        assert column in history
    assert load_config(run / "config.yaml") == config
    plots = {p.name for p in (run / "plots").iterdir()}
    assert {"learning_curves.png", "loss_weights.png", "roc_income.png", "pred_vs_true_hours_per_week.png",
            "confusion_race.png"} <= plots
    assert any((run / "tensorboard").rglob("events.out.tfevents.*"))
    assert {p.name for p in (run / "checkpoints").iterdir()} == {"state.json", "epoch-0002.npz", "epoch-0003.npz"}
    model = mtl.load_model(str(run / "model.keras"))
    assert isinstance(model, keras.Model) and set(model.output) == {"income", "hours_per_week", "race"}
    from mtl.evaluation import evaluate_split, predict

    again = evaluate_split(result.tasks, result.data.test, predict(model, result.data.test))
    assert again["income"]["auc"] == pytest.approx(metrics["test"]["income"]["auc"], abs=1e-6)


def test_killed_run_resumes_from_its_last_epoch(tmp_path, slice_csv):
    raw = tiny_config(path=str(slice_csv), training__epochs=30, training__batch_size=16,
                      training__steps_per_execution=1, output__run_dir=str(tmp_path / "run"))
    config = write_yaml(tmp_path / "c.yaml", raw)
    env = {**os.environ, "PYTHONPATH": str(ROOT), "TF_CPP_MIN_LOG_LEVEL": "2"}
    process = subprocess.Popen([sys.executable, "-m", "run_training", "--config", str(config)], cwd=ROOT, env=env,
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    state = tmp_path / "run" / "checkpoints" / "state.json"
    deadline = time.time() + 240
    while time.time() < deadline and process.poll() is None:
        if state.is_file() and json.loads(state.read_text())["epochs_completed"] >= 2:
            break
        time.sleep(0.05)
    assert process.poll() is None, "the run ended before it could be killed"
    process.send_signal(signal.SIGKILL)
    process.wait()
    killed_after = json.loads(state.read_text())["epochs_completed"]
    assert killed_after < 30 and not (tmp_path / "run" / "metrics.json").exists()

    result = run_cli("train", "--resume", str(tmp_path / "run"))
    assert result.returncode == 0, result.stderr
    assert f"resuming {tmp_path / 'run'} after epoch {killed_after}" in result.stderr
    history = pd.read_csv(tmp_path / "run" / "history.csv")
    assert history["epoch"].tolist() == list(range(30))
    assert (tmp_path / "run" / "metrics.json").is_file()


def test_divergence_stops_with_a_clear_message_and_no_metrics(tmp_path, slice_csv, capsys):
    from mtl.cli import main

    raw = tiny_config(path=str(slice_csv), training__optimizer="sgd", training__learning_rate=1e12,
                      training__epochs=3, tasks__hours_per_week__loss="mse")
    config = write_yaml(tmp_path / "c.yaml", raw)
    assert main(["train", "--config", str(config), "--run-dir", str(tmp_path / "run")]) == 2
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert err.startswith("error: training stopped in epoch 1") and "the loss became" in err
    assert err.endswith("no epoch was completed (lower training.learning_rate?)")
    assert not (tmp_path / "run").exists()  # no checkpoint: nothing a --resume could continue


def test_divergence_guard_raises_on_nan():
    from mtl.training import DivergenceGuard, TrainingDiverged

    guard = DivergenceGuard()
    guard.on_train_batch_end(0, {"loss": 0.3})
    with pytest.raises(TrainingDiverged, match="the loss became nan"):
        guard.on_train_batch_end(1, {"loss": math.nan})
    assert issubclass(TrainingDiverged, MtlError)


def test_epoch_tensorboard_writes_each_epoch_under_train_and_validation(tmp_path):
    import tensorflow as tf

    from mtl.training import EpochTensorBoard

    board = EpochTensorBoard(tmp_path)
    board.on_train_begin()
    board.on_epoch_end(0, {"loss": 0.5, "val_loss": 0.75})
    board.on_epoch_end(1, {"loss": 0.25, "val_loss": 0.5})
    board.on_train_end()
    for run, expected in (("train", [0.5, 0.25]), ("validation", [0.75, 0.5])):
        values = [(e.step, v.tag, float(tf.make_ndarray(v.tensor))) for f in (tmp_path / run).iterdir()
                  for e in tf.compat.v1.train.summary_iterator(str(f)) for v in e.summary.value]
        assert values == [(0, "epoch_loss", expected[0]), (1, "epoch_loss", expected[1])]


def test_reduce_on_plateau_and_cosine_schedules_change_the_learning_rate(tmp_path, slice_csv):
    plateau = {"type": "reduce_on_plateau", "monitor": "val_loss", "patience": 0, "factor": 0.5, "min_lr": 0}
    config = config_from_dict(tiny_config(path=str(slice_csv), training__epochs=3, training__learning_rate=1e-9,
                                          training__lr_schedule=plateau))  # no progress: a plateau every epoch
    rates = mtl.train(config, str(tmp_path / "plateau")).history["learning_rate"].to_numpy()
    np.testing.assert_allclose(rates, [1e-9, 1e-9, 5e-10], rtol=1e-5)  # best set after epoch 1, cut after 2
    cosine = {"type": "cosine", "warmup_epochs": 1}
    config = config_from_dict(tiny_config(path=str(slice_csv), training__epochs=4, training__lr_schedule=cosine))
    rates = mtl.train(config, str(tmp_path / "cosine")).history["learning_rate"].to_numpy()
    assert rates[0] == pytest.approx(1e-3, rel=1e-3)  # end of warm-up: the peak
    assert rates[1] > rates[2] > rates[3]  # then cosine decay


@pytest.mark.slow
def test_default_config_on_full_adult(tmp_path):
    """The README's figures: the default config on all 48,842 Adult rows reaches test AUC >= 0.90."""
    result = run_cli("train", "--config", "configs/default.yaml", "--run-dir", str(tmp_path / "run"), timeout=900)
    assert result.returncode == 0, result.stderr[-2000:]
    metrics = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert metrics["test"]["income"]["auc"] >= 0.90
    assert 5 < metrics["test"]["hours_per_week"]["rmse"] < 15  # hours, not standard deviations
    assert "test income: auc" in result.stdout
