"""The one raw-value rule (``mtl.features._values``) and signature input names, as properties (hypothesis)."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mtl.errors import MtlError
from mtl.features import (
    MAX_CELL_CHARS,
    MISSING_TEXTS,
    VALID_INPUT_NAME,
    CategoricalFeature,
    NumericFeature,
    VectorFeature,
    category_text,
    input_names,
    is_missing,
    number_value,
)

CELLS = st.one_of(st.none(), st.booleans(), st.integers(), st.floats(allow_nan=True, allow_infinity=True),
                  st.text(), st.from_regex(r"\A[+-]?0*\d{1,6}(\.0*)?\Z"), st.sampled_from(sorted(MISSING_TEXTS)))


@settings(max_examples=400, deadline=None)
@given(CELLS)
def test_a_category_is_a_fixed_point_of_the_rule(value: object) -> None:
    """Parsing the parsed text again changes nothing: a value written out and read back is the same category."""
    text = category_text(value)
    assert isinstance(text, str)
    assert category_text(text) == text
    assert (text == "") == (is_missing(value) or (isinstance(value, str) and value.strip() == ""))


@settings(max_examples=300, deadline=None)
@given(st.integers(min_value=-10**12, max_value=10**12))
def test_json_numbers_and_their_texts_agree(number: int) -> None:
    """A JSON integer, the same as a float (a gap-filled integer column) and their written texts are one category."""
    forms = [number, float(number), str(number), f"{number}.0", json.loads(json.dumps(float(number)))]
    assert {category_text(v) for v in forms} == {str(number)}


def test_leading_zeros_bytes_and_white_space() -> None:
    assert category_text("01002") == "01002" and category_text("01002.0") == "01002"
    assert category_text(b"Private") == "Private" and category_text("  Private ") == "Private"
    assert category_text(True) == "True" and category_text(2.5) == "2.5"
    assert [is_missing(v) for v in ("NA", " null ", float("nan"), None, "0", "none")] == [True] * 4 + [False] * 2


@settings(max_examples=300, deadline=None)
@given(st.floats(allow_nan=False, allow_infinity=False, width=32))
def test_numbers_from_json_text_and_csv_text_agree(number: float) -> None:
    assert number_value(number) == number_value(repr(number)) == number_value(f" {number!r} ")


@pytest.mark.parametrize("value", [float("inf"), "-inf", "Infinity", 10**401, "1e999"])
def test_non_finite_numbers_are_errors_or_missing(value: object) -> None:
    feature = NumericFeature("x")
    with pytest.raises(MtlError, match=r"^f: column 'x', row 3: .* is not a finite number"):
        feature.parse([1.0, 2.0, value], where="f")
    assert math.isnan(NumericFeature("x", non_finite="missing").parse([value])[0])


def test_booleans_and_words_are_not_numbers_and_errors_quote_a_short_prefix() -> None:
    with pytest.raises(MtlError, match=r"column 'x', row 1: True is not a number"):
        NumericFeature("x").parse([True])
    with pytest.raises(MtlError) as raised:
        NumericFeature("x").parse(["z" * 5000])
    assert len(str(raised.value)) < 200 and "5,000 characters" in str(raised.value)
    with pytest.raises(MtlError, match="longer than the limit"):
        CategoricalFeature("c").parse(["a", "b" * (MAX_CELL_CHARS + 1)])


def test_vectors_from_json_text_lists_and_arrays_agree() -> None:
    feature = VectorFeature("v")
    parsed = feature.parse(["[1, 2.5]", [1, 2.5], np.array([1.0, 2.5]), None])
    np.testing.assert_array_equal(parsed[:3], [[1, 2.5]] * 3)
    assert np.isnan(parsed[3]).all()
    feature.fit(parsed)
    with pytest.raises(MtlError, match=r"column 'v', row 2: a list of 3 numbers; this feature takes 2"):
        feature.parse([[1, 2], [1, 2, 3]])
    with pytest.raises(MtlError, match=r"row 1: 'abc' is not a list of numbers"):
        feature.parse(["abc"])


def test_unseen_categories_are_counted() -> None:
    feature = CategoricalFeature("zip").fit(np.array(["01002", "01003", "01002"], dtype=object))
    assert feature.most_frequent_ == "01002"
    assert feature.unseen_count(feature.parse(["01002", 1002, "99999", None])) == 3


@settings(max_examples=400, deadline=None)
@given(st.lists(st.text(min_size=0, max_size=12), min_size=1, max_size=8, unique=True))
def test_input_names_are_valid_unique_and_keep_valid_column_names(columns: list[str]) -> None:
    names = input_names(columns)
    assert list(names) == columns
    assert len(set(names.values())) == len(columns)
    assert all(VALID_INPUT_NAME.match(name) for name in names.values())
    assert all(names[c] == c for c in columns if VALID_INPUT_NAME.match(c))
    assert input_names(columns) == names  # deterministic: the same run gives the same signature


def _cell_by_cell(feature: object, values: list) -> tuple[list | None, str | None]:
    """What parsing one cell at a time gives (a one-cell object array: no column fast path applies): the values, or
    the message naming the first bad cell and its row."""
    out = []
    for row, value in enumerate(values, 1):
        cell = np.empty(1, dtype=object)
        cell[0] = value
        try:
            out.append(feature.parse(cell))  # type: ignore[attr-defined]
        except MtlError as exc:
            return None, str(exc).replace("row 1:", f"row {row}:")
    return out, None


@settings(max_examples=300, deadline=None)
@given(st.lists(st.one_of(CELLS, st.sampled_from(["Private", " Private ", "1996.0", "NA", "x" * (MAX_CELL_CHARS + 1)]),
                          st.sampled_from([b"Private", b"\xff"])), min_size=1, max_size=12),
       st.integers(1, 4))
def test_a_whole_column_parses_as_its_cells_one_by_one(cells: list, repeats: int) -> None:
    """The column fast paths (repeated texts parsed once, lists of plain numbers as one array) give every cell the
    value, and the first bad cell the message and row, that parsing it alone gives."""
    column = cells * repeats
    for feature in (CategoricalFeature("c"), NumericFeature("n"), NumericFeature("m", non_finite="missing")):
        expected, error = _cell_by_cell(feature, column)
        if error is not None:
            with pytest.raises(MtlError) as info:
                feature.parse(column)
            assert str(info.value) == error
        else:
            parsed = feature.parse(column)
            np.testing.assert_array_equal(parsed, np.concatenate(expected))
            assert parsed.dtype == expected[0].dtype
