"""The parity matrix: each feature set x every task type, on small slices of real data, through every path.

One ``mtl.testing.run_parity_test`` call per feature set (numeric only, categorical only, numeric + categorical,
text only, text + numeric + categorical, vector + numeric); each model holds several task types, so six tiny
trainings (one epoch on a few hundred rows) cover binary, regression, multiclass and, where there is text, tagging.
Column names that TensorFlow does not allow as input names (spaces, parentheses, dots, slashes, non-ASCII) are used
in several feature sets, so the signature's name mapping is on every path.
"""

from __future__ import annotations

import copy
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from conftest import TINY_BACKBONE

from mtl.testing import run_parity_test

ADULT_TASKS = {
    "income": {"type": "binary", "column": "income", "positive": ">50K"},
    "hours_per_week": {"type": "regression", "column": "hours_per_week"},
    "race": {"type": "multiclass", "column": "race", "unseen_labels": "ignore"},
}


def _config(features: dict, tasks: dict, **data: object) -> dict:
    """A tiny config: one epoch, a 16-unit trunk; text configs get the 1-layer BERT of ``TINY_BACKBONE``."""
    raw = {
        "seed": 1,
        "data": {"features": features, "split": {"train": 0.8, "val": 0.1, "test": 0.1}, **data},
        "tasks": copy.deepcopy(tasks),
        "model": {"trunk": {"units": [16]}, "head": {"units": [8]}},
        "training": {"epochs": 1, "batch_size": 64, "verbose": 0, "steps_per_execution": 1},
    }
    if "text" in features:
        raw["model"]["backbone"] = copy.deepcopy(TINY_BACKBONE)
        raw["data"]["max_length"] = 32
        raw["training"]["batch_size"] = 32
    return raw


@pytest.fixture(scope="module")
def adult(adult_slice: pd.DataFrame) -> pd.DataFrame:
    """300 real Adult rows."""
    return adult_slice.head(300).reset_index(drop=True)


@pytest.fixture(scope="module")
def atis(atis_frame: pd.DataFrame) -> pd.DataFrame:
    """200 real ATIS utterances of the four common intents, with two targets derived from each row (is it a
    flight question; how many words carry a slot) and tabular columns derived from its words."""
    common = atis_frame["intent"].isin(["atis_flight", "atis_airfare", "atis_ground_service", "atis_airline"])
    frame = atis_frame[common].head(200).reset_index(drop=True).drop(columns=["split"])
    words = frame["text"].str.split()
    return frame.assign(**{
        "is_flight": np.where(frame["intent"] == "atis_flight", "yes", "no"),
        "slot_words": [sum(tag != "O" for tag in tags) for tags in frame["slots"]],
        "words (count)": words.map(len),
        "first word": words.str[0],
        "Letzte Wort.": words.str[-1],
    })


ATIS_TASKS = {
    "intent": {"type": "multiclass", "column": "intent", "unseen_labels": "ignore"},
    "slots": {"type": "tagging", "column": "slots", "unseen_labels": "ignore"},
    "is_flight": {"type": "binary", "column": "is_flight", "positive": "yes"},
    "slot_words": {"type": "regression", "column": "slot_words"},
}


def test_numeric_only(adult: pd.DataFrame, tmp_path: Path) -> None:
    names = {"age": "Age (years)", "educational_num": "education.num", "capital_gain": "capital gain ($)",
             "capital_loss": "Kapitalverlust/€"}
    frame = adult.rename(columns=names)
    run_parity_test(frame, _config({"numeric": list(names.values())}, ADULT_TASKS), tmp_path, train_format="csv",
                    subprocess_cli=True)


def test_categorical_only(adult: pd.DataFrame, tmp_path: Path) -> None:
    names = {"workclass": "Work class", "marital_status": "État civil", "occupation": "occupation",
             "relationship": "relationship 关系"}
    frame = adult.rename(columns=names)
    run_parity_test(frame, _config({"categorical": list(names.values())}, ADULT_TASKS), tmp_path,
                    train_format="parquet")


def test_numeric_and_categorical(adult: pd.DataFrame, tmp_path: Path) -> None:
    features = {"numeric": ["age", "educational_num", "capital_gain"],
                "categorical": ["workclass", "native_country", "gender", "education"]}
    run_parity_test(adult, _config(features, ADULT_TASKS), tmp_path, train_format="tsv")


def test_text_only(atis: pd.DataFrame, tmp_path: Path) -> None:
    run_parity_test(atis, _config({"text": "text"}, ATIS_TASKS), tmp_path, train_format="jsonl")


def test_text_numeric_and_categorical(atis: pd.DataFrame, tmp_path: Path) -> None:
    features = {"text": "text", "numeric": ["words (count)"], "categorical": ["first word", "Letzte Wort."]}
    run_parity_test(atis, _config(features, ATIS_TASKS), tmp_path, train_format="parquet")


def test_vector_and_numeric(adult: pd.DataFrame, tmp_path: Path) -> None:
    """A vector column (a fixed-length list of floats per row) built from real numeric columns, trained from a
    CSV file that holds it as JSON list text."""
    vectors = np.stack([adult["educational_num"] / 16, np.log1p(adult["capital_gain"]) / 12,
                        np.log1p(adult["capital_loss"]) / 9], axis=1).round(6)
    frame = adult.assign(**{"profile vector": [list(map(float, v)) for v in vectors]})
    features = {"numeric": ["age", "fnlwgt"], "vector": ["profile vector"]}
    result = run_parity_test(frame, _config(features, ADULT_TASKS), tmp_path, train_format="csv")
    assert len(result.rows["profile vector"].iloc[0]) == 3


def test_task_links(adult: pd.DataFrame, tmp_path: Path) -> None:
    """Task links are part of the one exported graph: a regression -> binary link, a binary -> multiclass link with
    stop_gradient to a head that reads nothing else (``reads_trunk: false``) and a product (funnel) link between two
    binary tasks give the same outputs on every path."""
    tasks = copy.deepcopy(ADULT_TASKS)
    tasks["male"] = {"type": "binary", "column": "gender", "positive": "Male"}
    tasks["income"]["inputs"] = ["hours_per_week", {"task": "male", "product": True}]
    tasks["race"]["inputs"] = [{"task": "income", "stop_gradient": True}]
    tasks["race"]["reads_trunk"] = False  # race's head reads only income's output
    run_parity_test(adult, _config({"numeric": ["age", "educational_num"], "categorical": ["occupation"]}, tasks),
                    tmp_path, train_format="csv")
