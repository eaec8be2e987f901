"""Random loss weighting (Lin et al., "Reasonable Effectiveness of Random Weighting: A Litmus Test for
Multi-Task Learning", TMLR 2022).

Every step draws ``z ~ N(0, 1)`` per task and weights the losses by ``T * softmax(z)`` (``T`` tasks),
so the weights are positive, sum to ``T`` and average 1. The draws come from a seeded, checkpointed
``SeedGenerator``.
"""

from __future__ import annotations

from typing import Any, ClassVar

import keras

from mtl.weighting._base import WeightingStrategy


class RandomLossWeighting(WeightingStrategy):
    """Fresh softmax-of-normal weights every step."""

    key: ClassVar[str] = "rlw"

    def __init__(self, task_names: list[str], seed: int = 0, **kwargs: Any) -> None:
        super().__init__(task_names, **kwargs)
        self.seed = int(seed)
        self.seed_generator = keras.random.SeedGenerator(self.seed, name="rlw_seed")

    def task_weights(self, task_losses: dict[str, Any], step: Any) -> dict[str, Any]:
        count = len(self.task_names)
        z = keras.random.normal((count,), seed=self.seed_generator)
        weights = count * keras.ops.softmax(z)
        return {n: weights[i] for i, n in enumerate(self.task_names)}

    def params(self) -> dict[str, Any]:
        return {"seed": self.seed}
