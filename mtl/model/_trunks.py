"""Trunks: the shared part of the model. Each returns one representation per task.

- ``shared_bottom`` (hard parameter sharing, Caruana 1997) gives every task the same tensor.
- ``mmoe`` (Ma et al., "Modeling Task Relationships in Multi-task Learning with Multi-gate
  Mixture-of-Experts", KDD 2018): ``experts`` shared expert networks and one softmax gate per task;
  each task gets its own mixture of the experts.
- ``ple`` (Tang et al., "Progressive Layered Extraction (PLE)", RecSys 2020): ``levels`` extraction
  layers, each with ``shared_experts`` shared and ``task_experts`` per-task experts; a task's gate mixes
  its own and the shared experts, and a shared gate (all but the last level) mixes all of them for the
  next level.

All are plain functional graphs of stock Keras layers (``Dense``, ``Reshape``, ``Concatenate``,
``Dot``), so they save to ``.keras`` and export as SavedModel like any functional model.
Each trunk declares its last shared layers (``Trunk.last_shared``: the layer objects, what GradNorm measures
gradient norms on), as LibMTL's architectures declare their shared parameters.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import keras

from mtl.errors import MtlError
from mtl.layers import dense_stack


@dataclass
class Trunk:
    """A trunk's output: one representation per task, and its last shared ``Dense`` layers."""

    representations: dict[str, Any]
    last_shared: list[Any] = field(default_factory=list)


def shared_bottom(x: Any, config: Any, task_names: list[str]) -> Trunk:
    layers: list[Any] = []
    shared = dense_stack(x, config.units, config.activation, config.dropout, config.norm, "trunk", dense_layers=layers)
    return Trunk({name: shared for name in task_names}, layers[-1:])


def _expert(x: Any, config: Any, prefix: str, last: list[Any] | None = None) -> Any:
    layers: list[Any] = []
    out = dense_stack(x, config.expert_units, config.activation, config.dropout, config.norm, prefix,
                      dense_layers=layers)
    if last is not None:
        last.extend(layers[-1:])
    return out


def _mixture(gate_input: Any, experts: list[Any], prefix: str) -> Any:
    """``sum_e softmax(gate)_e * expert_e``: a ``Dense`` softmax gate and a batched dot product."""
    gate = keras.layers.Dense(len(experts), activation="softmax", name=f"{prefix}_gate")(gate_input)
    width = int(experts[0].shape[-1])
    stacked = [keras.layers.Reshape((1, width), name=f"{prefix}_stack_{i}")(e) for i, e in enumerate(experts)]
    stacked = stacked[0] if len(stacked) == 1 else keras.layers.Concatenate(axis=1, name=f"{prefix}_experts")(stacked)
    return keras.layers.Dot(axes=(1, 1), name=f"{prefix}_mix")([gate, stacked])


def mmoe(x: Any, config: Any, task_names: list[str]) -> Trunk:
    last: list[Any] = []
    experts = [_expert(x, config, f"mmoe_expert_{e}", last) for e in range(config.experts)]
    return Trunk({name: _mixture(x, experts, f"mmoe_{name}") for name in task_names}, last)


def ple(x: Any, config: Any, task_names: list[str]) -> Trunk:
    task_inputs = {name: x for name in task_names}
    shared_input = x
    last_shared: list[Any] = []
    for level in range(config.levels):
        last = level == config.levels - 1
        shared = [_expert(shared_input, config, f"ple_{level}_shared_{e}", last_shared if last else None)
                  for e in range(config.shared_experts)]
        own = {name: [_expert(task_inputs[name], config, f"ple_{level}_{name}_{e}") for e in range(config.task_experts)]
               for name in task_names}
        next_inputs = {name: _mixture(task_inputs[name], own[name] + shared, f"ple_{level}_{name}")
                       for name in task_names}
        if not last:
            everything = [e for name in task_names for e in own[name]] + shared
            shared_input = _mixture(shared_input, everything, f"ple_{level}_shared")
        task_inputs = next_inputs
    return Trunk(task_inputs, last_shared)


TRUNKS: dict[str, Callable[[Any, Any, list[str]], Trunk]] = {
    "shared_bottom": shared_bottom, "mmoe": mmoe, "ple": ple}


def build_trunk(x: Any, config: Any, task_names: list[str]) -> Trunk:
    if config.type not in TRUNKS:
        raise MtlError(f"unknown trunk {config.type!r}; valid: {', '.join(TRUNKS)}", where="model.trunk.type")
    fields = getattr(type(config), "model_fields", {})
    if config.type != "shared_bottom" and "units" in fields and config.units != fields["units"].get_default(
            call_default_factory=True):
        logging.getLogger("mtl").warning(
            "model.trunk.units %s is ignored by a %s trunk: its experts' layers are model.trunk.expert_units (%s)",
            list(config.units), config.type, list(config.expert_units))
    return TRUNKS[config.type](x, config, task_names)
