"""Random loss weighting: T * softmax of standard normal draws, fresh each step."""

import numpy as np
import pytest

from mtl.weighting import RandomLossWeighting


def test_weights_are_a_softmax_of_normal_draws_summing_to_the_task_count():
    strategy = RandomLossWeighting(["a", "b", "c"], seed=3)
    draws = np.array([[float(w) for w in strategy.task_weights({}, 0).values()] for _ in range(600)])
    assert np.all(draws > 0)
    np.testing.assert_allclose(draws.sum(axis=1), 3.0, rtol=1e-5)
    assert draws.mean(axis=0) == pytest.approx([1.0, 1.0, 1.0], abs=0.12)
    # log(w_i / w_j) = z_i - z_j with z ~ N(0, 1): mean 0, standard deviation sqrt(2)
    log_ratio = np.log(draws[:, 0] / draws[:, 1])
    assert abs(log_ratio.mean()) < 0.15
    assert log_ratio.std() == pytest.approx(np.sqrt(2), rel=0.1)
    assert len({tuple(np.round(row, 6)) for row in draws}) == len(draws)  # a fresh draw every step


def test_same_seed_same_draws():
    first = [float(w) for w in RandomLossWeighting(["a", "b"], seed=7).task_weights({}, 0).values()]
    again = [float(w) for w in RandomLossWeighting(["a", "b"], seed=7).task_weights({}, 0).values()]
    assert first == again
