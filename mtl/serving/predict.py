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
    """Predict and print (or write, atomically) one column per task output."""
    model = load(model_path)
    frame, where = read_rows(args.input, args.row)
    table = model.predict_frame(frame, where=where, task=args.task)
    if args.output:
        out = Path(args.output)
        tmp = out.with_name(f".{out.name}.tmp")
        table.to_csv(tmp, index=False)
        os.replace(tmp, out)
        print(f"predictions: {out} ({len(table)} rows, model {model.path})", file=sys.stderr)
    else:
        table.to_csv(sys.stdout, index=False)
    return 0
