"""SMOTE-NC on real Adult rows: only labelled training rows, other tasks masked, val/test untouched."""

import numpy as np
import pytest
from conftest import tiny_config

from mtl.config import config_from_dict
from mtl.data import prepare
from mtl.errors import MtlError
from mtl.tasks import build_tasks


def prepared(frame, **overrides):
    config = config_from_dict(tiny_config(**overrides))
    return prepare(frame, config, build_tasks(config.tasks), "test data")


def test_smote_nc_balances_the_task_and_masks_other_tasks(adult_slice):
    frame = adult_slice.copy()
    frame.loc[:299, "income"] = None  # unlabelled rows are not resampled
    plain = prepared(frame)
    data = prepared(frame, training__smote={"task": "income", "k_neighbors": 5})
    labelled = data.train.labelled("income")
    counts = np.bincount(data.train.labels["income"][labelled].astype(int))
    assert counts[0] == counts[1]
    synthetic = data.train.rows == -1
    assert synthetic.sum() == counts[0] - int(plain.train.labels["income"][plain.train.labelled("income")].sum())
    assert (data.train.weights["hours_per_week"][synthetic] == 0).all()
    assert (data.train.labels["income"][synthetic] == 1).all()
    vocab = set(plain.train.features["workclass"])
    assert set(data.train.features["workclass"][synthetic]) <= vocab  # SMOTE-NC picks real categories
    np.testing.assert_array_equal(data.val.rows, plain.val.rows)
    np.testing.assert_array_equal(data.test.labels["income"], plain.test.labels["income"])


def test_smote_without_categorical_features(adult_slice):
    data = prepared(adult_slice, data__features={"numeric": ["age", "capital_gain"], "categorical": []},
                    training__smote={"task": "income", "sampling_strategy": 0.6})
    y = data.train.labels["income"][data.train.labelled("income")]
    assert y.sum() == pytest.approx(0.6 * (y == 0).sum(), abs=1)


def test_smote_with_too_few_rows_is_a_clear_error(adult_slice):
    with pytest.raises(MtlError, match=r"training.smote: k_neighbors=5 needs more than 5"):
        prepared(adult_slice, tasks__income__label_fraction=0.002, training__smote={"task": "income"})
