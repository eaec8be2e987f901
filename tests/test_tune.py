"""``mtl tune``: a real Optuna search on tiny Adult, resume after a killed trial, failed trials, bad input."""

import csv
import json

import optuna
import pytest
import yaml
from conftest import ROOT, run_cli, tiny_config, write_yaml

import mtl.tuning
from mtl.cli import main
from mtl.training import TrainingDiverged

SPACE = {
    "training.learning_rate": {"log_uniform": [1.0e-3, 1.0e-2]},
    "model.trunk.units": [[16], [32, 16]],
}


def tune_config(tmp_path, csv_path, space=SPACE, **objective):
    tune = {"objective": {"task": "income", "metric": "auc", **objective}, "sampler": "random", "space": space}
    return write_yaml(tmp_path / "search.yaml", tiny_config(str(csv_path), training__epochs=1, tune=tune))


def read_trials(out):
    with open(out / "trials.csv", newline="") as handle:
        return list(csv.DictReader(handle))


def test_search_resume_after_a_killed_trial_and_train_the_best(tmp_path, slice_csv, capsys):
    config, out = tune_config(tmp_path, slice_csv), tmp_path / "search"
    assert main(["tune", "--config", str(config), "--trials", "2", "--out", str(out)]) == 0
    rows = read_trials(out)
    assert [r["state"] for r in rows] == ["COMPLETE", "COMPLETE"]
    assert set(rows[0]) >= {"number", "val_income_auc", "duration_s", "run_dir", "model.trunk.units", "error"}
    for row in rows:  # the objective is the run's own validation metric
        assert row["run_dir"] == str(out / f"trial-{int(row['number']):04d}")
        metrics = json.loads((out / f"trial-{int(row['number']):04d}" / "metrics.json").read_text())
        assert float(row["val_income_auc"]) == pytest.approx(metrics["val"]["income"]["auc"])
    best = yaml.safe_load((out / "best_config.yaml").read_text())
    assert "tune" not in best and best["training"]["epochs"] == 1
    best_row = max(rows, key=lambda r: float(r["val_income_auc"]))
    assert best["training"]["learning_rate"] == pytest.approx(float(best_row["training.learning_rate"]))
    assert "best: trial" in capsys.readouterr().out

    # A killed search leaves a RUNNING trial and a half-written run directory.
    study = optuna.load_study(study_name="search", storage=f"sqlite:///{out / 'optuna.db'}")
    killed = study.ask()
    killed.suggest_float("training.learning_rate", 1.0e-3, 1.0e-2, log=True)
    killed.suggest_categorical("model.trunk.units", ["[16]", "[32, 16]"])
    (out / "trial-0002").mkdir()

    assert main(["tune", "--config", str(config), "--trials", "3", "--out", str(out)]) == 0
    rows = read_trials(out)
    assert [r["state"] for r in rows] == ["COMPLETE", "COMPLETE", "FAIL", "COMPLETE"]
    assert rows[2]["error"] == "interrupted"
    assert rows[3]["training.learning_rate"] == rows[2]["training.learning_rate"]  # re-run with its values
    assert sorted(p.parent.name for p in out.glob("trial-*/metrics.json")) == ["trial-0000", "trial-0001",
                                                                              "trial-0003"]
    assert main(["tune", "--config", str(config), "--trials", "3", "--out", str(out)]) == 0  # nothing to add
    assert len(read_trials(out)) == 4
    assert "3 trials (0 new)" in capsys.readouterr().out

    assert main(["train", "--config", str(out / "best_config.yaml"), "--run-dir", str(tmp_path / "best")]) == 0
    assert (tmp_path / "best" / "metrics.json").is_file()


