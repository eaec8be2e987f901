"""The data stage: read a table, validate it against the config, parse and split it, encode labels, resample.

``load_data(config)`` is the stage's entry point: the table the config names, prepared, with its fitted tasks.
Nothing here builds models; the task objects passed in only encode labels.
"""

from __future__ import annotations

from typing import Any

from mtl.data._prepare import PreparedData, SplitData, prepare, prepare_labelled
from mtl.data._sources import DATASETS, READERS, read_table
from mtl.data._text import split_words

__all__ = ["DATASETS", "READERS", "PreparedData", "SplitData", "load_data", "prepare", "prepare_labelled", "read_table",
           "split_words"]


def load_data(config: Any) -> tuple[PreparedData, dict[str, Any]]:
    """``(prepared data, fitted tasks)`` for a config: read ``data.path`` / ``data.dataset``, parse every column
    with its feature kind, split, and fit the features and the tasks' label encoders on the training split."""
    from mtl.tasks import build_tasks

    frame, source = read_table(config.data.path, config.data.dataset)
    tasks = build_tasks(config.tasks)
    return prepare(frame, config, tasks, source), tasks
