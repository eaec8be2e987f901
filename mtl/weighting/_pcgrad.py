"""PCGrad, gradient surgery (Yu et al., "Gradient Surgery for Multi-Task Learning", NeurIPS 2020).

On the shared parameters, each task's gradient is projected onto the normal plane of every other
task's gradient it conflicts with (negative dot product), then the projected gradients are summed.
The other tasks are visited in a fixed cyclic order (task ``i`` first meets ``i+1``) rather than the
paper's random order, so a run is reproducible; for two tasks the two are the same.
"""

from __future__ import annotations

from typing import Any, ClassVar

import keras

from mtl.weighting._base import WeightingStrategy, flatten, unflatten


def project_conflicting(gradients: list[Any]) -> list[Any]:
    """PCGrad's projected per-task gradient vectors."""
    count = len(gradients)
    out = []
    for i in range(count):
        g = gradients[i]
        for k in range(1, count):
            other = gradients[(i + k) % count]
            dot = keras.ops.sum(g * other)
            coef = dot / keras.ops.maximum(keras.ops.sum(other * other), 1e-20)
            g = g - keras.ops.where(dot < 0, coef, 0.0) * other
        out.append(g)
    return out


class PCGrad(WeightingStrategy):
    """Sum of the conflict-free projections of the task gradients."""

    key: ClassVar[str] = "pcgrad"
    uses_gradients: ClassVar[bool] = True

    def combine(self, task_gradients: dict[str, list[Any]], shared_vars: list[Any],
                task_losses: dict[str, Any]) -> list[Any]:
        like = task_gradients[self.task_names[0]]
        projected = project_conflicting([flatten(task_gradients[n]) for n in self.task_names])
        return unflatten(keras.ops.sum(keras.ops.stack(projected), axis=0), like)
