"""Load an exported SavedModel version and run its ``serving_default`` signature on raw rows.

Shared by ``mtl predict``, ``mtl serve`` and the Streamlit app. It reads only the export (``saved_model.pb``,
``variables/``, ``assets/mtl_metadata.json``), so it works on a machine that has TensorFlow but not the
training code's data stack.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from mtl.errors import MtlError
from mtl.export.savedmodel import METADATA_FILE

SIGNATURE = "serving_default"


def version_number(name: str) -> int | None:
    """The version a folder name stands for: a non-negative integer by ``int()`` written canonically (``"7"``, not
    ``"07"``, ``"+7"`` or ``"1_0"``), so the number always names the folder back; anything else (``"1²"``, a
    temporary ``.tmp-3``) is not a version and is ignored."""
    try:
        number = int(name)
    except ValueError:
        return None
    return number if number >= 0 and str(number) == name else None


def versions(model_dir: Path) -> list[int]:
    """The complete integer versions in an export base ``model_dir``, ascending (temporary folders are skipped)."""
    model_dir = Path(model_dir)
    try:
        folders = list(model_dir.iterdir()) if model_dir.is_dir() else []
    except OSError:  # removed or unreadable while being listed
        return []
    found = []
    for folder in folders:
        number = version_number(folder.name)
        if number is not None and (folder / "saved_model.pb").is_file():
            found.append(number)
    return sorted(found)


def resolve_version(path: str | Path, version: int | None = None) -> Path:
    """A version folder from a version folder itself, or from an export base (its newest or the given version)."""
    path = Path(path)
    if (path / "saved_model.pb").is_file():
        if version is not None and path.name != str(version):
            raise MtlError(f"{path} is version {path.name}, not {version}", where="--model")
        return path
    found = versions(path)
    if not found:
        raise MtlError(f"{path} is neither an export version folder (saved_model.pb) nor an export base "
                       "holding integer version folders", where="--model")
    if version is None:
        return path / str(found[-1])
    if version not in found:
        raise MtlError(f"{path} has no version {version}; versions: {found}", where="--model")
    return path / str(version)


@dataclass
class LoadedModel:
    """One loaded export version: its signature, its input dtypes and its ``mtl`` metadata."""

    path: Path
    version: int
    metadata: dict
    signature: Any
    inputs: dict[str, str]  # name -> "float" | "string"
    outputs: dict[str, Any]  # name -> TensorSpec
    _loaded: Any = field(default=None, repr=False)  # keeps the restored variables alive

    @property
    def tasks(self) -> dict[str, dict]:
        return self.metadata.get("tasks", {})

    def check_columns(self, columns: list[str], where: str) -> None:
        """Raise ``MtlError`` naming the missing and the unexpected input columns."""
        missing = [c for c in self.inputs if c not in columns]
        extra = [c for c in columns if c not in self.inputs]
        if missing or extra:
            parts = ([f"missing column(s) {missing}"] if missing else []) + (
                [f"unexpected column(s) {extra}"] if extra else [])
            raise MtlError(f"{'; '.join(parts)}; the model takes {list(self.inputs)}", where=where)

    def to_tensors(self, columns: dict[str, Any], where: str) -> dict[str, np.ndarray]:
        """Convert column values to the signature's dtypes, raising ``MtlError`` on the first bad value."""
        self.check_columns(list(columns), where)
        out, length = {}, None
        for name, kind in self.inputs.items():
            values = list(np.asarray(columns[name], dtype=object).reshape(-1))
            if length is not None and len(values) != length:
                raise MtlError(f"column {name!r} has {len(values)} values, others have {length}", where=where)
            length = len(values)
            out[name] = _numeric(values, name, where) if kind == "float" else _strings(values)
        return out

    def predict(self, columns: dict[str, Any], where: str = "input") -> dict[str, np.ndarray]:
        """Run the signature on raw column values; returns numpy arrays keyed by output name."""
        import tensorflow as tf

        tensors = self.to_tensors(columns, where)
        result = self.signature(**{k: tf.constant(v) for k, v in tensors.items()})
        return {name: value.numpy() for name, value in result.items()}

    def predict_frame(self, frame: Any, where: str = "input", task: str | None = None) -> Any:
        """A table of predictions: per task its output, for binary the label at the threshold, for multiclass
        the probability of each class and the most likely one."""
        import pandas as pd

        if task is not None and task not in self.tasks:
            raise MtlError(f"unknown task {task!r}; tasks: {list(self.tasks)}", where="--task")
        raw = self.predict({c: frame[c].to_numpy() for c in frame.columns}, where)
        table: dict[str, Any] = {}
        for name, info in self.tasks.items():
            if task is not None and name != task:
                continue
            values = raw[name]
            if info["type"] == "binary":
                table[name] = values[:, 0]
                table[f"{name}_label"] = np.where(values[:, 0] >= info["threshold"], info["classes"][1],
                                                  info["classes"][0])
            elif info["type"] == "tagging":
                table[name] = [[t.decode() for t in row if t] for row in raw[f"{name}_tags"]]
            elif info["type"] == "multiclass":
                for i, cls in enumerate(info["classes"]):
                    table[f"{name}_{cls}"] = values[:, i]
                table[f"{name}_label"] = np.asarray(info["classes"], dtype=object)[values.argmax(axis=1)]
            else:
                table[name] = values[:, 0]
        return pd.DataFrame(table, index=frame.index)


