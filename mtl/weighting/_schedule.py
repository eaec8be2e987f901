"""Loss weights that change with the epoch: constant, linear, step, cosine and exponential.

The seeds' suggestion: start with the auxiliary task heavy and shift weight to the main task as
training goes on. A ``LossWeightSchedule`` only computes numbers; ``mtl.training._callbacks``
assigns them to the model's weight variables at the start of each epoch.
"""

from __future__ import annotations

import math
from dataclasses import dataclass


@dataclass(frozen=True)
class LossWeightSchedule:
    """``value(epoch)`` for a 0-based epoch; the ramp reaches ``end`` at epoch ``epochs - 1`` and holds it.

    >>> s = LossWeightSchedule("linear", start=1.0, end=0.0, epochs=5)
    >>> [s.value(e) for e in range(6)]
    [1.0, 0.75, 0.5, 0.25, 0.0, 0.0]
    >>> LossWeightSchedule("step", start=0.2, end=1.0, at=3).value(3)
    1.0
    """

    kind: str = "constant"
    start: float = 1.0
    end: float | None = None
    epochs: int = 1
    at: int | None = None

    def value(self, epoch: int) -> float:
        end = self.start if self.end is None else self.end
        if self.kind == "constant":
            return float(self.start)
        if self.kind == "step":
            return float(end if epoch >= (self.at or 0) else self.start)
        t = min(max(epoch / max(self.epochs - 1, 1), 0.0), 1.0)
        if self.kind == "linear":
            return float(self.start + (end - self.start) * t)
        if self.kind == "cosine":
            return float(end + (self.start - end) * 0.5 * (1.0 + math.cos(math.pi * t)))
        if self.kind == "exponential":
            return float(self.start * (end / self.start) ** t)
        raise ValueError(f"unknown schedule {self.kind!r}")

    @classmethod
    def from_config(cls, weight: float | object, total_epochs: int) -> LossWeightSchedule:
        """Build from a task's ``weight`` key: a number or a ``WeightSchedule`` config."""
        if isinstance(weight, (int, float)):
            return cls("constant", start=float(weight))
        return cls(
            weight.schedule,
            start=weight.start,
            end=weight.end,
            epochs=weight.epochs or total_epochs,
            at=weight.at,
        )
