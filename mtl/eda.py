"""``mtl eda``: an exploratory Markdown report (``eda.md`` plus ``plots/*.png``) on the configured data.

Plain pandas and matplotlib (no TensorFlow), so it stays fast. Figures are drawn on ``Figure`` objects
with the Agg canvas, never through pyplot, so no GUI backend is touched and nothing is left open.
"""

from __future__ import annotations

import math
import os
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from mtl.data.labels import label_text, missing_mask
from mtl.data.prepare import check_columns
from mtl.data.text import split_words, tag_list

__all__ = ["write_eda_report"]

_MAX_CLASSES = 30  # classes listed in a table / drawn in a bar plot; the rest are summed up


def write_eda_report(config: Any, out_dir: str | Path, frame: pd.DataFrame | None = None, source: str = "") -> Path:
    """Write ``out_dir/eda.md`` and ``out_dir/plots/*.png``; return the path of ``eda.md``.

    ``frame`` defaults to the table the config names (``data.path`` or ``data.dataset``).
    Raises ``MtlError`` naming the first configured column the table lacks.
    """
    if frame is None:
        from mtl.data import read_table

        frame, source = read_table(path=config.data.path, dataset=config.data.dataset)
    source = source or "data frame"
    check_columns(frame, config, source)
    out_dir = Path(out_dir)
    plots = out_dir / "plots"
    plots.mkdir(parents=True, exist_ok=True)

    n = len(frame)
    unlabelled = np.logical_and.reduce([missing_mask(frame[t.column]) for t in config.tasks.values()])
    lines = [
        "# Exploratory data report", "",
        f"- source: {_cell(source)}", f"- rows: {n:,}", f"- columns: {frame.shape[1]:,}",
        f"- tasks: {len(config.tasks)}; rows with no label for any task: {int(unlabelled.sum()):,}", "",
        "## Tasks", "",
    ]
    targets: dict[str, pd.Series] = {}
    for name, task in config.tasks.items():
        lines += _task_section(name, task, frame[task.column], plots)
        targets[name] = _encode_target(task, frame[task.column])
    lines += _numeric_section(frame, list(config.data.features.numeric), plots)
    lines += _categorical_section(frame, list(config.data.features.categorical))
    if config.data.features.text is not None:
        lines += _text_section(frame[config.data.features.text], config.data.features.text, plots)
    lines += _correlation_section(targets, plots)

    report = out_dir / "eda.md"
    tmp = report.with_name(".eda.md.tmp")
    tmp.write_text("\n".join(lines) + "\n", encoding="utf-8")
    os.replace(tmp, report)
    return report


# ----------------------------------------------------------------------------- sections
def _task_section(name: str, task: Any, values: pd.Series, plots: Path) -> list[str]:
    """Label counts, missing-label rate and class balance or summary statistics, with a plot."""
    missing = missing_mask(values)
    n, n_missing = len(values), int(missing.sum())
    lines = [
        f"### {name} ({task.type}, column `{task.column}`)", "",
        f"- labelled rows: {n - n_missing:,}",
        f"- missing labels: {n_missing:,} of {n:,} ({_pct(n_missing, n)})",
    ]
    labelled = values[~missing]
    plot = plots / f"task_{name}.png"
    if task.type in ("binary", "multiclass"):
        counts = labelled.map(label_text).value_counts()
        lines += [f"- classes: {len(counts)}", "", "| class | count | % |", "|---|---:|---:|"]
        lines += [f"| {_cell(c)} | {k:,} | {_pct(k, len(labelled))} |" for c, k in counts[:_MAX_CLASSES].items()]
        if len(counts) > _MAX_CLASSES:
            rest = int(counts[_MAX_CLASSES:].sum())
            lines.append(f"| ({len(counts) - _MAX_CLASSES} more classes) | {rest:,} | {_pct(rest, len(labelled))} |")
        if task.type == "binary" and len(counts) != 2:
            lines += ["", f"**Note:** a binary task should have 2 classes; found {len(counts)}."]
        _bar_plot(counts[:_MAX_CLASSES], f"{name}: class balance", plot)
    elif task.type == "tagging":
        tags = labelled.map(tag_list).dropna()
        counts = tags.explode().value_counts()
        lines += [f"- tags: {len(counts)} over {int(counts.sum()):,} words", "", "| tag | count | % |",
                  "|---|---:|---:|"]
        lines += [f"| {_cell(c)} | {k:,} | {_pct(k, int(counts.sum()))} |" for c, k in counts[:_MAX_CLASSES].items()]
        if len(counts) > _MAX_CLASSES:
            lines.append(f"| ({len(counts) - _MAX_CLASSES} more tags) | {int(counts[_MAX_CLASSES:].sum()):,} | |")
        _bar_plot(counts[:_MAX_CLASSES], f"{name}: tags", plot)
    else:
        numbers = pd.to_numeric(labelled, errors="coerce")
        bad = int(numbers.isna().sum())
        if bad:
            lines.append(f"- **non-numeric labels:** {bad:,} (e.g. {_cell(repr(labelled[numbers.isna()].iloc[0]))})")
        lines += ["", *_stats_table({name: numbers.dropna()})]
        _histograms({name: numbers.dropna()}, plot)
    return [*lines, "", f"![{name}](plots/{plot.name})", ""]