def _numeric(values: list, name: str, where: str) -> np.ndarray:
    out = np.empty(len(values), dtype="float32")
    for i, value in enumerate(values):
        if value is None or (isinstance(value, str) and value.strip() == ""):
            out[i] = np.nan  # a missing number: the model fills it with the training mean
            continue
        if isinstance(value, bool):
            raise MtlError(f"column {name!r}, row {i + 1}: {value!r} is not a number", where=where)
        try:
            out[i] = float(value)
        except (TypeError, ValueError):
            raise MtlError(f"column {name!r}, row {i + 1}: {value!r} is not a number", where=where) from None
    return out


def _strings(values: list) -> np.ndarray:
    def text(value: Any) -> str:
        if value is None or (isinstance(value, float) and np.isnan(value)):
            return ""  # a missing category: the out-of-vocabulary bucket
        return value.decode() if isinstance(value, bytes) else str(value)

    return np.asarray([text(v) for v in values], dtype=object).astype(bytes)


def load(path: str | Path, version: int | None = None) -> LoadedModel:
    """Load a version folder, or the newest (or given) version of an export base."""
    import tensorflow as tf

    folder = resolve_version(path, version)
    meta_path = folder / "assets" / METADATA_FILE
    metadata = json.loads(meta_path.read_text()) if meta_path.is_file() else {}
    if metadata.get("features", {}).get("text"):
        import tensorflow_text  # noqa: F401  registers the TF Text ops of the in-graph tokenizer
    try:
        loaded = tf.saved_model.load(str(folder), tags=["serve"])
    except Exception as exc:  # a corrupt or foreign SavedModel
        raise MtlError(f"cannot load the SavedModel in {folder}: {str(exc).splitlines()[0]}", where="--model") from None
    if SIGNATURE not in loaded.signatures:
        raise MtlError(f"{folder} has no {SIGNATURE!r} signature", where="--model")
    signature = loaded.signatures[SIGNATURE]
    specs = signature.structured_input_signature[1]
    inputs = {name: ("string" if spec.dtype == tf.string else "float") for name, spec in sorted(specs.items())}
    ordered = metadata.get("features", {})
    order = list(ordered.get("numeric", [])) + list(ordered.get("categorical", {})) + list(ordered.get("text", []))
    if sorted(order) == sorted(inputs):
        inputs = {name: inputs[name] for name in order}
    return LoadedModel(folder, int(folder.name) if folder.name.isdigit() else 0, metadata, signature, inputs,
                       dict(signature.structured_outputs), loaded)
