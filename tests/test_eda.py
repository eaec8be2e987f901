"""``mtl.eda.write_eda_report`` on a slice of the real UCI Adult data, with missing labels injected."""

from __future__ import annotations

import re
import struct
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from mtl.config import config_from_dict
from mtl.data import read_table
from mtl.eda import write_eda_report
from mtl.errors import MtlError

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
NUMERIC = ["age", "capital_gain"]
CATEGORICAL = ["workclass", "gender"]


def make_config(**overrides: dict) -> object:
    raw = {
        "data": {"dataset": "adult", "features": {"numeric": NUMERIC, "categorical": CATEGORICAL}},
        "tasks": {
            "income": {"type": "binary", "column": "income", "positive": ">50K"},
            "hours_per_week": {"type": "regression", "column": "hours_per_week"},
            "relationship": {"type": "multiclass", "column": "relationship"},
        },
    }
    raw.update(overrides)
    return config_from_dict(raw)


@pytest.fixture(scope="module")
def adult() -> pd.DataFrame:
    """2,000 real rows; income missing on 40 ("" x20, NaN x20), hours missing on 30, age odd on 8."""
    frame = read_table(dataset="adult")[0].sample(2000, random_state=0).reset_index(drop=True)
    frame.loc[0:19, "income"] = ""
    frame.loc[20:39, "income"] = None
    frame["hours_per_week"] = frame["hours_per_week"].astype(float)
    frame.loc[100:129, "hours_per_week"] = np.nan
    frame["age"] = frame["age"].astype(object)
    frame.loc[200:202, "age"] = None
    frame.loc[203:207, "age"] = "unknown"
    return frame


