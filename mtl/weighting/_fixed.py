"""Fixed weights: each task's ``weight`` number or epoch schedule (the default).

The weights are the model's non-trainable ``task_weights`` variables, assigned by
``mtl.training._callbacks.LossWeightScheduler`` at the start of each epoch; nothing is learned.
"""

from __future__ import annotations

from typing import ClassVar

from mtl.weighting._base import WeightingStrategy


class FixedWeighting(WeightingStrategy):
    """The weighted sum of task losses with the configured (possibly scheduled) weights."""

    key: ClassVar[str] = "fixed"
    min_tasks: ClassVar[int] = 1
