"""How task losses are weighted: ``training.weighting`` strategies behind one interface
(``WeightingStrategy``), and fixed numbers or per-epoch schedules (``LossWeightSchedule``)."""

from __future__ import annotations

from typing import Any

from mtl.weighting.base import WeightingStrategy
from mtl.weighting.cagrad import CAGrad
from mtl.weighting.dwa import DynamicWeightAverage
from mtl.weighting.fixed import FixedWeighting
from mtl.weighting.gradnorm import GradNorm
from mtl.weighting.pcgrad import PCGrad
from mtl.weighting.rlw import RandomLossWeighting
from mtl.weighting.schedule import LossWeightSchedule
from mtl.weighting.uncertainty import UncertaintyWeighting

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


__all__ = ["STRATEGIES", "LossWeightSchedule", "WeightingStrategy", "make_strategy"]
