"""Trunks: the shared part of the model. Each returns one representation per task.

``shared_bottom`` (hard parameter sharing, Caruana 1997) gives every task the same tensor; trunks
with per-task mixtures (MMoE, PLE) plug in here under their ``model.trunk.type`` name.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from mtl.errors import MtlError
from mtl.layers import dense_stack


def shared_bottom(x: Any, config: Any, task_names: list[str]) -> dict[str, Any]:
    shared = dense_stack(x, config.units, config.activation, config.dropout, config.norm, "trunk")
    return {name: shared for name in task_names}


TRUNKS: dict[str, Callable[[Any, Any, list[str]], dict[str, Any]]] = {"shared_bottom": shared_bottom}


def build_trunk(x: Any, config: Any, task_names: list[str]) -> dict[str, Any]:
    if config.type not in TRUNKS:
        raise MtlError(f"unknown trunk {config.type!r}; valid: {', '.join(TRUNKS)}", where="model.trunk.type")
    return TRUNKS[config.type](x, config, task_names)
