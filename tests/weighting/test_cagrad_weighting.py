"""CAGrad: the update stays within c*|g0| of the mean gradient and improves the worst task."""

import numpy as np
import pytest
import tensorflow as tf

from mtl.weighting import CAGrad, cagrad_direction


def test_update_is_in_the_ball_and_improves_the_worst_task():
    g1, g2 = tf.constant([1.0, 0.0]), tf.constant([-0.8, 0.6])
    g0 = (g1 + g2) / 2
    c = 0.5
    d, w = cagrad_direction([g1, g2], c)
    assert float(tf.norm(d - g0)) <= c * float(tf.norm(g0)) + 1e-5
    worst = min(float(tf.reduce_sum(g * d)) for g in (g1, g2))
    assert worst > min(float(tf.reduce_sum(g * g0)) for g in (g1, g2)) + 1e-3
    assert float(tf.reduce_sum(w)) == pytest.approx(1.0)
    # the dual weights minimise <g_w, g0> + c |g0| |g_w| over the simplex (checked on a grid)
    grid = np.linspace(0, 1, 2001)
    G = np.stack([g1.numpy(), g2.numpy()])
    gw = grid[:, None] * G[0] + (1 - grid[:, None]) * G[1]
    objective = gw @ g0.numpy() + c * np.linalg.norm(g0) * np.linalg.norm(gw, axis=1)
    assert float(w[0]) == pytest.approx(grid[objective.argmin()], abs=0.01)


def test_c_zero_is_the_plain_sum_and_shapes_are_kept():
    strategy = CAGrad(["a", "b"], c=0.0)
    grads = {"a": [tf.constant([1.0, 2.0]), tf.constant([[3.0]])],
             "b": [tf.constant([-1.0, 0.5]), tf.constant([[1.0]])]}
    out = strategy.combine(grads, [tf.zeros(2), tf.zeros((1, 1))], {})
    np.testing.assert_allclose(out[0], [0.0, 2.5], atol=1e-5)
    np.testing.assert_allclose(out[1], [[4.0]], atol=1e-5)
