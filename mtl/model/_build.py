"""Assemble the model from the config: raw inputs -> each feature kind's graph part -> trunk -> one named head per
task. Generic: it asks the feature kinds (``mtl.features``) for their graph parts and the task types
(``mtl.tasks``) for their heads, and never names a kind or a type."""

from __future__ import annotations

from typing import Any

import keras

from mtl.errors import MtlError
from mtl.features import Feature
from mtl.layers import StopGradient
from mtl.model._multitask import MultiTaskModel
from mtl.model._trunks import build_trunk
from mtl.tasks import Task, link_order

__all__ = ["build_model"]


def build_model(model_config: Any, tasks: dict[str, Task], features: dict[str, Feature],
                weighting: dict | None = None) -> MultiTaskModel:
    """A ``MultiTaskModel`` over ``features`` (fitted on the training split, keyed by column; see
    ``PreparedData.features``) with one head per fitted task.

    Each column gets a ``keras.Input`` named (and keyed) by the feature's ``input_name``, the column name where it
    is a valid name (see ``mtl.features.input_names``); the model also takes dicts keyed by column name.
    Row-level tasks read the trunk, which reads every
    kind's row-level part (the pooled text vector beside numeric, categorical and vector encodings); word-level
    tasks read the per-word states of the kind that provides them. A task with links (``Task.links``: its
    ``inputs``, a label tree's ``parent``) also reads the linked tasks' outputs (``Task.link_features``, joined by
    ``Task.join_links``), or, for a ``product`` link, multiplies its output by them (``Task.funnel_output``); heads
    are built in the links' topological order. ``weighting`` is ``{"name": ..., **params}``
    (``training.weighting``; default fixed); GradNorm is given the trunk's declared last shared layers."""
    inputs = {f.input_name: keras.Input(shape=f.input_shape(), name=f.input_name, dtype=f.dtype)
              for f in features.values()}
    by_column = {column: inputs[f.input_name] for column, f in features.items()}
    row_parts: list[Any] = []
    words = None
    groups: dict[type[Feature], list[Feature]] = {}
    for feature in features.values():
        groups.setdefault(type(feature), []).append(feature)
    for kind, members in groups.items():
        encoded = kind.build_group(members, by_column, model_config)
        row_parts += encoded.row
        words = encoded.words if encoded.words is not None else words
    encoded = row_parts[0] if len(row_parts) == 1 else keras.layers.Concatenate(name="features")(row_parts)

    row_tasks = [name for name, task in tasks.items() if task.level == "row"]
    trunk = build_trunk(encoded, model_config.trunk, row_tasks) if row_tasks else None
    outputs: dict[str, Any] = {}
    link_features: dict[tuple, Any] = {}  # (task, stop_gradient[, "product"]): what a linked head reads, built once

    def linked(link: dict, features: bool) -> Any:
        source = link["task"]
        key = (source, link["stop_gradient"]) if features else (source, link["stop_gradient"], "product")
        if key not in link_features:
            value = tasks[source].link_features(outputs[source]) if features else outputs[source]
            if link["stop_gradient"]:
                suffix = "link" if features else "funnel"
                value = StopGradient(name=f"{source}_fixed_{suffix}", dtype="float32")(value)
            link_features[key] = value
        return link_features[key]

    for name in link_order(tasks):
        task = tasks[name]
        if task.level == "word":
            if words is None:
                raise MtlError("this task reads words, and no input feature gives them", where=f"tasks.{name}")
            x = words
        else:
            x = trunk.representations[name]
        read = [linked(link, True) for link in task.links if not link["product"]]
        if read:
            x = task.join_links(x if task.reads_trunk else None, read)
        funnel = [linked(link, False) for link in task.links if link["product"]]
        # A head that reads links starts from zero output weights (as BiT's transfer heads, Kolesnikov et al.
        # 2020): its first steps follow its most telling input, usually the linked prediction, instead of a random
        # projection of the trunk that its few labels must first undo (or, on one input, a sign they may never undo
        # before early stopping).
        outputs[name] = task.build_head(x, model_config.heads.get(name, model_config.head), funnel=funnel or None,
                                        initializer="zeros" if task.links else "glorot_uniform")
    outputs = {name: outputs[name] for name in tasks}

    weighting = {k: v for k, v in (weighting or {"name": "fixed"}).items() if v is not None}
    if weighting["name"] == "gradnorm" and "layers" not in weighting:
        weighting["layers"] = [layer.name for layer in (trunk.last_shared if trunk else [])]
    return MultiTaskModel(inputs=inputs, outputs=outputs, tasks=[t.get_config() for t in tasks.values()],
                          features=[f.get_config() for f in features.values()], weighting=weighting,
                          name="multitask")
