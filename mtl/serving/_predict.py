"""``mtl predict``: read rows (CSV, TSV, Parquet, JSON Lines or one JSON object), predict with an export, print or
write a CSV. Files are read by the same readers as training data (``mtl.data.READERS``: cells as written) and
every value is parsed by its feature's kind, so a file in the training file's format predicts as training saw it."""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path
from typing import Any

from mtl.errors import MtlError
from mtl.serving._loader import load


def read_rows(input_path: str | None, row: str | None) -> tuple[Any, str]:
    """``(frame, where)``: the rows to predict (cells as written) and the place to name in errors."""
    import pandas as pd

    from mtl.data import READERS

    if row is not None:
        try:
            record = json.loads(row)
        except json.JSONDecodeError as exc:
            raise MtlError(f"not valid JSON ({exc.msg} at character {exc.pos})", where="--row") from None
        except RecursionError:
            raise MtlError("not valid JSON (nested too deeply)", where="--row") from None
        if not isinstance(record, dict):
            raise MtlError("expected one JSON object {\"column\": value, ...}", where="--row")
        return pd.DataFrame.from_records([record]).astype(object), "--row"
    path = Path(input_path or "")
    where = f"--input {path}"
    if not path.is_file():
        raise MtlError("no such file", where=where)
    reader = READERS.get(path.suffix.lower())
    if reader is None:
        raise MtlError(f"unsupported file type {path.suffix!r}; use one of {', '.join(sorted(READERS))}", where=where)
    try:
        frame = reader(path)
    except MtlError as exc:
        raise MtlError(exc.message, where=where) from None
    except Exception as exc:  # pandas/pyarrow raise many types for a malformed file
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise MtlError(f"cannot read: {first}", where=where) from None
    if len(frame) == 0:
        raise MtlError("holds no rows", where=where)
    frame.columns = [str(c) for c in frame.columns]
    return frame, where


def parse_thresholds(items: list[str], tasks: dict[str, dict]) -> dict[str, float]:
    """``--threshold TASK=VALUE`` items as ``{task: value}``; only a task whose export metadata has a threshold
    takes one."""
    thresholds = {}
    for item in items:
        name, sep, text = item.partition("=")
        where = f"--threshold {item}"
        if not sep or name not in tasks:
            raise MtlError(f"expected TASK=VALUE with TASK one of {list(tasks)}", where=where)
        if "threshold" not in tasks[name]:
            raise MtlError(f"task {name!r} ({tasks[name].get('type')}) has no threshold", where=where)
        try:
            value = float(text)
        except ValueError:
            value = float("nan")
        if not 0 < value < 1:
            raise MtlError(f"{text!r} is not a probability between 0 and 1", where=where)
        thresholds[name] = value
    return thresholds


def split_passthrough(frame: Any, model: Any, keep: list[str], where: str) -> tuple[Any, Any]:
    """``(model inputs, kept columns)``: the ``--keep`` columns are set aside for the output, and label columns of
    the model's tasks (``task_configs`` of the export metadata) are left out of the inputs with a note."""
    absent = [c for c in keep if c not in frame.columns]
    if absent:
        raise MtlError(f"column(s) {absent} not in the rows; columns: {list(frame.columns)[:20]}", where="--keep")
    kept = frame[list(dict.fromkeys(keep))].copy()
    labels = {c.get("column") for c in model.metadata.get("task_configs", {}).values()}
    label_columns = [c for c in frame.columns if c in labels and c not in model.features]
    if label_columns:
        print(f"note: {where}: label column(s) {label_columns} are not inputs of the model; left out", file=sys.stderr)
    drop = [c for c in frame.columns if c not in model.features and (c in label_columns or c in kept.columns)]
    return frame.drop(columns=drop), kept


def predict_command(model_path: str | Path, args: argparse.Namespace) -> int:
    """Predict and print (or write, atomically) each task's columns as its type decodes them; values not seen in
    training are counted and reported on stderr. ``--keep`` columns come first, unchanged; label columns the
    model knows are ignored (a note); ``--threshold TASK=VALUE`` overrides a task's threshold.

    A task type may print its own lines for ``--task NAME`` (word tags of a tagging task read
    ``Task: ner / Input: ... / NER Output: [...]``)."""
    import pandas as pd

    from mtl.tasks import TASK_TYPES

    model = load(model_path)
    words = next((f for f in model.features.values() if f.provides_words), None)
    if getattr(args, "text", None) is not None:
        if words is None:
            raise MtlError("this model takes no text input; use --row or --input", where="--text")
        others = [c for c in model.features if c != words.column]
        if others:
            raise MtlError(f"the model also takes {others}; give every input with --row or --input", where="--text")
        frame, where = pd.DataFrame({words.column: [args.text]}, dtype=object), "--text"
    else:
        frame, where = read_rows(args.input, args.row)
    thresholds = parse_thresholds(getattr(args, "threshold", None) or [], model.tasks)
    frame, kept = split_passthrough(frame, model, getattr(args, "keep", None) or [], where)
    unseen: dict[str, int] = {}
    table = model.predict_frame(frame, where=where, task=args.task, unseen=unseen, thresholds=thresholds)
    if len(kept.columns):
        clash = [c for c in kept.columns if c in table.columns]
        if clash:
            raise MtlError(f"column(s) {clash} would be both a kept column and a prediction", where="--keep")
        table = pd.concat([kept, table], axis=1)
    for column, count in unseen.items():
        print(f"note: column {column!r}: {count} of {len(frame)} value(s) not seen in training "
              "(out-of-vocabulary)", file=sys.stderr)
    if args.task is not None and not args.output:
        texts = [str(t) for t in frame[words.column]] if words is not None and words.column in frame else \
            [""] * len(frame)
        entry = model.tasks[args.task]
        lines = TASK_TYPES[entry["type"]].cli_lines(args.task, entry, list(table[args.task]), texts)
        if lines is not None:
            print("\n".join(lines))
            return 0
    table = table.map(lambda v: json.dumps(v) if isinstance(v, list) else v)
    if args.output:
        out = Path(args.output)
        tmp = out.with_name(f".{out.name}.tmp")
        try:
            table.to_csv(tmp, index=False)
            os.replace(tmp, out)
        except OSError as exc:
            tmp.unlink(missing_ok=True)
            raise MtlError(f"cannot write: {exc.strerror}", where=f"--output {out}") from None
        print(f"predictions: {out} ({len(table)} rows, model {model.path})", file=sys.stderr)
    else:
        table.to_csv(sys.stdout, index=False)
    return 0
