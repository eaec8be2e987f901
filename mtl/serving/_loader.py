"""Load an exported SavedModel version and run its ``serving_default`` signature on raw rows.

Shared by ``mtl predict``, ``mtl serve`` and the Streamlit app. It reads only the export (``saved_model.pb``,
``variables/``, ``assets/mtl_metadata.json``), so it works on a machine that has TensorFlow but not the
training code's data stack.

The signature's graph runs in a TensorFlow session through a callable made once (C++ ``Session::MakeCallable``), as
TF Serving runs a SavedModel (a session over the ``serve`` MetaGraph): numpy arrays go in and come out with none of
the eager signature's per-call Python (argument binding, ``tf.constant`` per input) nor ``Session.run``'s feed
handling: 0.28 ms against 2-3 ms for a single-row call of the default model on a 2-core machine, with outputs equal
to the eager call's (``tests/serving/test_loader_session.py``).
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from mtl.errors import MtlError
from mtl.export._savedmodel import METADATA_FILE
from mtl.features import Feature, feature_from_config, features_from_signature

SIGNATURE = "serving_default"
_SEQUENCE_TYPES = frozenset({list, tuple, np.ndarray})


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


class SignatureRunner:
    """The ``serving_default`` signature of a SavedModel, loaded into its own graph and session.

    ``input_specs`` and ``output_specs`` are ``{name: tf.TensorSpec}`` as the SignatureDef declares them
    (``signature_defs``: every SignatureDef of the ``serve`` MetaGraph, as protos);
    ``__call__`` feeds numpy arrays by input name and returns numpy arrays by output name. Safe to call from
    several threads at once (TensorFlow's session callables are). The callable is TensorFlow's wrapper of
    ``Session::MakeCallable`` (``Session._make_callable_from_options``, the one private call here: the public
    ``make_callable`` with feeds goes through ``Session.run`` and its per-feed Python, 1.5 ms of a 1.8 ms call)."""

    def __init__(self, folder: Path) -> None:
        import tensorflow as tf
        from tensorflow.core.protobuf import config_pb2
        from tensorflow.python.util import deprecation

        self.graph = tf.Graph()
        self.session = tf.compat.v1.Session(graph=self.graph)
        tf_logger = logging.getLogger("tensorflow")
        tf_logger.addFilter(_quiet_restore)
        try:
            with self.graph.as_default(), deprecation.silence():
                meta_graph = tf.compat.v1.saved_model.loader.load(self.session, ["serve"], str(folder))
        except BaseException:
            self.session.close()
            raise
        finally:
            tf_logger.removeFilter(_quiet_restore)
        self.signature_defs = dict(meta_graph.signature_def)
        if SIGNATURE not in self.signature_defs:
            self.session.close()
            raise KeyError(SIGNATURE)
        signature = self.signature_defs[SIGNATURE]
        self.input_specs = {name: _spec(name, info) for name, info in sorted(signature.inputs.items())}
        self.output_specs = {name: _spec(name, info) for name, info in sorted(signature.outputs.items())}
        # {input name: shape with None for any size} (None: unknown rank), what requests are checked against
        self.input_shapes = {name: tuple(spec.shape.as_list()) if spec.shape.rank is not None else None
                             for name, spec in self.input_specs.items()}
        self._output_names = list(self.output_specs)
        # (name, numpy dtype to convert to; None for strings, fed as they are)
        self._feeds = [(name, None if spec.dtype == tf.string else spec.dtype.as_numpy_dtype)
                       for name, spec in self.input_specs.items()]
        options = config_pb2.CallableOptions(feed=[signature.inputs[n].name for n in self.input_specs],
                                             fetch=[signature.outputs[n].name for n in self._output_names])
        self._call = self.session._make_callable_from_options(options)  # noqa: SLF001  (see the class docstring)

    def __call__(self, arrays: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """The signature's outputs for these inputs (every input by name; an unknown or missing one is a
        ``KeyError``). Numbers are converted to the input's dtype, strings fed as ``str`` or ``bytes`` objects."""
        if len(arrays) != len(self._feeds):
            raise KeyError(sorted(set(arrays) ^ set(self.input_specs)))
        values = [np.asarray(arrays[name], dtype) if dtype is not None else _strings(arrays[name])
                  for name, dtype in self._feeds]
        return dict(zip(self._output_names, self._call(*values), strict=True))


