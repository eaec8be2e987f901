"""PCGrad: conflicting gradients are projected onto each other's normal plane; others are summed."""

import numpy as np
import tensorflow as tf

from mtl.weighting import PCGrad, project_conflicting


def test_conflicting_pair_is_projected_to_orthogonal():
    g1, g2 = tf.constant([1.0, 0.0]), tf.constant([-1.0, 1.0])
    assert float(tf.reduce_sum(g1 * g2)) < 0
    p1, p2 = project_conflicting([g1, g2])
    np.testing.assert_allclose(p1, [0.5, 0.5], atol=1e-6)
    np.testing.assert_allclose(p2, [0.0, 1.0], atol=1e-6)
    assert abs(float(tf.reduce_sum(p1 * g2))) < 1e-6
    assert abs(float(tf.reduce_sum(p2 * g1))) < 1e-6


def test_combine_sums_projections_per_variable_and_leaves_agreeing_gradients_alone():
    strategy = PCGrad(["a", "b"])
    shared = [tf.zeros((2,)), tf.zeros((1, 1))]
    conflicting = {"a": [tf.constant([1.0, 0.0]), tf.constant([[0.0]])],
                   "b": [tf.constant([-1.0, 1.0]), tf.constant([[0.0]])]}
    out = strategy.combine(conflicting, shared, {})
    np.testing.assert_allclose(out[0], [0.5, 1.5], atol=1e-6)
    assert out[1].shape == (1, 1)
    agreeing = {"a": [tf.constant([1.0, 0.0]), tf.constant([[2.0]])],
                "b": [tf.constant([1.0, 1.0]), tf.constant([[1.0]])]}
    out = strategy.combine(agreeing, shared, {})
    np.testing.assert_allclose(out[0], [2.0, 1.0])
    np.testing.assert_allclose(out[1], [[3.0]])


def test_three_tasks_each_projected_gradient_no_longer_conflicts_with_the_last_it_met():
    grads = [tf.constant([1.0, 0.0, 0.0]), tf.constant([-1.0, 1.0, 0.0]), tf.constant([0.0, -1.0, 1.0])]
    projected = project_conflicting(grads)
    # task 0 meets task 1 then task 2; the last projection leaves it orthogonal to or agreeing with task 2
    assert float(tf.reduce_sum(projected[0] * grads[2])) >= -1e-6
    assert not np.allclose(projected[0], grads[0])
