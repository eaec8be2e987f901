"""Write a trained model as a versioned SavedModel that TF Serving (and ``mtl.serving``) can load.

Why a plain ``tf.Module`` and not ``model.export``: Keras' export stores every weight twice, while
``tf.saved_model.save`` of a module tracking only the variables and lookup tables the signature captures stores
each variable once, and a TF1/C++ loader (TF Serving, ``saved_model_cli run``) restores exactly what it reads.
Why a temporary folder and a rename: a server polling ``base_path/name`` must never see a half-written version.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import re
import shutil
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from mtl._locks import export_lock
from mtl._progress import stage
from mtl.errors import MtlError

METADATA_FILE = "mtl_metadata.json"
METADATA_FORMAT = 2
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")


def next_version(model_dir: Path) -> int:
    """One more than the highest integer version folder in ``model_dir`` (1 when there is none)."""
    if not model_dir.is_dir():
        return 1
    versions = [int(p.name) for p in model_dir.iterdir() if p.is_dir() and _is_version(p.name)]
    return max(versions, default=0) + 1


def _is_version(name: str) -> bool:
    """A version folder's name is a decimal integer as ``int()`` reads it (``1²`` is not)."""
    return name.isascii() and name.isdigit()


def metadata_of(model: Any) -> dict:
    """The export metadata of a ``MultiTaskModel``: its features (each feature's config: column, signature input
    name, kind and fitted state) and tasks (each task type's ``export_metadata`` and its fitted config), read by
    attribute."""
    return {
        "features": [feature.get_config() for feature in model.features.values()],
        "input_names": {feature.column: feature.input_name for feature in model.features.values()},
        "tasks": {name: task.export_metadata() for name, task in model.tasks.items()},
        # each task's fitted config (label column, metrics, classes, threshold, ...): what ``mtl evaluate`` of an
        # export scores with, and the label columns ``mtl predict`` recognises
        "task_configs": {name: task.get_config() for name, task in model.tasks.items()},
    }


def _serving_module(model: Any) -> Any:
    """A ``tf.Module`` holding the model and its ``serving_default`` function (raw values in, task outputs out).

    Inputs are named by each feature's ``input_name`` (the column name where TF allows it). Child tasks of a label
    tree come out hierarchy-decoded (``mtl.tasks.decode_hierarchy``); each task type adds its own extra outputs
    (``Task.serving_outputs``: class names, word tags, ...)."""
    import tensorflow as tf

    from mtl.tasks import decode_hierarchy

    features = list(model.features.values())
    specs = {f.input_name: tf.TensorSpec([None, *f.input_shape()], f.dtype, name=f.input_name) for f in features}
    words = next((f for f in features if f.provides_words), None)
    module = tf.Module()

    @tf.function(input_signature=[specs], autograph=False)
    def serve(inputs: dict) -> dict:
        outputs = decode_hierarchy(model.tasks, model(inputs, training=False))
        word_counts = words.word_counts(inputs[words.input_name]) if words is not None else None
        result = {}
        for name, task in model.tasks.items():
            result[name] = tf.cast(outputs[name], tf.float32)
            result.update(task.serving_outputs(result[name], word_counts))
        return result

    module.serve = serve
    # Track what the function captures, not the Keras model: the model's own tracking adds a second copy of
    # every variable (restored by TF1/C++ loaders such as TF Serving, while the function reads the other).
    concrete = serve.get_concrete_function()
    module.captured_variables = list(concrete.variables)
    module.lookup_tables = [value for layer in model._flatten_layers() for value in vars(layer).values()
                            if isinstance(value, tf.saved_model.experimental.TrackableResource)]
    return module


@contextlib.contextmanager
def _quiet_tensorflow_logger() -> Iterator[None]:
    """Hold back TensorFlow's Python-logger lines below ERROR: saving logs internal tensor renamings and the
    temporary folder's name, which mean nothing to a user and name a folder that is renamed right after."""
    loggers = [logging.getLogger(name) for name in ("tensorflow", "absl")]
    levels = [logger.level for logger in loggers]
    for logger in loggers:
        logger.setLevel(logging.ERROR)
    try:
        yield
    finally:
        for logger, level in zip(loggers, levels, strict=True):
            logger.setLevel(level)


def export_model(model: Any, base_path: str | Path, name: str, version: int | None = None,
                 source: str | None = None) -> Path:
    """Export a trained ``MultiTaskModel`` to ``base_path/name/<version>``; returns the version folder."""
    if not _NAME.match(name):
        raise MtlError(f"{name!r} is not a model name (letters, digits, '_', '.', '-')", where="--name")
    if version is not None and version < 1:
        raise MtlError(f"the version must be a positive integer, not {version}", where="--version")
    model_dir = Path(base_path) / name
    model_dir.mkdir(parents=True, exist_ok=True)
    # one export of a base at a time; dead exports' .tmp-* folders are removed
    with export_lock(model_dir), stage(f"exporting to {model_dir}"):
        return _export_version(model, model_dir, name, version, source)


def _export_version(model: Any, model_dir: Path, name: str, version: int | None, source: str | None) -> Path:
    """The body of ``export_model``, run holding the base's lock."""
    import tensorflow as tf

    version = version or next_version(model_dir)
    final = model_dir / str(version)
    if final.exists():
        raise MtlError(f"{final} already exists; choose another version or leave --version out", where="--version")

    metadata = {
        "format": METADATA_FORMAT,
        "name": name,
        "version": version,
        "signature": "serving_default",
        **metadata_of(model),
        "source": source,
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }
    tmp = model_dir / f".tmp-{version}-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    try:
        module = _serving_module(model)
        with _quiet_tensorflow_logger():  # "... will be renamed ...", "Assets written to: <temporary folder>"
            tf.saved_model.save(module, str(tmp), signatures={"serving_default": module.serve})
        (tmp / "assets").mkdir(exist_ok=True)
        (tmp / "assets" / METADATA_FILE).write_text(json.dumps(metadata, indent=2))
        os.rename(tmp, final)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return final


def export_run(run_dir: str | Path, base_path: str | Path, name: str, version: int | None = None) -> Path:
    """Export the ``model.keras`` of a finished run; returns ``base_path/name/<version>``."""
    import keras

    import mtl.model  # noqa: F401  registers MultiTaskModel and the custom layers for loading

    path = Path(run_dir) / "model.keras"
    if not path.is_file():
        raise MtlError(f"{run_dir} is not a finished run directory (no model.keras)", where="RUN_DIR")
    model = keras.saving.load_model(path, compile=False)
    return export_model(model, base_path, name, version, source=str(Path(run_dir).resolve()))
