"""Assemble the model from the config: raw inputs -> trunk -> one named head per task."""

from __future__ import annotations

from typing import Any

import numpy as np

from mtl.model.inputs import build_inputs
from mtl.model.multitask import MultiTaskModel
from mtl.model.trunks import build_trunk, last_shared_layers
from mtl.tasks import Task


def build_model(
    model_config: Any,
    tasks: dict[str, Task],
    numeric: list[str],
    categorical: list[str],
    train_features: dict[str, np.ndarray],
    weighting: dict | None = None,
) -> MultiTaskModel:
    """A ``MultiTaskModel`` whose preprocessing is fitted on ``train_features`` (the training split).

    ``weighting`` is ``{"name": ..., **params}`` (``training.weighting``; default fixed). GradNorm is
    told the trunk's last shared layers here."""
    inputs, encoded = build_inputs(numeric, categorical, train_features, model_config.embedding_dim)
    representations = build_trunk(encoded, model_config.trunk, list(tasks))
    outputs = {
        name: task.build_head(representations[name], model_config.heads.get(name, model_config.head))
        for name, task in tasks.items()
    }
    weighting = {k: v for k, v in (weighting or {"name": "fixed"}).items() if v is not None}
    if weighting["name"] == "gradnorm" and "layers" not in weighting:
        weighting["layers"] = last_shared_layers(model_config.trunk, list(tasks))
    return MultiTaskModel(inputs=inputs, outputs=outputs, tasks=[t.get_config() for t in tasks.values()],
                          weighting=weighting, name="multitask")
