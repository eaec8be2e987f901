"""Thresholds chosen on the validation split: the rules, and the run -> model.keras -> export -> serve chain."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from conftest import tiny_config
from sklearn import metrics as skm

import mtl
from mtl.config import config_from_dict
from mtl.errors import MtlError
from mtl.tasks import BinaryTask


@pytest.fixture(scope="module")
def scores() -> tuple[np.ndarray, np.ndarray]:
    """Scores of a rare class: 6 % positives, overlapping score distributions."""
    rng = np.random.default_rng(0)
    y = (rng.random(600) < 0.06).astype(int)
    prob = 1 / (1 + np.exp(-(rng.normal(size=600) + 1.8 * y - 2.5)))
    return y, prob


def _rates(y: np.ndarray, prob: np.ndarray) -> tuple[np.ndarray, ...]:
    """Precision, recall, F1, TPR and FPR at every distinct score used as the cut (``prob >= cut``), by brute force."""
    cuts = np.unique(prob)
    hard = prob[None, :] >= cuts[:, None]
    tp = (hard & (y == 1)).sum(1)
    fp = (hard & (y == 0)).sum(1)
    precision = tp / np.maximum(tp + fp, 1)
    recall = tp / (y == 1).sum()
    f1 = np.where(precision + recall > 0, 2 * precision * recall / np.maximum(precision + recall, 1e-12), 0)
    return cuts, precision, recall, f1, fp / (y == 0).sum()


def _task(rule: dict) -> BinaryTask:
    task = BinaryTask("t", "c", threshold=rule)
    task.classes_ = ["no", "yes"]
    return task


def test_f1_rule_gives_the_best_f1_of_all_cuts(scores) -> None:
    y, prob = scores
    task = _task({"optimize": "f1"})
    chosen = task.choose_on_validation(y, prob)
    assert chosen == {"threshold": task.threshold_, "optimize": "f1"}
    best = _rates(y, prob)[3].max()
    assert skm.f1_score(y, prob >= task.threshold_) == pytest.approx(best)
    assert task.decision_threshold == task.threshold_ < 0.5  # a rare class: the F1-best cut is far below 0.5
    assert task.evaluate(y, prob)["f1"] == pytest.approx(best)


def test_youden_and_constrained_rules(scores) -> None:
    y, prob = scores
    youden = _task({"optimize": "youden"})
    youden.choose_on_validation(y, prob)
    cuts, precision, recall, _, fpr = _rates(y, prob)
    hard = prob >= youden.threshold_
    assert hard[y == 1].mean() - hard[y == 0].mean() == pytest.approx((recall - fpr).max())

    at_recall = _task({"optimize": {"precision_at_recall": 0.8}})
    at_recall.choose_on_validation(y, prob)
    hard = prob >= at_recall.threshold_
    assert skm.recall_score(y, hard) >= 0.8
    assert skm.precision_score(y, hard) == pytest.approx(precision[recall >= 0.8].max())

    at_precision = _task({"optimize": {"recall_at_precision": 0.3}})
    at_precision.choose_on_validation(y, prob)
    hard = prob >= at_precision.threshold_
    assert skm.precision_score(y, hard) >= 0.3


def test_a_fixed_threshold_is_not_changed_and_metrics_include_the_new_ones(scores) -> None:
    y, prob = scores
    task = BinaryTask("t", "c", threshold=0.3)
    assert task.choose_on_validation(y, prob) == {}
    report = task.evaluate(y, prob)
    assert report["pr_auc"] == pytest.approx(skm.average_precision_score(y, prob))
    assert report["balanced_accuracy"] == pytest.approx(skm.balanced_accuracy_score(y, prob >= 0.3))
    assert report["mcc"] == pytest.approx(skm.matthews_corrcoef(y, prob >= 0.3))


@pytest.mark.parametrize("threshold", [{"optimize": "best"}, {"optimize": {"precision_at_recall": 1.5}}, 1.2])
def test_bad_threshold_config_is_one_line(threshold) -> None:
    with pytest.raises(MtlError, match="tasks.income.threshold"):
        config_from_dict(tiny_config(tasks__income__threshold=threshold))


def test_the_threshold_chosen_on_validation_is_the_one_the_export_serves(tmp_path: Path, adult_slice) -> None:
    from fastapi.testclient import TestClient

    from mtl.serving import create_app, load

    csv = tmp_path / "adult.csv"
    adult_slice.head(1200).to_csv(csv, index=False)
    raw = tiny_config(str(csv), tasks__income__threshold={"optimize": "f1"}, training__epochs=1,
                      output__export={"base_path": str(tmp_path / "exports"), "name": "adult"})
    result = mtl.train(config_from_dict(raw), tmp_path / "run")
    metrics = json.loads((result.run_dir / "metrics.json").read_text())
    chosen = metrics["chosen_on_val"]["income"]["threshold"]
    assert chosen == result.tasks["income"].threshold_ and 0 < chosen < 1
    assert mtl.load_model(str(result.run_dir / "model.keras")).tasks["income"].decision_threshold == chosen
    served = load(tmp_path / "exports" / "adult")
    assert served.tasks["income"]["threshold"] == chosen
    rows = pd.read_csv(csv).head(40)[served.features.keys()]
    table = served.predict_frame(rows)
    expected = np.where(table["income"] >= chosen, ">50K", "<=50K")
    assert table["income_label"].tolist() == expected.tolist()
    with TestClient(create_app(tmp_path / "exports" / "adult", watch=False)) as client:
        answer = client.post("/v1/models/adult:predict", json={"inputs": {c: rows[c].tolist() for c in rows}})
    assert answer.status_code == 200, answer.text
    served_labels = [row[0] for row in answer.json()["outputs"]["income_label"]]
    assert served_labels == expected.tolist()
    assert (result.run_dir / "plots" / "roc_income.png").is_file()
