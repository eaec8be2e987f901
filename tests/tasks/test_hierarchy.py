"""Label trees: learned from training rows, decoding keeps every child inside its predicted parent."""

import numpy as np
import pandas as pd
import pytest
from conftest import TINY_BACKBONE

from mtl.config import config_from_dict
from mtl.data import prepare
from mtl.errors import MtlError
from mtl.tasks import build_tasks, consistency, decode_hierarchy, hierarchy_order


def clothing(rows: int = 400) -> pd.DataFrame:
    from mtl.data import read_table

    frame = read_table(dataset="womens_clothing")[0].dropna(subset=["review_text", "department_name"])
    return frame.head(rows).reset_index(drop=True)


def config(**tasks) -> object:
    return config_from_dict({
        "data": {"dataset": "womens_clothing", "features": {"text": "review_text"}},
        "tasks": {"department": {"type": "multiclass", "column": "department_name"},
                  "clothing_class": {"type": "multiclass", "column": "class_name", "parent": "department",
                                     "unseen_labels": "ignore"}, **tasks},
        "model": {"backbone": TINY_BACKBONE},
    })


def test_the_tree_is_learned_from_training_rows():
    cfg = config()
    tasks = build_tasks(cfg.tasks)
    prepare(clothing(), cfg, tasks)
    child = tasks["clothing_class"]
    tree = dict(zip(child.classes_, child.parent_of_, strict=True))
    assert tree["Dresses"] == "Dresses" and tree["Knits"] == "Tops" and tree["Jeans"] == "Bottoms"
    assert child.tree_matrix().sum(axis=0).tolist() == [1.0] * len(child.classes_)


def test_a_class_under_two_parents_is_an_error():
    frame = clothing()
    frame.loc[7, "class_name"] = "Dresses"
    frame.loc[7, "department_name"] = "Tops"
    cfg = config()
    with pytest.raises(MtlError, match=r"tasks.clothing_class.parent: .*class 'Dresses' .* one parent"):
        prepare(frame, cfg, build_tasks(cfg.tasks))


def test_decoding_keeps_a_three_level_chain_consistent():
    from mtl.tasks import MulticlassTask

    top = MulticlassTask("top", "a")
    top.classes_ = ["x", "y"]
    mid = MulticlassTask("mid", "b", parent="top")
    mid.classes_ = ["x1", "y1", "y2"]
    mid.fit_tree({"x1": "x", "y1": "y", "y2": "y"}, top.classes_)
    low = MulticlassTask("low", "c", parent="mid")
    low.classes_ = ["x1a", "y1a", "y2a", "y2b"]
    low.fit_tree({"x1a": "x1", "y1a": "y1", "y2a": "y2", "y2b": "y2"}, mid.classes_)
    tasks = {"low": low, "mid": mid, "top": top}
    assert hierarchy_order(tasks) == ["top", "mid", "low"]
    raw = {"top": np.array([[0.4, 0.6]]), "mid": np.array([[0.9, 0.05, 0.05]]),
           "low": np.array([[0.7, 0.1, 0.1, 0.1]])}
    decoded = {k: np.asarray(v) for k, v in decode_hierarchy(tasks, raw).items()}
    np.testing.assert_allclose(decoded["mid"], [[0.0, 0.5, 0.5]])
    np.testing.assert_allclose(decoded["low"], [[0.0, 1.0, 0.0, 0.0]])
    assert consistency(mid, raw["top"], raw["mid"]) == 0.0
    assert consistency(mid, decoded["top"], decoded["mid"]) == 1.0
    assert consistency(low, decoded["mid"], decoded["low"]) == 1.0
