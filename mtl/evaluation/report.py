"""Per-task evaluation on labelled rows only, with scikit-learn metrics in the targets' own units."""

from __future__ import annotations

from typing import Any

import numpy as np

from mtl.data import SplitData
from mtl.tasks import Task


def predict(model: Any, split: SplitData, batch_size: int = 1024) -> dict[str, np.ndarray]:
    """The model's outputs on every row of ``split``, keyed by task."""
    from mtl.training.batches import to_dataset

    if len(split) == 0:
        return {name: np.zeros((0,) + tuple(out.shape[1:]), "float32") for name, out in model.output.items()}
    return model.predict(to_dataset(split, batch_size, with_labels=False), verbose=0)


def evaluate_split(tasks: dict[str, Task], split: SplitData, predictions: dict[str, np.ndarray]) -> dict:
    """``{task: {metric: value, "n": labelled rows}}``; a task with no labels in the split gets ``{"n": 0}``."""
    report = {}
    for name, task in tasks.items():
        rows = split.labelled(name)
        if not rows.any():
            report[name] = {"n": 0}
            continue
        scores = task.evaluate(split.labels[name][rows], np.asarray(predictions[name])[rows])
        report[name] = {**scores, "n": int(rows.sum())}
    return report
