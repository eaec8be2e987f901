"""Pydantic building blocks shared by the config schema (``mtl.config``) and the plug-ins that own their keys
(task types in ``mtl.tasks``, feature kinds in ``mtl.features``). It imports nothing else of mtl, so every
plug-in can declare its config keys without an import cycle."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

__all__ = ["Strict", "LossConfig", "WeightSchedule", "TaskConfigBase", "TaskLink", "UnseenLabels"]


class Strict(BaseModel):
    """A config section: unknown keys are errors, defaults are validated."""

    model_config = ConfigDict(extra="forbid", validate_default=True)


class WeightSchedule(Strict):
    """A task's loss weight as a function of the epoch (see ``mtl.weighting.LossWeightSchedule``)."""

    schedule: Literal["constant", "linear", "step", "cosine", "exponential"]
    start: float = Field(ge=0)
    end: float | None = Field(None, ge=0)
    epochs: int | None = Field(None, ge=1, description="epochs to go from start to end (default: all)")
    at: int | None = Field(None, ge=0, description="step schedule: the epoch from which `end` holds")

    @model_validator(mode="after")
    def _needs(self) -> WeightSchedule:
        if self.schedule != "constant" and self.end is None:
            raise ValueError(f"a {self.schedule} schedule needs `end`")
        if self.schedule == "step" and self.at is None:
            raise ValueError("a step schedule needs `at` (the epoch from which `end` holds)")
        if self.schedule == "exponential" and (self.start <= 0 or (self.end or 0) <= 0):
            raise ValueError("an exponential schedule needs start > 0 and end > 0")
        return self


class LossConfig(Strict):
    name: str
    gamma: float | None = Field(None, ge=0, description="focal losses")
    alpha: float | None = Field(None, ge=0, le=1, description="binary focal loss")
    delta: float | None = Field(None, gt=0, description="huber loss, in standard deviations")


def _loss(value: Any) -> Any:
    return {"name": value} if isinstance(value, str) else value


UnseenLabels = Literal["error", "ignore"]


class TaskLink(Strict):
    """One entry of ``tasks.<name>.inputs``: another task whose output this task's head reads beside the trunk."""

    task: str = Field(description="the task whose output is read")
    stop_gradient: bool = Field(False, description="the linked output is a fixed feature: this task's loss does "
                                                   "not train the linked task")
    product: bool = Field(False, description="funnel (ESMM): this head learns p(main | linked) and its output is "
                                             "p(linked) * p(main | linked); binary -> binary only")


def _link(value: Any) -> Any:
    return {"task": value} if isinstance(value, str) else value


class TaskConfigBase(Strict):
    """Keys every task type has; a task type's own config class adds ``type: Literal[...]`` and its keys."""

    column: str
    loss: Annotated[LossConfig | None, Field(None)] = None
    metrics: list[str] | None = None
    weight: float | WeightSchedule = Field(1.0)
    label_fraction: float = Field(1.0, gt=0, le=1)
    trainable: bool = True
    inputs: list[TaskLink] = Field([], description="other tasks whose outputs this head reads beside the trunk: "
                                                   "a task name, or {task, stop_gradient, product}")
    reads_trunk: bool = Field(True, description="false: the head reads only its linked tasks' outputs, not the trunk "
                                                "(a small model stacked on the auxiliary predictions)")

    _coerce_loss = field_validator("loss", mode="before")(_loss)

    @field_validator("inputs", mode="before")
    @classmethod
    def _coerce_links(cls, value: Any) -> Any:
        return [_link(v) for v in value] if isinstance(value, list) else value

    def links(self) -> list[tuple[str, TaskLink]]:
        """``(config key, link)`` of every task this one reads (a type adds implied ones, e.g. a label tree's
        parent)."""
        return [(f"inputs[{i}]", link) for i, link in enumerate(self.inputs)]

    @field_validator("weight")
    @classmethod
    def _non_negative(cls, v: float | WeightSchedule) -> float | WeightSchedule:
        if isinstance(v, float) and v < 0:
            raise ValueError("a loss weight must be >= 0")
        return v
