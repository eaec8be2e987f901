"""How task losses are weighted: ``training.weighting`` strategies behind one interface
(``WeightingStrategy``), and fixed numbers or per-epoch schedules (``LossWeightSchedule``)."""

from __future__ import annotations

from typing import Any

from mtl.weighting._base import WeightingStrategy
from mtl.weighting._cagrad import CAGrad, cagrad_direction
from mtl.weighting._dwa import DynamicWeightAverage, dwa_weights
from mtl.weighting._fixed import FixedWeighting
from mtl.weighting._gradnorm import GradNorm
from mtl.weighting._pcgrad import PCGrad, project_conflicting
from mtl.weighting._rlw import RandomLossWeighting
from mtl.weighting._schedule import LossWeightSchedule
from mtl.weighting._uncertainty import UncertaintyWeighting

STRATEGIES: dict[str, type[WeightingStrategy]] = {
    cls.key: cls for cls in (FixedWeighting, UncertaintyWeighting, GradNorm, DynamicWeightAverage,
                             RandomLossWeighting, PCGrad, CAGrad)
}


def make_strategy(config: dict[str, Any] | None, task_names: list[str]) -> WeightingStrategy:
    """A strategy from ``{"name": ..., **params}`` (None: fixed)."""
    config = dict(config or {"name": "fixed"})
    name = config.pop("name")
    if name not in STRATEGIES:
        raise ValueError(f"unknown weighting {name!r}; valid: {', '.join(STRATEGIES)}")
    return STRATEGIES[name](task_names, **{k: v for k, v in config.items() if v is not None})


__all__ = ["STRATEGIES", "CAGrad", "DynamicWeightAverage", "FixedWeighting", "GradNorm", "LossWeightSchedule", "PCGrad",
           "RandomLossWeighting", "UncertaintyWeighting", "WeightingStrategy", "cagrad_direction", "dwa_weights",
           "make_strategy", "project_conflicting"]
