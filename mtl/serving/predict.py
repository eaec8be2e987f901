"""``mtl predict``: read rows (CSV, JSON Lines or one JSON object), predict with an export, print or write a CSV."""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path
from typing import Any

from mtl.errors import MtlError
from mtl.serving.loader import load


def read_rows(input_path: str | None, row: str | None) -> tuple[Any, str]:
    """``(frame, where)``: the rows to predict and the place to name in errors."""
    import pandas as pd

    if row is not None:
        try:
            record = json.loads(row)
        except json.JSONDecodeError as exc:
            raise MtlError(f"not valid JSON ({exc.msg} at character {exc.pos})", where="--row") from None
        if not isinstance(record, dict):
            raise MtlError("expected one JSON object {\"column\": value, ...}", where="--row")
        return pd.DataFrame([record]), "--row"
    path = Path(input_path or "")
    if not path.is_file():
        raise MtlError("no such file", where=f"--input {path}")
    suffix = path.suffix.lower()
    try:
        if suffix == ".csv":
            frame = pd.read_csv(path, keep_default_na=False, na_values=[""], dtype=object)
        elif suffix in (".jsonl", ".ndjson"):
            frame = pd.read_json(path, lines=True, dtype=False)
        else:
            raise MtlError(f"unsupported file type {suffix!r}; use .csv or .jsonl", where=f"--input {path}")
    except (ValueError, pd.errors.ParserError) as exc:
        raise MtlError(f"cannot read: {str(exc).splitlines()[0]}", where=f"--input {path}") from None
    if len(frame) == 0:
        raise MtlError("holds no rows", where=f"--input {path}")
    return frame, f"--input {path}"


def predict_command(model_path: str | Path, args: argparse.Namespace) -> int:
    """Predict and print (or write, atomically) one column per task output.

    Printed word tags of one tagging task (``--task ner``) read ``Task: ner / Input: ... / NER Output: [...]``."""
    import pandas as pd

    model = load(model_path)
    if getattr(args, "text", None) is not None:
        text = model.metadata.get("features", {}).get("text") or []
        if not text:
            raise MtlError("this model takes no text input; use --row or --input", where="--text")
        others = [c for c in model.inputs if c != text[0]]
        if others:
            raise MtlError(f"the model also takes {others}; give every input with --row or --input", where="--text")
        frame, where = pd.DataFrame({text[0]: [args.text]}), "--text"
    else:
        frame, where = read_rows(args.input, args.row)
    table = model.predict_frame(frame, where=where, task=args.task)
    tagging = args.task is not None and model.tasks[args.task]["type"] == "tagging"
    if tagging and not args.output:
        text_column = (model.metadata.get("features", {}).get("text") or [None])[0]
        for i, tags in enumerate(table[args.task]):
            shown = frame[text_column].iloc[i] if text_column in frame else ""
            print(f"Task: {args.task}\nInput: {shown}\n{args.task.upper()} Output: {tags}\n")
        return 0
    if any(info["type"] == "tagging" for info in model.tasks.values()):
        table = table.map(lambda v: json.dumps(v) if isinstance(v, list) else v)
    if args.output:
        out = Path(args.output)
        tmp = out.with_name(f".{out.name}.tmp")
        table.to_csv(tmp, index=False)
        os.replace(tmp, out)
        print(f"predictions: {out} ({len(table)} rows, model {model.path})", file=sys.stderr)
    else:
        table.to_csv(sys.stdout, index=False)
    return 0