def _numeric_section(frame: pd.DataFrame, columns: list[str], plots: Path) -> list[str]:
    """Summary statistics of each numeric feature and one grid of histograms."""
    if not columns:
        return []
    parsed, missing, bad = {}, {}, {}
    for c in columns:
        absent = missing_mask(frame[c])
        numbers = pd.to_numeric(frame[c].where(~absent), errors="coerce")
        parsed[c], missing[c] = numbers.dropna(), int(absent.sum())
        bad[c] = int(numbers.isna().sum()) - missing[c]
    lines = ["## Numeric features", "", *_stats_table(parsed, missing, bad)]
    offenders = [f"`{c}` ({k:,})" for c, k in bad.items() if k]
    if offenders:
        lines += ["", "**Non-numeric values** (not counted in the statistics): " + ", ".join(offenders)]
    _histograms(parsed, plots / "numeric_features.png")
    return [*lines, "", "![numeric features](plots/numeric_features.png)", ""]


def _categorical_section(frame: pd.DataFrame, columns: list[str]) -> list[str]:
    """Cardinality, missing count and the 3 most frequent values of each categorical feature."""
    if not columns:
        return []
    lines = ["## Categorical features", "", "| feature | cardinality | missing | top values |", "|---|---:|---:|---|"]
    for c in columns:
        absent = missing_mask(frame[c])
        counts = frame[c][~absent].map(label_text).value_counts()
        top = ", ".join(f"{_cell(v)} ({k:,})" for v, k in counts[:3].items())
        lines.append(f"| `{c}` | {len(counts):,} | {int(absent.sum()):,} | {top} |")
    return [*lines, ""]


def _text_section(values: pd.Series, column: str, plots: Path) -> list[str]:
    """How many rows have text, and how long the texts are in white-space words."""
    absent = missing_mask(values)
    words = values[~absent].map(lambda t: len(split_words(str(t))))
    lines = [f"## Text feature `{column}`", "", f"- rows without text: {int(absent.sum()):,} of {len(values):,} "
             "(dropped before training)", "", *_stats_table({f"{column} (words)": words})]
    _histograms({f"{column} (words)": words}, plots / "text_lengths.png")
    return [*lines, "", "![text lengths](plots/text_lengths.png)", ""]


def _correlation_section(targets: dict[str, pd.Series], plots: Path) -> list[str]:
    """Pairwise Pearson correlation of the numerically encoded targets, on rows labelled for both."""
    if len(targets) < 2:
        return []
    names = list(targets)
    diagonal = [1.0 if targets[t].nunique() > 1 else math.nan for t in names]
    matrix = pd.DataFrame(np.diag(diagonal), index=names, columns=names)
    lines = [
        "## Correlations between targets", "",
        ("Pearson correlation of the encoded labels, on rows labelled for both tasks. Binary labels are 1 for the "
        "positive class (else the second class in sorted order), multiclass labels are class codes in sorted "
        "order (so their correlations are only indicative), regression labels are the values."), "",
        "| task | task | rows labelled in both | Pearson r |", "|---|---|---:|---:|",
    ]
    for i, a in enumerate(names):
        for b in names[i + 1:]:
            both = pd.concat([targets[a], targets[b]], axis=1).dropna()
            ok = len(both) >= 3 and both.iloc[:, 0].nunique() > 1 and both.iloc[:, 1].nunique() > 1
            r = float(np.corrcoef(both.iloc[:, 0], both.iloc[:, 1])[0, 1]) if ok else math.nan
            matrix.loc[a, b] = matrix.loc[b, a] = r
            lines.append(f"| {a} | {b} | {len(both):,} | {_num(r, '+.3f')} |")
    _heatmap(matrix, plots / "target_correlations.png")
    return [*lines, "", "![target correlations](plots/target_correlations.png)", ""]


