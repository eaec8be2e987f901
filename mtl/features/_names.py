"""Signature input names for column names.

A column's input name is the column name itself where TensorFlow allows it as a signature input and a Keras layer
name (``^[A-Za-z][A-Za-z0-9_.-]*$``); otherwise every run of other characters becomes ``_``, a name that does not
start with a letter gets ``f_`` in front, and a name already taken gets ``_2``, ``_3``, ... The mapping is kept in
the export metadata (each feature's ``column`` and ``input_name``), so it can always be reversed, and ``mtl predict``,
``mtl serve`` and the app accept either name.

>>> input_names(["age", "Age (years)", "Größe.cm", "2nd", "age_"])
{'age': 'age', 'Age (years)': 'Age_years_', 'Größe.cm': 'Gr_e.cm', '2nd': 'f_2nd', 'age_': 'age_'}
"""

from __future__ import annotations

import re

__all__ = ["input_names", "VALID_INPUT_NAME"]

VALID_INPUT_NAME = re.compile(r"^[A-Za-z][A-Za-z0-9_.\-]*$")
_INVALID_RUN = re.compile(r"[^A-Za-z0-9_.\-]+")


def input_names(columns: list[str]) -> dict[str, str]:
    """``{column: input name}``, unique, valid names kept as they are (see the module docstring)."""
    names: dict[str, str] = {c: c for c in columns if VALID_INPUT_NAME.match(c)}
    taken = set(names.values())
    for column in columns:
        if column in names:
            continue
        base = _INVALID_RUN.sub("_", column)
        if not base[:1].isascii() or not base[:1].isalpha():
            base = f"f_{base}"
        name, k = base, 1
        while name in taken:
            k += 1
            name = f"{base}_{k}"
        names[column] = name
        taken.add(name)
    return {c: names[c] for c in columns}
