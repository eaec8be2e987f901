"""Bad text input: one line naming the place, exit code 2, no traceback, no run directory."""

import pandas as pd
import pytest
from conftest import run_cli, text_config, write_jsonl, write_yaml

from mtl.cli import main


def blank_text(frame: pd.DataFrame) -> pd.DataFrame:
    return frame.assign(text="")


def short_tags(frame: pd.DataFrame) -> pd.DataFrame:
    frame = frame.copy()
    frame.at[3, "slots"] = frame.at[3, "slots"][:-1]
    return frame


def unknown_test_tag(frame: pd.DataFrame) -> pd.DataFrame:
    frame = frame.copy()
    row = frame.index[frame["split"] == "test"][0]
    frame.at[row, "slots"] = ["B-spaceport"] + frame.at[row, "slots"][1:]
    return frame


CHILD = {"type": "multiclass", "column": "intent", "parent": "dept"}
CASES = {
    "text column missing": (lambda f: f, {"data__features__text": "txt"},
                            "data.features.text: column 'txt' not found in"),
    "text column empty": (blank_text, {}, "data.features.text: column 'text' of "),
    "tags not matching words": (short_tags, {}, "row 4: 18 tags for 19 words"),
    "unknown tag in test": (unknown_test_tag, {"tasks__slots__unseen_labels": "error"},
                            "tag 'B-spaceport' is not one of the training tags"),
    "parent that does not exist": (lambda f: f, {"tasks__child": CHILD},
                                   "tasks.child.parent: 'dept' is not another multiclass task"),
    "parents in a cycle": (lambda f: f, {"tasks__a": {"type": "multiclass", "column": "intent", "parent": "b"},
                                         "tasks__b": {"type": "multiclass", "column": "intent", "parent": "a"}},
                           "the parents form a cycle: a -> b -> a"),
    "backbone path that is not a model": (lambda f: f, {"model__backbone": {"preset": "{tmp}"}},
                                          "model.backbone.preset: {tmp} is not a model: no config.json"),
    "tagging without text": (lambda f: f, {"data__features": {"categorical": ["split"]}},
                             "a tagging task needs data.features.text"),
    "window stride past the window": (lambda f: f, {"data__window": {"stride": 40}},
                                      "window.stride 40 would skip word pieces"),
}


@pytest.mark.parametrize("case", CASES)
def test_bad_text_input(case, tmp_path, atis_frame, capsys):
    change, overrides, expected = CASES[case]
    frame = atis_frame[atis_frame["split"] != "val"].groupby("split").head(40).reset_index(drop=True)
    data = write_jsonl(tmp_path / "atis.jsonl", change(frame))
    overrides = {k: ({**v, "preset": str(tmp_path)} if isinstance(v, dict) and v.get("preset") == "{tmp}" else v)
                 for k, v in overrides.items()}
    config = write_yaml(tmp_path / "c.yaml", text_config(str(data), **overrides))
    run_dir = tmp_path / "run"
    assert main(["train", "--config", str(config), "--run-dir", str(run_dir)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith("error: ") and expected.format(tmp=tmp_path) in err[-1], err[-1]
    assert "Traceback" not in "\n".join(err)
    assert not run_dir.exists()


def test_predict_text_on_a_model_without_text(exported_model):
    done = run_cli("predict", "--model", str(exported_model["base"]), "--text", "hello")
    assert done.returncode == 2
    assert done.stderr.strip().splitlines()[-1] == "error: --text: this model takes no text input; use --row or --input"
