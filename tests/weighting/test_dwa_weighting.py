"""Dynamic Weight Average: weights follow T * softmax(L(t-1) / L(t-2) / temperature)."""

import math

import pytest

from mtl.weighting import DynamicWeightAverage, dwa_weights


def current(strategy):
    weights = strategy.task_weights({}, 0)
    return [float(weights[n]) for n in strategy.task_names]


def test_weights_follow_the_loss_ratio_formula_after_two_epochs():
    strategy = DynamicWeightAverage(["a", "b", "c"], temperature=2.0)
    epochs = [{"a_loss": 1.0, "b_loss": 2.0, "c_loss": 4.0}, {"a_loss": 0.5, "b_loss": 1.8, "c_loss": 4.0}]
    for epoch, logs in enumerate(epochs):
        strategy.on_epoch_begin(epoch)
        assert current(strategy) == [1.0, 1.0, 1.0]  # epochs 1 and 2: no ratio yet
        strategy.on_epoch_end(epoch, logs)
    strategy.on_epoch_begin(2)
    ratios = [0.5, 0.9, 1.0]
    exps = [math.exp(r / 2.0) for r in ratios]
    expected = [3 * e / sum(exps) for e in exps]
    assert current(strategy) == pytest.approx(expected, rel=1e-6)
    assert sum(current(strategy)) == pytest.approx(3.0)
    assert current(strategy)[0] < current(strategy)[2]  # the task whose loss fell fastest gets least weight
    strategy.on_epoch_end(2, {"a_loss": 0.5, "b_loss": 0.9, "c_loss": 2.0})
    strategy.on_epoch_begin(3)
    assert current(strategy) == pytest.approx(dwa_weights([0.5, 0.9, 2.0], [0.5, 1.8, 4.0], 2.0), rel=1e-6)


def test_lower_temperature_sharpens_the_weights():
    soft = dwa_weights([0.5, 1.0], [1.0, 1.0], 10.0)
    sharp = dwa_weights([0.5, 1.0], [1.0, 1.0], 0.1)
    assert abs(soft[0] - soft[1]) < 0.1 < abs(sharp[0] - sharp[1])
