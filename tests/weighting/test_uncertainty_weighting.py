"""Uncertainty weighting: learned weights approach 1/(2 sigma^2) of each task's noise."""

import keras
import numpy as np
import pytest
import tensorflow as tf

from mtl.weighting import UncertaintyWeighting


def test_weights_move_to_one_over_two_sigma_squared_of_the_noise():
    rng = np.random.default_rng(0)
    x = rng.normal(size=4000).astype("float32")
    noise = {"noisy": 2.0, "clean": 0.5}
    targets = {n: tf.constant(3 * x + rng.normal(scale=s, size=x.size).astype("float32")) for n, s in noise.items()}
    strategy = UncertaintyWeighting(list(noise))
    slope = keras.Variable(0.0)
    variables = [slope, *strategy.trainable_variables]
    optimizer = keras.optimizers.Adam(0.05)
    optimizer.build(variables)

    @tf.function
    def step():
        with tf.GradientTape() as tape:
            losses = {n: tf.reduce_mean(tf.square(t - slope * x)) for n, t in targets.items()}
            weights = strategy.task_weights(losses, 0)
            total = sum(weights[n] * losses[n] for n in losses) + strategy.extra_loss()
        optimizer.apply(tape.gradient(total, variables), variables)
        return weights

    for _ in range(600):
        weights = step()
    assert float(slope) == pytest.approx(3.0, abs=0.05)
    for name, sigma in noise.items():
        assert float(weights[name]) == pytest.approx(1 / (2 * sigma**2), rel=0.1)
    assert float(weights["clean"]) > 10 * float(weights["noisy"])


def test_starts_at_one_half_and_adds_the_log_variance_penalty():
    strategy = UncertaintyWeighting(["a", "b"])
    weights = strategy.task_weights({"a": 1.0, "b": 1.0}, 0)
    assert [float(weights[n]) for n in "ab"] == [0.5, 0.5]
    strategy.log_vars["a"].assign(2.0)
    assert float(strategy.extra_loss()) == pytest.approx(1.0)
    assert len(strategy.trainable_variables) == 2
