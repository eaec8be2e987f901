"""The data stage: read a table, validate it against the config, parse and split it, encode labels, resample.

``load_data(config)`` is the stage's entry point: the table the config names, prepared, with its fitted tasks.
Nothing here builds models; the task objects passed in only encode labels.
"""

from __future__ import annotations

from typing import Any

from mtl.data._prepare import PreparedData, SplitData, prepare, prepare_labelled
from mtl.data._sources import DATASETS, READERS, is_multi_path, read_table
from mtl.data._streaming import (
    Chunk,
    CodedColumn,
    StreamingData,
    StreamingSplit,
    data_files,
    hash_split,
    key_hash,
    load_streaming,
    sample_table,
)
from mtl.data._text import split_words

__all__ = ["DATASETS", "READERS", "Chunk", "CodedColumn", "PreparedData", "SplitData", "StreamingData",
           "StreamingSplit", "data_files", "hash_split", "is_multi_path", "key_hash", "load_data", "load_streaming",
           "prepare", "prepare_labelled", "read_table", "sample_table", "split_words"]


def load_data(config: Any) -> tuple[PreparedData | StreamingData, dict[str, Any]]:
    """``(prepared data, fitted tasks)`` for a config: read ``data.path`` / ``data.dataset``, parse every column
    with its feature kind, split, and fit the features and the tasks' label encoders on the training split.
    With ``data.streaming`` the splits are streams (``StreamingData``), fitted in one pass over the files."""
    from mtl.tasks import build_tasks

    tasks = build_tasks(config.tasks)
    if config.data.streaming:
        return load_streaming(config, tasks), tasks
    frame, source = read_table(config.data.path, config.data.dataset)
    return prepare(frame, config, tasks, source), tasks
