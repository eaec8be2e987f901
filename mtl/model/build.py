"""Assemble the model from the config: raw inputs -> (text encoder) -> trunk -> one named head per task."""

from __future__ import annotations

from typing import Any

import keras
import numpy as np

from mtl.errors import MtlError
from mtl.model.inputs import build_inputs
from mtl.model.multitask import MultiTaskModel
from mtl.model.trunks import build_trunk, last_shared_layers
from mtl.tasks import Task
from mtl.tasks.hierarchy import hierarchy_order


def build_model(
    model_config: Any,
    tasks: dict[str, Task],
    numeric: list[str],
    categorical: list[str],
    train_features: dict[str, np.ndarray],
    weighting: dict | None = None,
    text: str | None = None,
    max_length: int = 256,
    stride: int | None = None,
) -> MultiTaskModel:
    """A ``MultiTaskModel`` whose preprocessing is fitted on ``train_features`` (the training split).

    ``text`` names the text column, read by ``model_config.backbone`` in windows of ``max_length`` word pieces
    (every ``stride`` pieces, or only the first window). Row-level tasks read the trunk, which reads the pooled
    text vector beside the numeric and categorical encodings; tagging tasks read the per-word vectors. A task
    with a ``parent`` also reads its parent's output. ``weighting`` is ``{"name": ..., **params}``
    (``training.weighting``; default fixed); GradNorm is told the trunk's last shared layers here."""
    inputs: dict[str, Any] = {}
    parts: list[Any] = []
    if numeric or categorical:
        inputs, encoded = build_inputs(numeric, categorical, train_features, model_config.embedding_dim)
        parts.append(encoded)
    words = None
    if text is not None:
        pooled, words = _text_encoder(model_config.backbone, text, inputs, max_length, stride)
        parts.insert(0, pooled)
    encoded = parts[0] if len(parts) == 1 else keras.layers.Concatenate(name="features")(parts)

    row_tasks = [name for name, task in tasks.items() if task.level == "row"]
    representations = build_trunk(encoded, model_config.trunk, row_tasks) if row_tasks else {}
    outputs: dict[str, Any] = {}
    for name in hierarchy_order(tasks):
        task = tasks[name]
        if task.level == "word":
            x = words
        else:
            x = representations[name]
            if getattr(task, "parent", None) is not None:
                x = keras.layers.Concatenate(name=f"{name}_and_{task.parent}")([x, outputs[task.parent]])
        outputs[name] = task.build_head(x, model_config.heads.get(name, model_config.head))
    outputs = {name: outputs[name] for name in tasks}

    weighting = {k: v for k, v in (weighting or {"name": "fixed"}).items() if v is not None}
    if weighting["name"] == "gradnorm" and "layers" not in weighting:
        weighting["layers"] = last_shared_layers(model_config.trunk, row_tasks)
    return MultiTaskModel(inputs=inputs, outputs=outputs, tasks=[t.get_config() for t in tasks.values()],
                          weighting=weighting, name="multitask")


def _text_encoder(config: Any, text: str, inputs: dict[str, Any], max_length: int,
                  stride: int | None) -> tuple[Any, tuple[Any, Any]]:
    from mtl.model.backbones import load_backbone, set_trainable
    from mtl.model.text import TextEncoder

    backbone, tokenizer = load_backbone(config)
    limit = getattr(backbone, "max_sequence_length", None)
    if limit is not None and max_length > limit:
        raise MtlError(f"{max_length} word pieces exceed the backbone's {limit} positions", where="data.max_length")
    set_trainable(backbone, config.trainable)
    inputs[text] = keras.Input(shape=(), dtype="string", name=text)
    pooled, word_states, word_mask = TextEncoder(backbone, tokenizer, max_length=max_length, stride=stride,
                                                 pooling=config.pooling, name=f"{text}_encoder")(inputs[text])
    return pooled, (word_states, word_mask)
