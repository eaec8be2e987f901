"""Text columns: words as the model splits them, and word-level tag columns checked against them."""

from __future__ import annotations

import re
from typing import Any

import numpy as np
import pandas as pd

from mtl.data._labels import data_row
from mtl.errors import MtlError

__all__ = ["split_words", "text_column", "tag_list", "check_tag_counts"]

_WHITESPACE = re.compile(r"[ \t\n\r\f\v]+")


def split_words(text: str) -> list[str]:
    """The words of ``text``: split on ASCII white space, as ``tf.strings.split`` does inside the model."""
    return [w for w in _WHITESPACE.split(text) if w]


def text_column(values: pd.Series) -> np.ndarray:
    """Strings (an object array); a missing text becomes ``""``."""
    return values.map(lambda v: "" if v is None or (isinstance(v, float) and np.isnan(v)) else str(v)).to_numpy(
        dtype=object)


def tag_list(value: Any) -> list[str] | None:
    """A row's tags: a list (JSON, CoNLL) or a string of tags separated by spaces (CSV); ``None`` when missing."""
    if value is None or (isinstance(value, float) and np.isnan(value)):
        return None
    if isinstance(value, str):
        return split_words(value) or None
    return [str(t) for t in value]


def check_tag_counts(texts: pd.Series, tags: pd.Series, task: str, column: str) -> None:
    """Every labelled row has one tag per word of its text; the first row that has not is an error."""
    for index, text, value in zip(texts.index, texts, tags, strict=True):
        row_tags = tag_list(value)
        if row_tags is None:
            continue
        words = split_words("" if not isinstance(text, str) else text)
        if len(words) != len(row_tags):
            raise MtlError(f"{data_row(index)}: {len(row_tags)} tags for {len(words)} words "
                           f"(the text split on white space)", where=f"tasks.{task} (column {column!r})")
