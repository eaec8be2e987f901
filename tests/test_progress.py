"""Progress and quiet (issue 15): one line per epoch off a terminal, stage lines for long steps, "trial k of N",
and no TensorFlow start-up lines in a real ``mtl`` process unless ``--debug``."""

import io
import json
import logging
import os
import subprocess
import sys

import pytest
from conftest import ROOT, tiny_config, write_yaml

import mtl.tuning
from mtl.cli import STARTUP_NOISE, main
from mtl.config import config_from_dict
from mtl.data import prepare
from mtl.tasks import build_tasks
from mtl.training import EpochLine, fit_verbosity


def run_mtl(*args: str, cwd=None) -> subprocess.CompletedProcess:
    """A real ``mtl`` process as a user starts it: no TF_CPP_MIN_LOG_LEVEL, output not a terminal."""
    env = {k: v for k, v in os.environ.items() if k != "TF_CPP_MIN_LOG_LEVEL"}
    env["PYTHONPATH"] = str(ROOT)
    return subprocess.run([sys.executable, "-c", "import sys; from mtl.cli import main; sys.exit(main())", *args],
                          capture_output=True, text=True, cwd=cwd or ROOT, env=env, timeout=300)


def test_train_process_is_quiet_prints_one_line_per_epoch_and_its_export(tmp_path, slice_csv):
    raw = tiny_config(str(slice_csv), training__verbose="auto",
                      output={"export": {"base_path": str(tmp_path / "exports"), "name": "adult"}})
    config = write_yaml(tmp_path / "c.yaml", raw)
    done = run_mtl("train", "--config", str(config), "--run-dir", str(tmp_path / "run"))
    assert done.returncode == 0, done.stderr
    noise = [line for line in done.stderr.splitlines() if STARTUP_NOISE.search(line)]
    assert noise == []
    epochs = [line for line in done.stdout.splitlines() if line.startswith("epoch ")]
    assert [line.split(" - ")[0] for line in epochs] == ["epoch 1/2", "epoch 2/2"]
    assert "val_income_auc" in epochs[0]
    assert f"exporting to {tmp_path / 'exports' / 'adult'}: done in" in done.stderr


@pytest.mark.parametrize("debug", [False, True])
def test_run_training_is_quiet_unless_debug(tmp_path, debug):
    env = {k: v for k, v in os.environ.items() if k != "TF_CPP_MIN_LOG_LEVEL"}
    argv = ["--debug"] * debug + ["--config", str(tmp_path / "missing.yaml")]
    done = subprocess.run([sys.executable, "-m", "run_training", *argv], capture_output=True, text=True, cwd=ROOT,
                          env={**env, "PYTHONPATH": str(ROOT)}, timeout=300)
    assert done.returncode == 2
    assert done.stderr.splitlines()[-1] == f"error: config file not found: {tmp_path / 'missing.yaml'}"
    noise = [line for line in done.stderr.splitlines() if STARTUP_NOISE.search(line)]
    assert bool(noise) == debug  # TensorFlow is imported either way: its lines show only with --debug


def test_auto_verbosity_is_a_bar_on_a_terminal_and_lines_elsewhere(monkeypatch):
    class Terminal(io.StringIO):
        def isatty(self) -> bool:
            return True

    monkeypatch.setattr(sys, "stdout", io.StringIO())
    assert fit_verbosity("auto") == 2
    monkeypatch.setattr(sys, "stdout", Terminal())
    assert fit_verbosity("auto") == 1
    assert fit_verbosity(0) == 0


def test_epoch_line_names_the_epoch_and_leaves_out_loss_weights(capsys):
    line = EpochLine(epochs=12)
    line.on_epoch_begin(2)
    line.on_epoch_end(2, {"income_auc": 0.88, "loss": 0.41234, "income_weight": 0.5, "val_income_auc": 0.9012,
                          "val_loss": 0.43})
    out = capsys.readouterr().out
    assert out.count("\n") == 1
    assert out.startswith("epoch 3/12 - ") and "weight" not in out
    assert out.split(" - ")[2:] == ["loss 0.4123", "income_auc 0.88", "val_loss 0.43", "val_income_auc 0.9012\n"]


def test_smote_says_what_it_resamples(adult_slice, caplog):
    caplog.set_level(logging.INFO, logger="mtl")
    config = config_from_dict(tiny_config(training__smote={"task": "income"}))
    prepare(adult_slice, config, build_tasks(config.tasks), "test data")
    lines = [r.getMessage() for r in caplog.records if r.getMessage().startswith("SMOTE on income")]
    assert lines[0].endswith("labelled training rows ...")
    assert "done in" in lines[1]


def test_tune_says_trial_k_of_n(tmp_path, slice_csv, monkeypatch, caplog):
    def fake_train(config, run_dir):  # each "trial" scores at once; the search around it is real
        run_dir.mkdir()
        (run_dir / "metrics.json").write_text(json.dumps({"val": {"income": {"auc": 0.6}}}))

    monkeypatch.setattr(mtl.tuning, "train", fake_train)
    caplog.set_level(logging.INFO, logger="mtl")
    tune = {"objective": {"task": "income", "metric": "auc"}, "sampler": "random",
            "space": {"training.learning_rate": {"log_uniform": [1.0e-3, 1.0e-2]}}}
    config = write_yaml(tmp_path / "search.yaml", tiny_config(str(slice_csv), tune=tune))
    assert main(["tune", "--config", str(config), "--trials", "3", "--out", str(tmp_path / "search")]) == 0
    starts = [r.getMessage().split(":")[0] for r in caplog.records if " of 3 (number " in r.getMessage()]
    assert starts == ["trial 1 of 3 (number 0)", "trial 2 of 3 (number 1)", "trial 3 of 3 (number 2)"]


@pytest.mark.parametrize("where", ["before", "after"])
def test_debug_flag_is_taken_before_or_after_the_command(where):
    from mtl.cli import _parser

    argv = ["--debug", "eda", "--config", "c.yaml"] if where == "before" else ["eda", "--config", "c.yaml", "--debug"]
    assert _parser().parse_args(argv).debug is True
    assert _parser().parse_args(["eda", "--config", "c.yaml"]).debug is False
