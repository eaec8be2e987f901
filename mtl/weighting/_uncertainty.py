"""Homoscedastic uncertainty weighting (Kendall, Gal and Cipolla, "Multi-Task Learning Using Uncertainty
to Weigh Losses for Scene Geometry and Semantics", CVPR 2018).

Each task has a learned log-variance ``s = log sigma^2``; the total loss is
``sum(0.5 * exp(-s) * L + 0.5 * s)``. Minimising over ``s`` gives ``sigma^2 = L``, so a task's weight
``0.5 * exp(-s)`` tends to ``1 / (2 sigma^2)``: noisy tasks (large irreducible loss) are down-weighted.
The same regression form is used for every task type (a common simplification of the paper's
classification term).
"""

from __future__ import annotations

from typing import Any, ClassVar

import keras

from mtl.weighting._base import WeightingStrategy


class UncertaintyWeighting(WeightingStrategy):
    """Learned ``1 / (2 sigma^2)`` weights with a ``log sigma`` penalty."""

    key: ClassVar[str] = "uncertainty"

    def __init__(self, task_names: list[str], **kwargs: Any) -> None:
        super().__init__(task_names, **kwargs)
        self.log_vars = {n: self.add_weight(shape=(), initializer="zeros", name=f"{n}_log_var")
                         for n in self.task_names}

    def task_weights(self, task_losses: dict[str, Any], step: Any) -> dict[str, Any]:
        return {n: 0.5 * keras.ops.exp(-self.log_vars[n]) for n in self.task_names}

    def extra_loss(self) -> Any:
        return keras.ops.sum(keras.ops.stack([0.5 * self.log_vars[n] for n in self.task_names]))
