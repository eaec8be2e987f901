"""Hierarchical labels: decoding that keeps a child task's prediction inside its predicted parent class.

A child task (``tasks.<name>.parent``) learns on the training rows which parent class each of its classes
sits under (``MulticlassTask.parent_of_``). Its head takes the parent's output as an input and the two are
trained jointly; at prediction time ``decode_hierarchy`` zeroes the child's classes that do not sit under the
parent's most likely class and renormalises, parents first, so a chain (SOC -> PT -> LLT) stays consistent.
The functions use ``keras.ops``, so evaluation (numpy) and the exported graph (tensors) share them.
"""

from __future__ import annotations

from typing import Any

import keras
import numpy as np

__all__ = ["constrain_to_parent", "decode_hierarchy", "consistency", "hierarchy_order"]


def constrain_to_parent(parent_probs: Any, child_probs: Any, tree: Any) -> Any:
    """Child probabilities restricted to the children of the most likely parent class, renormalised."""
    allowed = keras.ops.take(keras.ops.convert_to_tensor(tree, "float32"),
                             keras.ops.argmax(parent_probs, axis=-1), axis=0)
    masked = keras.ops.cast(child_probs, "float32") * allowed
    return masked / keras.ops.maximum(keras.ops.sum(masked, axis=-1, keepdims=True), 1e-12)


def hierarchy_order(tasks: dict[str, Any]) -> list[str]:
    """Task names with every parent before its children."""
    order: list[str] = []

    def visit(name: str) -> None:
        if name in order:
            return
        parent = getattr(tasks[name], "parent", None)
        if parent is not None:
            visit(parent)
        order.append(name)

    for name in tasks:
        visit(name)
    return order


def decode_hierarchy(tasks: dict[str, Any], outputs: dict[str, Any]) -> dict[str, Any]:
    """``outputs`` with every child task's probabilities constrained to its (decoded) parent's prediction."""
    decoded = dict(outputs)
    for name in hierarchy_order(tasks):
        task = tasks[name]
        if getattr(task, "parent", None) is not None:
            decoded[name] = constrain_to_parent(decoded[task.parent], decoded[name], task.tree_matrix())
    return decoded


def consistency(task: Any, parent_probs: np.ndarray, child_probs: np.ndarray) -> float:
    """The fraction of rows whose predicted class sits under the predicted parent class."""
    if len(child_probs) == 0:
        return float("nan")
    parent_of = np.asarray([task.parent_classes_.index(p) for p in task.parent_of_])
    return float(np.mean(parent_of[np.asarray(child_probs).argmax(-1)] == np.asarray(parent_probs).argmax(-1)))
