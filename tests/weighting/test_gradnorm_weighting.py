"""GradNorm: weights learned so that the weighted task gradient norms on the shared layer balance."""

import numpy as np
import pytest
import tensorflow as tf

from mtl.errors import MtlError
from mtl.weighting import GradNorm


def norms_after(strategy, base, losses, steps):
    """Run the weight update on fixed unweighted gradients ``base`` (the gradients seen are w_i * base_i)."""
    shared = [tf.zeros_like(base["a"])]
    for _ in range(steps):
        weights = strategy.task_weights(losses, 0)
        strategy.combine({n: [float(weights[n]) * base[n]] for n in base}, shared, losses)
    weights = {n: float(w) for n, w in strategy.task_weights(losses, 0).items()}
    return {n: weights[n] * float(tf.norm(base[n])) for n in base}, weights


def test_alpha_zero_equalises_the_gradient_norms():
    base = {"a": tf.constant([2.0, 0.0]), "b": tf.constant([0.0, 0.5])}  # norms 4:1 at equal weights
    losses = {"a": tf.constant(1.0), "b": tf.constant(1.0)}
    norms, weights = norms_after(GradNorm(["a", "b"], alpha=0.0, lr=0.01), base, losses, 300)
    assert norms["a"] / norms["b"] == pytest.approx(1.0, abs=0.15)
    assert weights["a"] + weights["b"] == pytest.approx(2.0)
    assert weights["a"] < 0.6 < 1.4 < weights["b"]


def test_alpha_gives_the_slower_task_the_larger_gradient():
    base = {"a": tf.constant([1.0, 0.0]), "b": tf.constant([0.0, 1.0])}
    strategy = GradNorm(["a", "b"], alpha=1.0, lr=0.01)
    start = {"a": tf.constant(1.0), "b": tf.constant(1.0)}
    norms_after(strategy, base, start, 1)  # records the first-step losses
    later = {"a": tf.constant(0.25), "b": tf.constant(1.0)}  # a has trained faster than b
    norms, _ = norms_after(strategy, base, later, 300)
    assert norms["b"] / norms["a"] > 1.5


def test_norms_use_only_the_named_last_shared_layer():
    import keras

    strategy = GradNorm(["a", "b"], layers=["last"])
    first = keras.layers.Dense(1, name="first")
    last = keras.layers.Dense(1, name="last")
    first.build((None, 1))
    last.build((None, 1))
    shared = first.weights + last.weights
    assert strategy.norm_indices(shared) == [2, 3]
    assert GradNorm(["a", "b"]).norm_indices(shared) == [0, 1, 2, 3]  # used on its own: all shared variables
    for declared in (["renamed"], []):  # declared layers that are not shared: an error, never a silent fallback
        with pytest.raises(MtlError, match="gradnorm needs the trunk's last shared layers"):
            GradNorm(["a", "b"], layers=declared).norm_indices(shared)
    np.testing.assert_equal(len(shared), 4)