def _strings(values: Any) -> np.ndarray:  # noqa: ANN401
    """String input values as the object array a session feed takes (numpy ``U``/``S`` arrays and lists too)."""
    return values if isinstance(values, np.ndarray) and values.dtype == object else np.asarray(values, dtype=object)


def _quiet_restore(record: logging.LogRecord) -> bool:
    """Drop the v1 saver's "Restoring parameters from ..." INFO line (a notebook or a server log would show one per
    load); every other TensorFlow log record passes."""
    return not str(record.msg).startswith("Restoring parameters from")


def _spec(name: str, info: Any) -> Any:  # noqa: ANN401
    """A ``tf.TensorSpec`` from a SignatureDef's ``TensorInfo``."""
    import tensorflow as tf

    return tf.TensorSpec(tf.TensorShape(info.tensor_shape), tf.as_dtype(info.dtype), name=name)


@dataclass
class LoadedModel:
    """One loaded export version: its signature (``runner``), its features (rebuilt from the metadata, with the
    same parsers as training) and its ``mtl`` metadata."""

    path: Path
    version: int
    metadata: dict
    runner: SignatureRunner = field(repr=False)
    features: dict[str, Feature]  # column -> feature

    @property
    def input_specs(self) -> dict[str, Any]:
        """``{signature input name: tf.TensorSpec}``."""
        return self.runner.input_specs

    @property
    def outputs(self) -> dict[str, Any]:
        """``{signature output name: tf.TensorSpec}``."""
        return self.runner.output_specs

    @property
    def tasks(self) -> dict[str, dict]:
        return self.metadata.get("tasks", {})

    @property
    def inputs(self) -> dict[str, str]:
        """``{signature input name: "float" | "string"}`` in the feature order."""
        return {f.input_name: ("string" if f.dtype == "string" else "float") for f in self.features.values()}

    def _feature_of(self, name: str) -> Feature | None:
        """The feature a request names by its column name or by its signature input name."""
        feature = self.features.get(name)
        if feature is None:
            feature = next((f for f in self.features.values() if f.input_name == name), None)
        return feature

    def check_columns(self, columns: list[str], where: str) -> None:
        """Raise ``MtlError`` naming the missing and the unexpected input columns (a column may be named by its
        column name or its signature input name)."""
        found = {name: self._feature_of(name) for name in columns}
        extra = [name for name, f in found.items() if f is None]
        named = [f.column for f in found.values() if f is not None]
        missing = [c for c in self.features if c not in named]
        twice = sorted({c for c in named if named.count(c) > 1})
        if missing or extra or twice:
            parts = ([f"missing column(s) {missing}"] if missing else []) + (
                [f"unexpected column(s) {extra}"] if extra else []) + (
                [f"column(s) {twice} given twice (by column and by input name)"] if twice else [])
            raise MtlError(f"{'; '.join(parts)}; the model takes {list(self.features)}", where=where)

    def to_tensors(self, columns: dict[str, Any], where: str, unseen: dict[str, int] | None = None,
                   first_row: int = 1) -> dict[str, np.ndarray]:
        """Parse raw column values with each feature's parser (the one raw-value rule of training) into
        ``{signature input name: array}``; the first bad value is an ``MtlError`` naming column and row.
        ``unseen``, when given, receives per column the number of values not seen in training."""
        self.check_columns(list(columns), where)
        given = {self._feature_of(name).column: values for name, values in columns.items()}
        out, length = {}, None
        for feature in self.features.values():  # in the model's order: every path reports the same first bad cell
            cells = _cells(given[feature.column])
            if not feature.input_shape() and not isinstance(cells, np.ndarray) and \
                    not _SEQUENCE_TYPES.isdisjoint(map(type, cells)):  # a scalar per row may come as a one-element
                # list (shape [1], as TF Serving's REST API allows)
                cells = [c[0] if isinstance(c, list | tuple | np.ndarray) and len(c) == 1 else c for c in cells]
            parsed = feature.parse(cells, where=where, first_row=first_row)
            if length is not None and len(parsed) != length:
                raise MtlError(f"column {feature.column!r} has {len(parsed)} values, others have {length}",
                               where=where)
            length = len(parsed)
            if unseen is not None:
                count = feature.unseen_count(parsed)
                if count:
                    unseen[feature.column] = unseen.get(feature.column, 0) + count
            out[feature.input_name] = parsed
        return out

    def predict(self, columns: dict[str, Any], where: str = "input",
                unseen: dict[str, int] | None = None) -> dict[str, np.ndarray]:
        """Run the signature on raw column values; returns numpy arrays keyed by output name."""
        return self.runner(self.to_tensors(columns, where, unseen))

    def predict_frame(self, frame: Any, where: str = "input", task: str | None = None,
                      unseen: dict[str, int] | None = None, thresholds: dict[str, float] | None = None) -> Any:
        """A table of predictions, each task's columns as its type decodes them (``Task.table_columns``)."""
        import pandas as pd

        from mtl.tasks import TASK_TYPES

        if task is not None and task not in self.tasks:
            raise MtlError(f"unknown task {task!r}; tasks: {list(self.tasks)}", where="--task")
        raw = self.predict({c: frame[c].to_numpy(dtype=object) for c in frame.columns}, where, unseen)
        table: dict[str, Any] = {}
        for name, entry in self.tasks.items():
            if task is None or name == task:
                table.update(TASK_TYPES[entry["type"]].table_columns(name, entry, raw,
                                                                      (thresholds or {}).get(name)))
        return pd.DataFrame(table, index=frame.index)


