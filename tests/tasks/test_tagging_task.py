"""TaggingTask: tags per word, padding and unseen tags, masked loss, seqeval entity scores."""

import numpy as np
import pandas as pd
import pytest

from mtl.errors import MtlError
from mtl.tasks import TaggingTask

TAGS = pd.Series([["B-PER", "O", "O", "B-LOC", "I-LOC"], "O B-ORG", None])


def fitted(**kwargs) -> TaggingTask:
    return TaggingTask("ner", "ner_tags", **kwargs).fit(TAGS[:2])


def test_fit_puts_outside_first_and_groups_entity_types():
    assert fitted().classes_ == ["O", "B-LOC", "I-LOC", "B-ORG", "B-PER"]


def test_encode_pads_with_minus_one_and_marks_missing_rows():
    y, present = fitted().encode(TAGS)
    assert y.shape == (3, 5)
    np.testing.assert_array_equal(y[1], [0, 3, -1, -1, -1])
    np.testing.assert_array_equal(present, [True, True, False])


def test_an_unseen_tag_is_an_error_naming_row_and_word_or_is_ignored():
    unseen = pd.Series([["O", "B-MISC"]], index=[41])
    with pytest.raises(MtlError, match=r"row 42, word 2: tag 'B-MISC' is not one of the training tags"):
        fitted().encode(unseen)
    y, present = fitted(unseen_labels="ignore").encode(unseen)
    np.testing.assert_array_equal(y[0], [0, -1])
    assert present[0]


def test_loss_ignores_padding_and_words_the_model_did_not_reach():
    task = fitted()
    probs = np.full((1, 4, 5), 0.2, dtype="float32")
    probs[0, 3] = 0.0  # a word no window reached
    y = np.array([[4, 0, 0, 2, -1, -1]], dtype="int32")  # wider than the batch: the split's longest row
    assert float(task.per_example_loss(y, probs)[0]) == pytest.approx(-np.log(0.2), rel=1e-5)
    probs[0, 2] = [0.1, 0.1, 0.1, 0.6, 0.1]  # a counted word: its loss moves the row's mean
    expected = (2 * -np.log(0.2) - np.log(0.1)) / 3
    assert float(task.per_example_loss(y, probs)[0]) == pytest.approx(expected, rel=1e-5)


def test_evaluate_scores_entities_with_seqeval():
    task = fitted()
    y_true, _ = task.encode(TAGS[:2])
    perfect = np.eye(5, dtype="float32")[np.maximum(y_true, 0)]
    assert task.evaluate(y_true, perfect)["f1"] == 1.0
    wrong = perfect.copy()
    wrong[0, 4] = np.eye(5)[0]  # "New York" loses its I-LOC: the LOC entity is wrong (B-LOC alone)
    scores = task.evaluate(y_true, wrong)
    assert scores["precision"] == pytest.approx(2 / 3) and scores["recall"] == pytest.approx(2 / 3)
    assert scores["accuracy"] == pytest.approx(6 / 7)


def test_decode_maps_back_to_words():
    task = fitted()
    probs = np.zeros((1, 3, 5), dtype="float32")
    probs[0, 0, 4] = probs[0, 1, 0] = 1.0  # third word: not reached
    assert task.decode(probs, [3]) == [["B-PER", "O", "O"]]
