"""CAGrad, conflict-averse gradient descent (Liu et al., "Conflict-Averse Gradient Descent for Multi-task
Learning", NeurIPS 2021).

On the shared parameters the update ``d`` maximises the worst task's improvement ``min_i <g_i, d>``
within a ball of radius ``c * |g0|`` around the mean gradient ``g0``. Its dual: find simplex weights
``w`` minimising ``<g_w, g0> + c |g0| |g_w|`` (``g_w = sum w_i g_i``), then
``d = g0 + c |g0| g_w / |g_w|``. The dual is solved in the graph by mirror descent on the task Gram
matrix. The update is multiplied by the number of tasks so that ``c = 0`` gives the plain sum of the
task gradients, the same scale as fixed weights of 1.
"""

from __future__ import annotations

from typing import Any, ClassVar

import keras

from mtl.weighting._base import WeightingStrategy, flatten, unflatten


def cagrad_direction(gradients: list[Any], c: float, steps: int = 100, rate: float = 0.5) -> tuple[Any, Any]:
    """``(d, w)``: CAGrad's update direction for the task gradient vectors, and the dual weights."""
    g = keras.ops.stack(gradients)  # (T, D)
    count = len(gradients)
    gram = keras.ops.matmul(g, keras.ops.transpose(g))
    scale = keras.ops.maximum(keras.ops.mean(keras.ops.diagonal(gram)), 1e-20)
    gram_n = gram / scale
    mean_w = keras.ops.ones((count,)) / count
    g0_norm_n = keras.ops.sqrt(keras.ops.maximum(keras.ops.sum(mean_w * keras.ops.matmul(gram_n, mean_w)), 0.0))
    radius_n = c * g0_norm_n
    linear = keras.ops.matmul(gram_n, mean_w)

    def step(_: Any, w: Any) -> Any:
        gw = keras.ops.matmul(gram_n, w)
        gw_norm = keras.ops.sqrt(keras.ops.maximum(keras.ops.sum(w * gw), 1e-20))
        grad = linear + radius_n * gw / gw_norm
        w = w * keras.ops.exp(-rate * grad)
        return w / keras.ops.sum(w)

    w = keras.ops.fori_loop(0, steps, step, mean_w)
    g0 = keras.ops.mean(g, axis=0)
    gw = keras.ops.sum(w[:, None] * g, axis=0)
    g0_norm = keras.ops.sqrt(keras.ops.sum(g0 * g0))
    gw_norm = keras.ops.sqrt(keras.ops.maximum(keras.ops.sum(gw * gw), 1e-20))
    return g0 + c * g0_norm * gw / gw_norm, w


class CAGrad(WeightingStrategy):
    """The worst-task-improving update within ``c |g0|`` of the mean gradient."""

    key: ClassVar[str] = "cagrad"
    uses_gradients: ClassVar[bool] = True

    def __init__(self, task_names: list[str], c: float = 0.4, **kwargs: Any) -> None:
        super().__init__(task_names, **kwargs)
        self.c = float(c)

    def combine(self, task_gradients: dict[str, list[Any]], shared_vars: list[Any],
                task_losses: dict[str, Any]) -> list[Any]:
        like = task_gradients[self.task_names[0]]
        direction, _ = cagrad_direction([flatten(task_gradients[n]) for n in self.task_names], self.c)
        return unflatten(len(self.task_names) * direction, like)

    def params(self) -> dict[str, Any]:
        return {"c": self.c}
