"""The one raw-value rule: how a cell from any source (a CSV or TSV file, Parquet, JSON Lines, ``--row``, a REST or
gRPC body, the app form) becomes a value the model takes.

Readers hand over cells as they are written (CSV/TSV cells as text, never with pandas' type inference); every
feature kind parses them with the functions below, so training, ``mtl predict``, ``mtl serve`` and the app cannot
disagree. The rule, as docs/tabular-and-text.md documents it:

- **Missing**: ``None`` / JSON ``null``, a float NaN, and the texts in ``MISSING_TEXTS`` after stripping white space.
- **Categories** (``category_text``): text as written with surrounding white space stripped (``01002`` stays
  ``01002``); a text of the form ``[+-]digits.0+`` drops its zero fraction (``1996.0`` -> ``1996``); bytes are
  decoded as UTF-8; integers are written in decimal, floats with an integral value as integers, other floats as
  Python's shortest ``repr`` (``2.5``); booleans as ``True`` / ``False``.
- **Numbers** (``number_value``): numbers, or texts parsed as a float; booleans are not numbers; a non-finite
  number (``inf``, a 400-digit integer) is an error, or missing where ``data.non_finite: missing``.
- Any cell longer than ``MAX_CELL_CHARS`` characters is an error.

>>> category_text(" 01002 "), category_text("1996.0"), category_text(1996.0), category_text(b"Private")
('01002', '1996', '1996', 'Private')
>>> number_value("  2.5 "), is_missing("NA"), is_missing("0")
(2.5, True, False)
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable
from typing import Any

import numpy as np
import pandas as pd

from mtl.errors import MtlError

__all__ = ["MISSING_TEXTS", "MAX_CELL_CHARS", "is_missing", "category_text", "number_value", "shown", "cells",
           "CellError"]

MISSING_TEXTS = frozenset({"", "NA", "N/A", "n/a", "NaN", "nan", "null", "NULL", "None", "<NA>"})
MAX_CELL_CHARS = 1_000_000
_ZERO_FRACTION = re.compile(r"^([+-]?\d+)\.0+$")


class CellError(ValueError):
    """One bad cell; ``cells`` turns it into an ``MtlError`` naming the column and the row."""


def shown(value: Any, limit: int = 40) -> str:
    """A bad value as error messages quote it: ``repr``, cut to ``limit`` characters."""
    if isinstance(value, str | bytes) and len(value) > limit:
        return f"{value[:limit]!r}... ({len(value):,} characters)"
    text = repr(value)
    return text if len(text) <= limit else f"{text[:limit]}... ({len(text):,} characters)"


def _check_length(value: Any) -> None:
    if isinstance(value, str | bytes) and len(value) > MAX_CELL_CHARS:
        raise CellError(f"a cell of {len(value):,} characters is longer than the limit of {MAX_CELL_CHARS:,}")


def is_missing(value: Any) -> bool:
    """True for ``None``, NaN and the missing-value texts (``MISSING_TEXTS``, white space stripped)."""
    if value is None:
        return True
    if isinstance(value, float | np.floating):
        return bool(np.isnan(value))
    if isinstance(value, bytes):
        value = value.decode("utf-8", errors="replace")
    if isinstance(value, str):
        return value.strip() in MISSING_TEXTS
    return value is pd.NA


def category_text(value: Any) -> str:
    """A category (or a class label) as the model knows it; ``""`` when missing."""
    _check_length(value)
    if is_missing(value):
        return ""
    if isinstance(value, bytes):
        try:
            value = value.decode("utf-8")
        except UnicodeDecodeError:
            raise CellError(f"{shown(value)} is not UTF-8 text") from None
    if isinstance(value, str):
        text = value.strip()
        match = _ZERO_FRACTION.match(text)
        return match.group(1) if match else text
    if isinstance(value, bool | np.bool_):
        return str(bool(value))
    if isinstance(value, int | np.integer):
        return str(int(value))
    if isinstance(value, float | np.floating):
        value = float(value)
        if math.isinf(value):
            return "inf" if value > 0 else "-inf"
        return str(int(value)) if value.is_integer() else repr(value)
    raise CellError(f"expected one value, got {shown(value)}")


def number_value(value: Any, non_finite: str = "error") -> float:
    """A number as a float; NaN when missing (or non-finite with ``non_finite="missing"``)."""
    _check_length(value)
    if is_missing(value):
        return math.nan
    if isinstance(value, bool | np.bool_):
        raise CellError(f"{shown(value)} is not a number")
    if isinstance(value, bytes):
        value = value.decode("utf-8", errors="replace")
    try:
        number = float(value.strip()) if isinstance(value, str) else float(value)
    except OverflowError:
        number = math.inf
    except (TypeError, ValueError):
        raise CellError(f"{shown(value)} is not a number") from None
    if not math.isfinite(number):
        if non_finite == "missing":
            return math.nan
        raise CellError(f"{shown(value)} is not a finite number (set data.non_finite: missing to read it as "
                        "missing)")
    return number


_TEXT_TYPES = frozenset({str, bytes})
_SHAREABLE_RESULTS = frozenset({str, float})


def cells(values: Iterable[Any], column: str, where: str | None, parse: Any, first_row: int = 1) -> list:
    """``[parse(v) for v in values]``; the first bad cell is an ``MtlError`` naming ``column`` and its row
    (``first_row`` is the number of the first value).

    A column of texts (``str``/``bytes``) that repeat, as categories do, is parsed once per distinct text: the
    parsers are pure functions of the cell (a 256-row request parses its categories many times faster). Only texts
    are shared (``1``, ``1.0`` and ``True`` are equal as keys yet parse differently), and only immutable results,
    so two rows never share a mutable object."""
    values = values if isinstance(values, list) else list(values)
    kinds = set(map(type, values))
    if kinds and kinds <= _TEXT_TYPES:
        distinct = set(values)
        if len(distinct) <= len(values) // 2:
            try:
                parsed = {value: parse(value) for value in distinct}
            except CellError:  # the loop below names the first bad row
                parsed = None
            if parsed is not None and set(map(type, parsed.values())) <= _SHAREABLE_RESULTS:
                return list(map(parsed.__getitem__, values))
    out = []
    for row, value in enumerate(values, first_row):
        try:
            out.append(parse(value))
        except CellError as exc:
            raise MtlError(f"column {column!r}, row {row}: {exc}", where=where) from None
    return out
