"""Per-task evaluation on labelled rows only, with scikit-learn metrics in the targets' own units."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import numpy as np

from mtl.data import SplitData
from mtl.tasks import Task, decode_hierarchy
from mtl.tasks._hierarchy import consistency


def predict(model: Any, split: SplitData, batch_size: int = 1024) -> dict[str, np.ndarray]:
    """The model's raw outputs on every row of ``split``, keyed by task. Per-word outputs (tagging) are as wide as
    the longest text of the split, zero-padded (a batch is only as wide as its own longest text)."""
    from mtl.model._multitask import _concatenate

    if len(split) == 0:
        return {name: np.zeros((0,) + tuple(d or 0 for d in out.shape[1:]), "float32")
                for name, out in model.output.items()}
    batches: dict[str, list[np.ndarray]] = {name: [] for name in model.output}
    for start in range(0, len(split), batch_size):
        features = {c: v[start:start + batch_size] for c, v in split.features.items()}
        for name, value in model.predict_on_batch(features).items():
            batches[name].append(np.asarray(value))
    return {name: _concatenate(parts) for name, parts in batches.items()}


def predict_streamed(model: Any, chunks: Iterable[Any], batch_size: int = 1024,
                     ) -> tuple[SplitData, dict[str, np.ndarray]]:
    """The model's raw outputs on a streamed split (``mtl.data.StreamingSplit.chunks``), and the split's targets,
    weights and row numbers as a ``SplitData`` without features: what ``evaluate`` and the plots read, held for
    the held-out rows only (a few numbers a row), never their features."""
    from mtl.model._multitask import _concatenate

    labels: dict[str, list] = {}
    weights: dict[str, list] = {}
    rows, outputs = [], {name: [] for name in model.output}
    for chunk in chunks:
        for name, value in predict(model, SplitData(chunk.features, {}, {}, chunk.rows), batch_size).items():
            outputs[name].append(np.asarray(value))
        for name in chunk.labels:
            labels.setdefault(name, []).append(chunk.labels[name])
            weights.setdefault(name, []).append(chunk.weights[name])
        rows.append(chunk.rows)
    if not rows:
        empty = predict(model, SplitData({}, {}, {}, np.zeros(0, "int64")), batch_size)
        return SplitData({}, {}, {}, np.zeros(0, "int64")), empty
    split = SplitData({}, {k: _concatenate(v) for k, v in labels.items()},
                      {k: np.concatenate(v) for k, v in weights.items()}, np.concatenate(rows))
    return split, {name: _concatenate(parts) for name, parts in outputs.items()}


def evaluate(model: Any, tasks: dict[str, Task], splits: dict[str, SplitData], batch_size: int = 1024,
             predictions: dict[str, dict[str, np.ndarray]] | None = None,
             ) -> tuple[dict, dict[str, dict[str, np.ndarray]]]:
    """``({split: evaluate_split(...)}, {split: hierarchy-decoded predictions})`` for each named split;
    ``predictions`` (raw outputs per split, e.g. from ``predict_streamed``) spares predicting again."""
    metrics, decoded, given = {}, {}, predictions or {}
    for name, split in splits.items():
        outputs = given[name] if name in given else predict(model, split, batch_size)
        metrics[name] = evaluate_split(tasks, split, outputs)
        decoded[name] = {k: np.asarray(v) for k, v in decode_hierarchy(tasks, outputs).items()}
    return metrics, decoded


def evaluate_split(tasks: dict[str, Task], split: SplitData, predictions: dict[str, np.ndarray]) -> dict:
    """``{task: {metric: value, "n": labelled rows}}``; a task with no labels in the split gets ``{"n": 0}``.

    A task with a ``parent`` is scored on hierarchy-decoded predictions, and reports ``consistency`` (the
    fraction of rows whose class sits under the predicted parent class: 1 after decoding) and
    ``raw_consistency`` (the same for its head's own argmax, before decoding)."""
    decoded = decode_hierarchy(tasks, predictions)
    report = {}
    for name, task in tasks.items():
        rows = split.labelled(name)
        if not rows.any():
            report[name] = {"n": 0}
            continue
        scores = task.evaluate(split.labels[name][rows], np.asarray(decoded[name])[rows])
        if getattr(task, "parent", None) is not None:
            scores["consistency"] = consistency(task, np.asarray(decoded[task.parent]), np.asarray(decoded[name]))
            scores["raw_consistency"] = consistency(task, np.asarray(predictions[task.parent]),
                                                    np.asarray(predictions[name]))
        report[name] = {**scores, "n": int(rows.sum())}
    return report


def choose_on_validation(tasks: dict[str, Task], split: SplitData, predictions: dict[str, np.ndarray]) -> dict:
    """Let each task choose what it decides after training (``Task.choose_on_validation``, e.g. a binary task's
    threshold) on the labelled rows of ``split`` (the validation split); ``{task: what was chosen}``."""
    decoded = decode_hierarchy(tasks, predictions)
    chosen = {}
    for name, task in tasks.items():
        rows = split.labelled(name)
        choice = task.choose_on_validation(split.labels[name][rows], np.asarray(decoded[name])[rows])
        if choice:
            chosen[name] = choice
    return chosen
