"""From a request's raw columns to the signature's outputs, shared by REST and gRPC.

The raw values become tensors only through ``LoadedModel.to_tensors`` (the one raw-value rule); this module adds what
TF Serving checks around it (input names, tensor shapes against the signature) and runs the signature, directly or
through the batcher.
"""

from __future__ import annotations

import logging
from typing import Any

import numpy as np

from mtl.errors import MtlError
from mtl.serving._loader import LoadedModel
from mtl.serving._versions import ServingError

log = logging.getLogger("mtl.serve")

SERVING_DEFAULT = "serving_default"


def input_shapes(model: LoadedModel) -> dict[str, tuple | None]:
    """``{input name: shape with None for any size}`` (``None``: unknown rank) of the served signature."""
    return model.runner.input_shapes


def _fits(shape: tuple, expected: tuple | None) -> bool:
    return expected is None or (len(shape) == len(expected) and
                                all(e is None or e == s for s, e in zip(shape, expected, strict=True)))


def check_signature_name(name: str, signature_defs: dict) -> str:
    """The signature a request asks for (empty: ``serving_default``), as TF Serving resolves it."""
    name = name or SERVING_DEFAULT
    if name not in signature_defs:
        raise ServingError("FAILED_PRECONDITION", f'Serving signature key "{name}" not found.')
    if name != SERVING_DEFAULT:
        raise ServingError("INVALID_ARGUMENT", f'mtl serve runs the "{SERVING_DEFAULT}" signature only, not "{name}"')
    return name


def prepare(model: LoadedModel, columns: dict[str, Any], where: str) -> dict[str, np.ndarray]:
    """The signature's input arrays from raw columns, or ``ServingError(INVALID_ARGUMENT)`` naming the input.

    Input names (missing, unexpected) and values are checked by ``to_tensors``; shapes and row counts here."""
    unseen: dict[str, int] = {}
    try:
        tensors = model.to_tensors(columns, where, unseen=unseen)
    except MtlError as exc:
        raise ServingError("INVALID_ARGUMENT", str(exc)) from None
    for column, count in unseen.items():
        log.info("%s version %s: column %r: %d value(s) not seen in training (out-of-vocabulary)",
                 model.metadata.get("name", ""), model.version, column, count)
    shapes = input_shapes(model)
    rows = None
    for name, array in tensors.items():
        if name in shapes and not _fits(np.shape(array), shapes[name]):
            expected = "any shape" if shapes[name] is None else [-1 if d is None else d for d in shapes[name]]
            raise ServingError("INVALID_ARGUMENT", f"{where}: input {name!r} has shape {list(np.shape(array))}; "
                                                   f"the signature takes {expected}")
        length = np.shape(array)[0] if np.ndim(array) else None
        if rows is not None and length != rows:
            raise ServingError("INVALID_ARGUMENT", f"{where}: inputs have different numbers of rows "
                                                   f"({rows} and {length} in {name!r})")
        rows = length
    if not rows:
        raise ServingError("INVALID_ARGUMENT", f"{where}: the request holds no rows")
    return tensors


def call_signature(model: LoadedModel, tensors: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Run the signature once; TF's own errors on the values are the client's (``INVALID_ARGUMENT``)."""
    import tensorflow as tf

    try:
        return model.runner(tensors)
    except (tf.errors.InvalidArgumentError, ValueError, TypeError) as exc:
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        raise ServingError("INVALID_ARGUMENT", first[:300]) from None


__all__ = ["SERVING_DEFAULT", "call_signature", "check_signature_name", "input_shapes", "prepare"]
