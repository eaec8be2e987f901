"""Task types, one module each; ``TASK_TYPES`` maps a config's ``type:`` to its class.

A type owns its config keys (``config_class``), label encoding, head, loss, metrics, evaluation, test plot, export
outputs and metadata, serving decode, app output and EDA section (see ``mtl.tasks.Task``). To add a type,
write one module with a ``Task`` subclass, register it here, and call ``mtl.testing.run_parity_test`` in a test.
"""

from __future__ import annotations

from typing import Any

from mtl.tasks._base import Task
from mtl.tasks._binary import BinaryTask
from mtl.tasks._hierarchy import consistency, decode_hierarchy, hierarchy_order
from mtl.tasks._links import check_links, link_order
from mtl.tasks._metrics import ErrorSums, ThresholdCounts
from mtl.tasks._multiclass import MulticlassTask
from mtl.tasks._regression import RegressionTask
from mtl.tasks._tagging import TaggingTask

TASK_TYPES: dict[str, type[Task]] = {
    BinaryTask.type: BinaryTask,
    MulticlassTask.type: MulticlassTask,
    RegressionTask.type: RegressionTask,
    TaggingTask.type: TaggingTask,
}

__all__ = ["TASK_TYPES", "Task", "BinaryTask", "MulticlassTask", "RegressionTask", "TaggingTask", "build_tasks",
           "task_from_config", "consistency", "decode_hierarchy", "hierarchy_order", "check_links", "link_order",
           "ErrorSums", "ThresholdCounts"]


def build_tasks(task_configs: dict[str, Any]) -> dict[str, Task]:
    """Unfitted task objects from the config's ``tasks`` mapping (pydantic models)."""
    tasks = {}
    for name, cfg in task_configs.items():
        params = cfg.model_dump(exclude={"type", "weight", "label_fraction"}, exclude_none=False)
        if params.get("loss") is not None:
            params["loss"] = {k: v for k, v in params["loss"].items() if v is not None}
        tasks[name] = TASK_TYPES[cfg.type](name, **params)
    return tasks


def task_from_config(config: dict) -> Task:
    """Rebuild a fitted task from ``Task.get_config()`` (used when loading saved models)."""
    return TASK_TYPES[config["type"]].from_config(config)