# ----------------------------------------------------------------------------- helpers
def _encode_target(task: Any, values: pd.Series) -> pd.Series:
    """A task's labels as floats (NaN where missing): class codes, or 1/0 for a binary positive class."""
    missing = missing_mask(values)
    out = pd.Series(np.nan, index=values.index)
    if task.type == "tagging":
        return out  # one label per word, not per row: no row-level correlation
    if task.type == "regression":
        out[~missing] = pd.to_numeric(values[~missing], errors="coerce")
        return out
    text = values[~missing].map(label_text)
    positive = getattr(task, "positive", None)
    if task.type == "binary" and positive is not None:
        out[~missing] = (text == label_text(positive)).astype(float)
    else:
        out[~missing] = pd.Categorical(text, categories=sorted(text.unique())).codes.astype(float)
    return out


def _stats_table(data: dict[str, pd.Series], missing: dict[str, int] | None = None,
                 bad: dict[str, int] | None = None) -> list[str]:
    """A Markdown table of count/mean/std/min/quartiles/max (plus missing and non-numeric counts if given)."""
    extra = ["missing", "non-numeric"] if missing is not None else []
    head = ["", "count", *extra, "mean", "std", "min", "25%", "50%", "75%", "max"]
    lines = ["| " + " | ".join(head) + " |", "|---" + "|---:" * (len(head) - 1) + "|"]
    for name, x in data.items():
        q = x.quantile([0.25, 0.5, 0.75]).tolist() if len(x) else [math.nan] * 3
        cells = [f"{len(x):,}"] + ([f"{missing[name]:,}", f"{bad[name]:,}"] if extra else [])
        stats = [x.mean(), x.std(), x.min(), *q, x.max()] if len(x) else [math.nan] * 7
        lines.append(f"| `{name}` | " + " | ".join(cells + [_num(v) for v in stats]) + " |")
    return lines


def _figure(width: float, height: float) -> Any:
    from matplotlib.figure import Figure

    return Figure(figsize=(width, height), layout="constrained")


def _save(fig: Any, path: Path) -> None:
    fig.savefig(path, format="png", dpi=100)
    fig.clear()


def _bar_plot(counts: pd.Series, title: str, path: Path) -> None:
    fig = _figure(7, 1.2 + 0.3 * max(len(counts), 2))
    ax = fig.subplots()
    ax.barh([str(c) for c in counts.index[::-1]], counts.to_numpy()[::-1], color="tab:blue")
    ax.set(title=title, xlabel="rows")
    _save(fig, path)


def _histograms(data: dict[str, pd.Series], path: Path) -> None:
    cols = min(3, len(data))
    rows = math.ceil(len(data) / cols)
    fig = _figure(4 * cols, 3 * rows)
    axes = np.atleast_1d(fig.subplots(rows, cols)).ravel()
    for ax, (name, x) in zip(axes, data.items(), strict=False):
        if len(x):
            ax.hist(x.to_numpy(dtype=float), bins=max(1, min(30, x.nunique())), color="tab:blue")
        else:
            ax.text(0.5, 0.5, "no numeric values", ha="center", va="center", transform=ax.transAxes)
        ax.set_title(name)
    for ax in axes[len(data):]:
        ax.set_axis_off()
    _save(fig, path)


def _heatmap(matrix: pd.DataFrame, path: Path) -> None:
    k = len(matrix)
    fig = _figure(2 + 1.1 * k, 1.5 + 1.0 * k)
    ax = fig.subplots()
    image = ax.imshow(matrix.to_numpy(dtype=float), vmin=-1, vmax=1, cmap="coolwarm")
    ax.set_xticks(range(k), matrix.columns, rotation=45, ha="right")
    ax.set_yticks(range(k), matrix.index)
    for (i, j), r in np.ndenumerate(matrix.to_numpy(dtype=float)):
        ax.text(j, i, _num(r, "+.2f"), ha="center", va="center", fontsize=9)
    ax.set_title("Pearson r between targets")
    fig.colorbar(image, ax=ax)
    _save(fig, path)


def _pct(part: int, whole: int) -> str:
    return f"{100 * part / whole:.2f}%" if whole else "n/a"


def _num(value: float, spec: str = "") -> str:
    """``spec`` if given; else 4 significant digits, with thousands separators from 10,000 up."""
    if value is None or not math.isfinite(float(value)):
        return "n/a"
    value = float(value)
    return format(value, spec or (",.0f" if 1e4 <= abs(value) < 1e15 else ".4g"))


def _cell(text: Any) -> str:
    return str(text).replace("|", "\\|").replace("\n", " ")
