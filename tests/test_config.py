"""Config validation: unknown keys with suggestions, types, cross-references, overrides."""

import pytest
from conftest import tiny_config, write_yaml

from mtl.config import apply_overrides, config_from_dict, load_config
from mtl.errors import MtlError


def error_of(raw: dict) -> str:
    with pytest.raises(MtlError) as info:
        config_from_dict(raw, source="my.yaml")
    return str(info.value)


def test_default_config_is_valid():
    config = load_config("configs/default.yaml")
    assert config.tasks["income"].type == "binary"
    assert config.tasks["hours_per_week"].weight.schedule == "linear"


def test_unknown_top_level_key_suggests_nearest():
    raw = tiny_config()
    raw["trainig"] = {}
    assert error_of(raw) == "my.yaml: trainig: unknown key (did you mean 'training'?)"


def test_unknown_task_key_names_path_and_suggestion():
    raw = tiny_config()
    raw["tasks"]["income"]["positve"] = ">50K"
    assert error_of(raw) == "my.yaml: tasks.income.positve: unknown key (did you mean 'positive'?)"


def test_unknown_nested_key_in_model_heads():
    raw = tiny_config(model__heads={"income": {"unitz": [4]}})
    assert error_of(raw) == "my.yaml: model.heads.income.unitz: unknown key (did you mean 'units'?)"


def test_wrong_type_names_path_and_expected_type():
    message = error_of(tiny_config(training__epochs="many"))
    assert message.startswith("my.yaml: training.epochs: Input should be a valid integer")
    assert "'many'" in message


def test_unknown_task_type():
    message = error_of(tiny_config(tasks__income__type="binari"))
    assert message.startswith("my.yaml: tasks.income.type:")
    assert "binary" in message


def test_split_fractions_must_sum_to_one():
    message = error_of(tiny_config(data__split={"train": 0.8, "val": 0.1, "test": 0.2}))
    assert "data.split" in message and "sum to 1" in message


def test_smote_on_regression_task_is_rejected():
    message = error_of(tiny_config(training__smote={"task": "hours_per_week"}))
    assert "training.smote.task" in message and "regression" in message


def test_stratify_must_name_a_classification_task():
    message = error_of(tiny_config(data__split__stratify="incom"))
    assert "data.split.stratify" in message and "did you mean 'income'" in message


def test_loss_given_as_a_name_or_a_mapping():
    config = config_from_dict(tiny_config(tasks__income__loss="focal"))
    assert config.tasks["income"].loss.name == "focal"
    config = config_from_dict(tiny_config(tasks__hours_per_week__loss={"name": "huber", "delta": 2.0}))
    assert config.tasks["hours_per_week"].loss.delta == 2.0


def test_weight_schedule_needs_its_keys():
    message = error_of(tiny_config(tasks__income__weight={"schedule": "step", "start": 0.1, "end": 1.0}))
    assert "tasks.income.weight" in message and "at" in message


def test_set_overrides_parse_yaml_values(tmp_path):
    path = write_yaml(tmp_path / "c.yaml", tiny_config())
    config = load_config(path, ["training.epochs=5", "model.trunk.units=[32, 16]", "tasks.income.weight=0.5"])
    assert config.training.epochs == 5
    assert config.model.trunk.units == [32, 16]
    assert config.tasks["income"].weight == 0.5


def test_set_override_of_unknown_key_is_an_error(tmp_path):
    path = write_yaml(tmp_path / "c.yaml", tiny_config())
    with pytest.raises(MtlError, match=r"training.epoch: unknown key \(did you mean 'epochs'\?\)"):
        load_config(path, ["training.epoch=5"])


def test_bad_override_syntax():
    with pytest.raises(MtlError, match="expected key.path=value"):
        apply_overrides({}, ["training.epochs"])


def test_empty_and_invalid_yaml_files(tmp_path):
    empty = tmp_path / "empty.yaml"
    empty.write_text("")
    with pytest.raises(MtlError, match="empty.yaml: the config file is empty"):
        load_config(empty)
    broken = tmp_path / "broken.yaml"
    broken.write_text("data: [unclosed\n")
    with pytest.raises(MtlError, match="broken.yaml:2: not valid YAML"):
        load_config(broken)
    with pytest.raises(MtlError, match="config file not found"):
        load_config(tmp_path / "nope.yaml")


def test_a_target_cannot_be_an_input_or_share_its_name():
    message = error_of(tiny_config(tasks__rel={"type": "multiclass", "column": "relationship"}))
    assert "tasks.rel.column: 'relationship' is also an input feature" in message
    message = error_of(tiny_config(tasks__age={"type": "regression", "column": "fnlwgt"}))
    assert "tasks.age: a task cannot share its name with the input feature 'age'" in message
