"""Write a trained model as a versioned SavedModel that TF Serving (and ``mtl.serving``) can load.

Why a plain ``tf.Module`` and not ``model.export``: Keras' export stores every weight twice, while
``tf.saved_model.save`` of a module tracking only the variables and lookup tables the signature captures stores
each variable once, and a TF1/C++ loader (TF Serving, ``saved_model_cli run``) restores exactly what it reads.
Why a temporary folder and a rename: a server polling ``base_path/name`` must never see a half-written version.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import time
from pathlib import Path
from typing import Any

from mtl._locks import export_lock
from mtl.errors import MtlError

METADATA_FILE = "mtl_metadata.json"
METADATA_FORMAT = 1
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")


def next_version(model_dir: Path) -> int:
    """One more than the highest integer version folder in ``model_dir`` (1 when there is none)."""
    if not model_dir.is_dir():
        return 1
    versions = [int(p.name) for p in model_dir.iterdir() if p.is_dir() and p.name.isdigit()]
    return max(versions, default=0) + 1


def _features(model: Any) -> tuple[list[str], dict[str, list[str]], list[str]]:
    """``(numeric columns, {categorical column: training vocabulary}, text columns)`` from the model's raw
    inputs."""
    numeric, categorical, text = [], {}, []
    layers = {layer.name for layer in model.layers}
    for tensor in model.inputs:
        name = tensor.name.split(":")[0]
        if f"{name}_encoder" in layers:
            text.append(name)
        elif tensor.dtype == "string":
            lookup = model.get_layer(f"{name}_lookup")
            categorical[name] = [str(v) for v in lookup.get_vocabulary(include_special_tokens=False)]
        else:
            numeric.append(name)
    return numeric, categorical, text


def _task_metadata(model: Any) -> dict[str, dict]:
    tasks = {}
    for name, task in model.tasks.items():
        entry: dict[str, Any] = {"type": task.type, "outputs": [name]}
        if task.type in ("binary", "multiclass", "tagging"):
            entry["classes"] = [str(c) for c in task.classes_]
        if task.type == "binary":
            entry["threshold"] = float(task.threshold)
        if task.type == "multiclass":
            entry["outputs"].append(f"{name}_classes")
            if task.parent is not None:
                entry["parent"] = task.parent
                entry["parent_of"] = list(task.parent_of_)
        if task.type == "tagging":
            entry["outputs"].append(f"{name}_tags")
        tasks[name] = entry
    return tasks


def _word_tags(probs: Any, classes: list[str], text: Any) -> Any:
    """``[batch, words]`` tag strings: the most likely tag of each word, ``O`` for a word no window reached,
    ``""`` past the end of a text."""
    import tensorflow as tf

    tags = tf.gather(tf.constant(classes), tf.argmax(probs, axis=-1))
    outside = classes[0] if classes[0] == "O" else ""
    tags = tf.where(tf.reduce_sum(probs, axis=-1) > 0.5, tags, outside)
    words = tf.strings.split(text).row_lengths()
    return tf.where(tf.sequence_mask(words, tf.shape(probs)[1]), tags, "")


def _serving_module(model: Any, numeric: list[str], categorical: dict[str, list[str]], text: list[str]) -> Any:
    """A ``tf.Module`` holding the model and its ``serving_default`` function (raw values in, task outputs out).

    Child tasks of a label tree come out hierarchy-decoded (``mtl.tasks.decode_hierarchy``); tagging tasks
    also give their word tags (``<task>_tags``)."""
    import tensorflow as tf

    from mtl.tasks import decode_hierarchy

    specs = {name: tf.TensorSpec([None], tf.float32, name=name) for name in numeric}
    specs.update({name: tf.TensorSpec([None], tf.string, name=name) for name in [*categorical, *text]})
    multiclass = {name: [str(c) for c in t.classes_] for name, t in model.tasks.items() if t.type == "multiclass"}
    tagging = {name: [str(c) for c in t.classes_] for name, t in model.tasks.items() if t.type == "tagging"}

    module = tf.Module()

    @tf.function(input_signature=[specs], autograph=False)
    def serve(features: dict) -> dict:
        outputs = decode_hierarchy(model.tasks, model(features, training=False))
        result = {name: tf.cast(outputs[name], tf.float32) for name in model.tasks}
        for name, classes in multiclass.items():
            rows = tf.shape(outputs[name])[0]
            result[f"{name}_classes"] = tf.tile(tf.constant([classes], tf.string), tf.stack([rows, 1]))
        for name, classes in tagging.items():
            result[f"{name}_tags"] = _word_tags(result[name], classes, features[text[0]])
        return result

    module.serve = serve
    # Track what the function captures, not the Keras model: the model's own tracking adds a second copy of
    # every variable (restored by TF1/C++ loaders such as TF Serving, while the function reads the other).
    concrete = serve.get_concrete_function()
    module.captured_variables = list(concrete.variables)
    module.lookup_tables = [value for layer in model._flatten_layers() for value in vars(layer).values()
                            if isinstance(value, tf.saved_model.experimental.TrackableResource)]
    return module


def export_model(model: Any, base_path: str | Path, name: str, version: int | None = None,
                 source: str | None = None) -> Path:
    """Export a trained ``MultiTaskModel`` to ``base_path/name/<version>``; returns the version folder."""
    if not _NAME.match(name):
        raise MtlError(f"{name!r} is not a model name (letters, digits, '_', '.', '-')", where="--name")
    if version is not None and version < 1:
        raise MtlError(f"the version must be a positive integer, not {version}", where="--version")
    model_dir = Path(base_path) / name
    model_dir.mkdir(parents=True, exist_ok=True)
    with export_lock(model_dir):  # one export of a base at a time; dead exports' .tmp-* folders are removed
        return _export_version(model, model_dir, name, version, source)


def _export_version(model: Any, model_dir: Path, name: str, version: int | None, source: str | None) -> Path:
    """The body of ``export_model``, run holding the base's lock."""
    import tensorflow as tf

    version = version or next_version(model_dir)
    final = model_dir / str(version)
    if final.exists():
        raise MtlError(f"{final} already exists; choose another version or leave --version out", where="--version")

    numeric, categorical, text = _features(model)
    metadata = {
        "format": METADATA_FORMAT,
        "name": name,
        "version": version,
        "signature": "serving_default",
        "features": {"numeric": numeric, "categorical": categorical, "text": text},
        "tasks": _task_metadata(model),
        "source": source,
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }
    tmp = model_dir / f".tmp-{version}-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    try:
        module = _serving_module(model, numeric, categorical, text)
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