def test_a_failed_trial_is_recorded_and_the_search_goes_on(tmp_path, slice_csv, monkeypatch, capsys):
    calls = []

    def fake_train(config, run_dir):  # the first trial diverges, the others "train" in no time
        calls.append(run_dir)
        if len(calls) == 1:
            raise TrainingDiverged("training stopped in epoch 1, batch 3: the loss became nan")
        run_dir.mkdir()
        (run_dir / "metrics.json").write_text(json.dumps({"val": {"income": {"auc": 0.5 + len(calls) / 100}}}))

    monkeypatch.setattr(mtl.tuning, "train", fake_train)
    config, out = tune_config(tmp_path, slice_csv), tmp_path / "search"
    assert main(["tune", "--config", str(config), "--trials", "3", "--out", str(out)]) == 0
    rows = read_trials(out)
    assert [r["state"] for r in rows] == ["FAIL", "COMPLETE", "COMPLETE"]
    assert "the loss became nan" in rows[0]["error"]
    assert "3 trials (3 new), 1 failed" in capsys.readouterr().out
    assert "# The best of 3 trials of mtl tune: trial 2," in (out / "best_config.yaml").read_text()


def test_every_trial_failing_is_an_error(tmp_path, slice_csv, capsys):
    # A learning rate of 1e30: every trial's loss becomes infinite in its first epoch, and training stops it.
    config = tune_config(tmp_path, slice_csv, space={"training.learning_rate": [1.0e30]})
    out = tmp_path / "search"
    assert main(["tune", "--config", str(config), "--trials", "2", "--out", str(out)]) == 2
    assert capsys.readouterr().err.strip().splitlines()[-1].startswith(f"error: {out}: every trial failed (2); ")
    assert [r["state"] for r in read_trials(out)] == ["FAIL", "FAIL"]
    assert not (out / "best_config.yaml").exists()


BAD = {
    "no tune section": (None, [], "empty search space"),
    "empty space": ({}, [], "empty search space"),
    "unknown space key": ({"model.trunk.unitz": [[16]]}, [],
                          "tune.space: model.trunk.unitz: unknown key (did you mean 'units'?)"),
    "bad distribution": ({"training.learning_rate": {"loguniform": [1.0e-4, 1.0e-2]}}, [],
                         "tune.space.training.learning_rate.loguniform: unknown key (did you mean 'log_uniform'?)"),
    "bad range": ({"training.learning_rate": {"log_uniform": [0, 1.0e-2]}}, [], "log_uniform: low must be > 0"),
    "value the key refuses": ({"training.learning_rate": [0.01, -1]}, [],
                              "tune.space: training.learning_rate: Input should be greater than 0"),
    "unknown objective task": (SPACE, ["--set", "tune.objective.task=incme"],
                               "tune.objective.task: 'incme' is not a task (did you mean 'income'?)"),
    "metric not of the task": (SPACE, ["--set", "tune.objective.metric=rmse"],
                               "tune.objective.metric: 'rmse' is not a metric of task 'income'"),
    "no trials": (SPACE, ["--trials", "0"], "error: --trials: the number of trials must be 1 or more, got 0"),
}


@pytest.mark.parametrize("case", BAD)
def test_bad_input_is_one_line_and_writes_nothing(case, tmp_path, capsys):
    space, extra, expected = BAD[case]
    raw = tiny_config()
    if space is not None:
        raw["tune"] = {"objective": {"task": "income", "metric": "auc"}, "space": space}
    config, out = write_yaml(tmp_path / "c.yaml", raw), tmp_path / "search"
    args = ["tune", "--config", str(config), "--out", str(out), *extra]
    assert main(args if "--trials" in extra else [*args, "--trials", "2"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith("error: ") and expected in err[-1] and "Traceback" not in "\n".join(err)
    assert not out.exists()


def test_cli_process_prints_one_line_and_exits_2(tmp_path):
    config = write_yaml(tmp_path / "c.yaml", tiny_config(tune={"objective": {"task": "income", "metric": "auc"}}))
    result = run_cli("tune", "--config", str(config), "--trials", "3", "--out", str(tmp_path / "search"), cwd=ROOT)
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert result.stderr.strip().splitlines()[-1].startswith(f"error: {config}: empty search space: ")
    assert not (tmp_path / "search").exists()