def _cells(values: Any) -> Any:
    """Request values as parser input: a 1-D numeric array as it is, anything else (a JSON list, a Series, an
    array of bytes from a TensorProto, a 2-D array of vectors) as a list of cells."""
    if isinstance(values, np.ndarray):
        if values.ndim == 1 and values.dtype.kind in "fiu":
            return values
        return list(values) if values.ndim > 1 else values.tolist()
    return list(values)


def load(path: str | Path, version: int | None = None) -> LoadedModel:
    """Load a version folder, or the newest (or given) version of an export base."""
    folder = resolve_version(path, version)
    meta_path = folder / "assets" / METADATA_FILE
    features: dict[str, Feature] | None = None
    try:
        metadata = json.loads(meta_path.read_text(encoding="utf-8"))
        features = {c["column"]: feature_from_config(c) for c in metadata["features"]}
        metadata["tasks"]  # noqa: B018  (must be there)
    except FileNotFoundError:  # a SavedModel exported elsewhere: its inputs are read from its signature
        metadata = {}
    except (ValueError, KeyError, TypeError) as exc:
        raise MtlError(f"{folder}: assets/{METADATA_FILE} is not valid mtl metadata ({type(exc).__name__}); "
                       "export the run again", where="--model") from None
    if features is None or any(f.dtype == "string" for f in features.values()):
        import tensorflow_text  # noqa: F401  registers the TF Text ops an in-graph tokenizer may use
    try:
        runner = SignatureRunner(folder)
    except KeyError:
        raise MtlError(f"{folder} has no {SIGNATURE!r} signature", where="--model") from None
    except Exception as exc:  # a corrupt or foreign SavedModel
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        raise MtlError(f"cannot load the SavedModel in {folder}: {first}", where="--model") from None
    if features is None:
        features = features_from_signature(runner.input_specs)
    return LoadedModel(folder, int(folder.name) if folder.name.isascii() and folder.name.isdigit() else 0,
                       metadata, runner, features)