@pytest.fixture(scope="module")
def report(adult: pd.DataFrame, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    out = tmp_path_factory.mktemp("eda")
    path = write_eda_report(make_config(), out, frame=adult, source="adult slice")
    return path, path.read_text(encoding="utf-8")


def table_row(text: str, first_cell: str) -> list[str]:
    """The cells of the Markdown table row whose first cell is ``first_cell``."""
    for line in text.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if line.startswith("|") and cells[0] == first_cell:
            return cells
    raise AssertionError(f"no table row starting with {first_cell!r}")


def section(text: str, heading: str) -> str:
    start = text.index(heading)
    end = text.find("\n#", start + len(heading))
    return text[start:] if end < 0 else text[start:end]


def test_report_written_with_header(report: tuple[Path, str]) -> None:
    path, text = report
    assert path.name == "eda.md" and path.is_file()
    assert "- source: adult slice" in text
    assert "- rows: 2,000" in text
    assert "- columns: 15" in text
    assert "- tasks: 3; rows with no label for any task: 0" in text


def test_mentions_every_task_and_feature(report: tuple[Path, str]) -> None:
    text = report[1]
    for heading in ("### income (binary, column `income`)", "### hours_per_week (regression, column `hours_per_week`)",
                    "### relationship (multiclass, column `relationship`)"):
        assert heading in text
    for feature in NUMERIC + CATEGORICAL:
        assert f"| `{feature}` |" in text


def test_missing_label_rates(report: tuple[Path, str]) -> None:
    text = report[1]
    income = section(text, "### income")
    assert "- labelled rows: 1,960" in income
    assert "- missing labels: 40 of 2,000 (2.00%)" in income
    hours = section(text, "### hours_per_week")
    assert "- missing labels: 30 of 2,000 (1.50%)" in hours
    assert "- missing labels: 0 of 2,000 (0.00%)" in section(text, "### relationship")


def test_binary_class_balance(report: tuple[Path, str], adult: pd.DataFrame) -> None:
    income = section(report[1], "### income")
    counts = adult["income"].iloc[40:].value_counts()
    assert set(counts.index) == {"<=50K", ">50K"}
    for label, count in counts.items():
        assert table_row(income, label)[1:] == [f"{count:,}", f"{100 * count / 1960:.2f}%"]


def test_multiclass_shows_classes(report: tuple[Path, str], adult: pd.DataFrame) -> None:
    rel = section(report[1], "### relationship")
    counts = adult["relationship"].value_counts()
    assert len(counts) == 6 and f"- classes: {len(counts)}" in rel
    for label, count in counts.items():
        assert table_row(rel, label)[1] == f"{count:,}"
    assert "![relationship](plots/task_relationship.png)" in rel


def test_regression_summary(report: tuple[Path, str], adult: pd.DataFrame) -> None:
    hours = adult["hours_per_week"].dropna()
    row = table_row(section(report[1], "### hours_per_week"), "`hours_per_week`")
    assert row[1] == f"{len(hours):,}" == "1,970"
    assert float(row[2]) == pytest.approx(hours.mean(), rel=1e-3)
    assert float(row[3]) == pytest.approx(hours.std(), rel=1e-3)
    assert [float(v) for v in row[4:]] == pytest.approx([hours.min(), *hours.quantile([.25, .5, .75]), hours.max()])


def test_numeric_features_count_missing_and_non_numeric(report: tuple[Path, str], adult: pd.DataFrame) -> None:
    text = section(report[1], "## Numeric features")
    age = table_row(text, "`age`")
    assert age[1:4] == ["1,992", "3", "5"]  # count, missing, non-numeric
    ages = pd.to_numeric(adult["age"], errors="coerce").dropna()
    assert float(age[4]) == pytest.approx(ages.mean(), rel=1e-3)
    assert table_row(text, "`capital_gain`")[1:4] == ["2,000", "0", "0"]
    assert "**Non-numeric or non-finite values**" in text and "`age` (5)" in text


def test_categorical_cardinality_and_top_values(report: tuple[Path, str], adult: pd.DataFrame) -> None:
    text = section(report[1], "## Categorical features")
    for column in CATEGORICAL:
        counts = adult[column].value_counts()
        row = table_row(text, f"`{column}`")
        assert row[1:3] == [str(len(counts)), "0"]
        assert row[3] == ", ".join(f"{v} ({k:,})" for v, k in counts[:3].items())


def test_target_correlation_is_pearson_on_jointly_labelled_rows(report: tuple[Path, str],
                                                                   adult: pd.DataFrame) -> None:
    text = section(report[1], "## Correlations between targets")
    assert "Pearson" in text
    both = adult[(adult["income"].fillna("") != "") & adult["hours_per_week"].notna()]
    expected = np.corrcoef((both["income"] == ">50K").astype(float), both["hours_per_week"])[0, 1]
    row = table_row(text, "income")
    assert row[1] == "hours_per_week" and row[2] == f"{len(both):,}" == "1,930"
    assert float(row[3]) == pytest.approx(expected, abs=5e-4)
    assert expected > 0.1  # people earning >50K work longer hours in this data
    assert "![target correlations](plots/target_correlations.png)" in text


def test_referenced_plots_are_valid_pngs(report: tuple[Path, str]) -> None:
    path, text = report
    images = re.findall(r"!\[[^\]]*\]\(([^)]+)\)", text)
    assert sorted(images) == sorted(["plots/task_income.png", "plots/task_hours_per_week.png",
                                     "plots/task_relationship.png", "plots/numeric_features.png",
                                     "plots/target_correlations.png"])
    for rel in images:
        data = (path.parent / rel).read_bytes()
        assert data[:8] == PNG_MAGIC and data[12:16] == b"IHDR", rel
        width, height = struct.unpack(">II", data[16:24])
        assert width > 100 and height > 100, rel


def test_reads_configured_dataset_single_task(tmp_path: Path) -> None:
    config = make_config(tasks={"income": {"type": "binary", "column": "income"}},
                         data={"dataset": "adult", "features": {"numeric": ["age"]}})
    text = write_eda_report(config, tmp_path / "out").read_text(encoding="utf-8")
    assert "- source: dataset 'adult'" in text and "- rows: 48,842" in text
    assert table_row(text, ">50K")[1] == "11,687"
    assert "## Categorical features" not in text and "## Correlations" not in text  # none configured / one task
    assert sorted(p.name for p in (tmp_path / "out" / "plots").iterdir()) == ["numeric_features.png",
                                                                             "task_income.png"]


@pytest.mark.parametrize("overrides, column, key", [
    ({"data": {"dataset": "adult", "features": {"numeric": ["agee"]}}}, "agee", "data.features.numeric"),
    ({"tasks": {"inc": {"type": "binary", "column": "incom"}}}, "incom", "tasks.inc.column"),
])
def test_missing_column_raises(adult: pd.DataFrame, tmp_path: Path, overrides: dict, column: str, key: str) -> None:
    with pytest.raises(MtlError, match=f"column '{column}' not found") as info:
        write_eda_report(make_config(**overrides), tmp_path, frame=adult, source="adult slice")
    assert info.value.where == key
    assert not (tmp_path / "eda.md").exists()


def test_text_and_tagging_sections(tmp_path: Path) -> None:
    from conftest import text_config

    frame = read_table(dataset="atis")[0].head(200)
    config = config_from_dict(text_config("unused.jsonl"))
    report = write_eda_report(config, tmp_path, frame=frame, source="atis slice").read_text()
    assert "### slots (tagging, column `slots`)" in report and "| O | " in report
    assert "## Text feature `text`" in report and "`text (word pieces)` | 200 |" in report
    assert "the unit of `data.max_length` (32)" in report
    assert (tmp_path / "plots" / "task_slots.png").is_file() and (tmp_path / "plots" / "text_lengths.png").is_file()


def test_text_lengths_are_the_reference_tokenizers_word_pieces(tmp_path: Path) -> None:
    """EDA counts what ``data.max_length`` counts: word pieces of the backbone's tokenizer, [CLS] and [SEP] included,
    as Hugging Face's tokenizer (the one the weights were trained with) counts them on real reviews."""
    from tokenizers import Tokenizer

    from mtl.model import builtin_minilm_dir

    frame = read_table(dataset="womens_clothing")[0].dropna(subset=["review_text"]).head(300)
    reference = Tokenizer.from_file(str(builtin_minilm_dir() / "tokenizer.json"))
    reference.no_truncation()
    reference.no_padding()
    expected = np.array([len(e.ids) for e in reference.encode_batch(frame["review_text"].tolist())])
    config = config_from_dict({
        "data": {"dataset": "womens_clothing", "features": {"text": "review_text"}, "max_length": 64},
        "tasks": {"recommended": {"type": "binary", "column": "recommended_ind"}},
        "model": {"backbone": {"preset": "all-MiniLM-L6-v2"}}})
    report = write_eda_report(config, tmp_path, frame=frame, source="reviews slice").read_text()
    cut = int((expected > 64).sum())
    assert 0 < cut < len(frame)
    assert f"- texts longer than 64 word pieces: {cut:,} of 300" in report
    row = re.search(r"\| `review_text \(word pieces\)` \| 300 \| ([\d.,]+) \|", report)
    assert row and float(row.group(1).replace(",", "")) == pytest.approx(expected.mean(), abs=0.01)
