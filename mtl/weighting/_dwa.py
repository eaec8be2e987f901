"""Dynamic Weight Average (Liu, Johns and Davison, "End-to-End Multi-Task Learning with Attention",
CVPR 2019).

``w_k(t) = T * exp(r_k / temp) / sum_i exp(r_i / temp)`` with ``r_k = L_k(t-1) / L_k(t-2)``, the ratio of
task ``k``'s mean training loss over the last two epochs; the first two epochs use weight 1. A task whose
loss falls slowly gets more weight. The epoch losses are kept in variables (checkpointed, so a resumed
run continues the same weights); the weights are set at the start of each epoch.
"""

from __future__ import annotations

import math
from typing import Any, ClassVar

from mtl.weighting._base import WeightingStrategy


def dwa_weights(previous: list[float], before: list[float], temperature: float) -> list[float]:
    """The DWA formula for one epoch from the last two epochs' losses.

    >>> [round(w, 4) for w in dwa_weights([1.0, 1.0], [2.0, 1.0], 2.0)]
    [0.8756, 1.1244]
    """
    ratios = [p / b if b > 0 else 1.0 for p, b in zip(previous, before, strict=True)]
    exps = [math.exp(r / temperature) for r in ratios]
    return [len(exps) * e / sum(exps) for e in exps]


class DynamicWeightAverage(WeightingStrategy):
    """Weights from the rate at which each task's training loss falls."""

    key: ClassVar[str] = "dwa"

    def __init__(self, task_names: list[str], temperature: float = 2.0, **kwargs: Any) -> None:
        super().__init__(task_names, **kwargs)
        self.temperature = float(temperature)
        self.weights_now = {n: self.add_weight(shape=(), initializer="ones", trainable=False, name=f"{n}_weight")
                            for n in self.task_names}
        self.history = self.add_weight(shape=(2, len(self.task_names)), initializer="zeros", trainable=False,
                                       name="loss_history")  # row 0: epoch t-1, row 1: epoch t-2
        self.epochs_seen = self.add_weight(shape=(), initializer="zeros", trainable=False, name="epochs_seen")

    def task_weights(self, task_losses: dict[str, Any], step: Any) -> dict[str, Any]:
        return {n: self.weights_now[n] for n in self.task_names}

    def on_epoch_begin(self, epoch: int) -> None:
        if float(self.epochs_seen.numpy()) < 2:
            weights = [1.0] * len(self.task_names)
        else:
            history = self.history.numpy()
            weights = dwa_weights(list(history[0]), list(history[1]), self.temperature)
        for name, value in zip(self.task_names, weights, strict=True):
            self.weights_now[name].assign(value)

    def on_epoch_end(self, epoch: int, logs: dict) -> None:
        latest = [float(logs[f"{n}_loss"]) for n in self.task_names]
        previous = self.history.numpy()[0]
        self.history.assign([latest, list(previous)])
        self.epochs_seen.assign(self.epochs_seen.numpy() + 1)

    def params(self) -> dict[str, Any]:
        return {"temperature": self.temperature}
