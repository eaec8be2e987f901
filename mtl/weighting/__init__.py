"""How task losses are weighted: fixed numbers or per-epoch schedules (``LossWeightSchedule``)."""

from mtl.weighting.schedule import LossWeightSchedule

__all__ = ["LossWeightSchedule"]
