"""Each kind of bad input: one line naming the place, exit code 2, no traceback, no run directory."""

import numpy as np
import pytest
from conftest import ROOT, run_cli, tiny_config, write_yaml

from mtl.cli import main


def csv_config(tmp_path, frame, **overrides):
    data = tmp_path / "data.csv"
    frame.to_csv(data, index=False)
    return write_yaml(tmp_path / "config.yaml", tiny_config(path=str(data), **overrides))


def broken_value(frame):
    frame = frame.copy()
    frame["age"] = frame["age"].astype(object)
    frame.loc[41, "age"] = "forty"
    return frame


def no_train_labels(frame):
    frame = frame.copy()
    frame["spare"] = np.nan
    return frame


CASES = {
    "unknown key": (lambda f: f, {"training__epohcs": 3}, "training.epohcs: unknown key (did you mean 'epochs'?)"),
    "missing column": (lambda f: f, {"tasks__income__column": "incme"},
                       "tasks.income.column: column 'incme' not found in"),
    "non-numeric value": (broken_value, {}, "column 'age', row 42: 'forty' is not a number"),
    "binary with many values": (lambda f: f, {"tasks__race": {"type": "binary", "column": "race"}},
                                "must hold two values, found 5"),
    "task without training labels": (no_train_labels, {"tasks__spare": {"type": "regression", "column": "spare"}},
                                     "tasks.spare: no labels"),
    "split not summing to one": (lambda f: f, {"data__split": {"train": 0.5, "val": 0.1, "test": 0.1}},
                                 "split fractions must sum to 1"),
    "smote on regression": (lambda f: f, {"training__smote": {"task": "hours_per_week"}},
                            "SMOTE needs a binary or multiclass task"),
    "unknown monitor": (lambda f: f, {"training__early_stopping": {"monitor": "val_income_acu"}},
                        "'val_income_acu' is not a logged metric (did you mean 'val_income_auc'?)"),
}


@pytest.mark.parametrize("case", CASES)
def test_bad_config_or_data(case, tmp_path, adult_slice, capsys):
    change, overrides, expected = CASES[case]
    config = csv_config(tmp_path, change(adult_slice), **overrides)
    run_dir = tmp_path / "run"
    assert main(["train", "--config", str(config), "--run-dir", str(run_dir)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith("error: ") and expected in err[-1]
    assert "Traceback" not in "\n".join(err)
    assert not run_dir.exists()


@pytest.mark.parametrize("content, expected", [("", "is empty"), ("age,income\n", "has no data rows"),
                                               (None, "file not found")])
def test_bad_data_file(content, expected, tmp_path, capsys):
    data = tmp_path / "data.csv"
    if content is not None:
        data.write_text(content)
    config = write_yaml(tmp_path / "c.yaml", tiny_config(path=str(data)))
    assert main(["train", "--config", str(config), "--run-dir", str(tmp_path / "run")]) == 2
    assert "error: data.path: " in capsys.readouterr().err and not (tmp_path / "run").exists()


def test_resume_of_a_directory_that_is_not_a_run(tmp_path, capsys):
    assert main(["train", "--resume", str(tmp_path)]) == 2
    assert "error: --resume: " in capsys.readouterr().err


def test_run_directory_is_never_overwritten(tmp_path, capsys):
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / "keep.txt").write_text("x")
    config = write_yaml(tmp_path / "c.yaml", tiny_config())
    assert main(["train", "--config", str(config), "--run-dir", str(tmp_path / "run")]) == 2
    assert "already exists and is not empty" in capsys.readouterr().err


def test_cli_process_prints_one_line_and_exits_2(tmp_path):
    config = write_yaml(tmp_path / "c.yaml", tiny_config(tasks__income__tpye="binary"))
    result = run_cli("train", "--config", str(config), cwd=ROOT)
    assert result.returncode == 2
    assert result.stderr.strip().splitlines()[-1] == (
        f"error: {config}: tasks.income.tpye: unknown key (did you mean 'type'?)")
    assert "Traceback" not in result.stderr
