"""``mtl eda``: an exploratory Markdown report (``eda.md`` plus ``plots/*.png``) on the configured data.

The sections come from the task types and feature kinds (their ``eda_section`` hooks); tables and figures from
``mtl.reporting`` (plain pandas and matplotlib, drawn on ``Figure`` objects with the Agg canvas, never through
pyplot, so no GUI backend is touched and nothing is left open).
"""

from __future__ import annotations

import math
import os
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from mtl.data._labels import missing_mask
from mtl.data._prepare import check_columns
from mtl.features import FEATURE_KINDS, configured_columns
from mtl.reporting import cell, figure, num, pct, save_figure
from mtl.tasks import TASK_TYPES

__all__ = ["EDA_SAMPLE_ROWS", "write_eda_report"]

EDA_SAMPLE_ROWS = 100_000  # with data.streaming, the report describes a sample of about this many rows


def write_eda_report(config: Any, out_dir: str | Path, frame: pd.DataFrame | None = None, source: str = "") -> Path:
    """Write ``out_dir/eda.md`` and ``out_dir/plots/*.png``; return the path of ``eda.md``.

    ``frame`` defaults to the table the config names (``data.path`` or ``data.dataset``; with ``data.streaming``, a
    stable sample of about ``EDA_SAMPLE_ROWS`` of its rows). Each task type and
    feature kind writes its own section (``eda_section`` hooks). Raises ``MtlError`` naming the first configured
    column the table lacks.
    """
    if frame is None and config.data.streaming:  # data larger than memory: a stable sample of its rows
        from mtl.data import sample_table

        frame, source = sample_table(config.data.path, EDA_SAMPLE_ROWS)
    elif frame is None:
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
        f"- source: {cell(source)}", f"- rows: {n:,}", f"- columns: {frame.shape[1]:,}",
        f"- tasks: {len(config.tasks)}; rows with no label for any task: {int(unlabelled.sum()):,}", "",
        "## Tasks", "",
    ]
    targets: dict[str, pd.Series] = {}
    for name, task in config.tasks.items():
        task_type = TASK_TYPES[task.type]
        values = frame[task.column]
        missing = missing_mask(values)
        plot = plots / f"task_{name}.png"
        lines += [f"### {name} ({task.type}, column `{task.column}`)", "",
                  f"- labelled rows: {n - int(missing.sum()):,}",
                  f"- missing labels: {int(missing.sum()):,} of {n:,} ({pct(int(missing.sum()), n)})",
                  *task_type.eda_section(name, task, values[~missing], plot), "", f"![{name}](plots/{plot.name})", ""]
        targets[name] = task_type.eda_target(task, values)
    by_kind: dict[str, list[str]] = {}
    for kind, column in configured_columns(config.data.features):
        by_kind.setdefault(kind, []).append(column)
    for kind, columns in by_kind.items():
        lines += FEATURE_KINDS[kind].eda_section(frame, columns, plots, config)
    lines += _correlation_section(targets, plots)

    report = out_dir / "eda.md"
    tmp = report.with_name(".eda.md.tmp")
    tmp.write_text("\n".join(lines) + "\n", encoding="utf-8")
    os.replace(tmp, report)
    return report


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
            lines.append(f"| {a} | {b} | {len(both):,} | {num(r, '+.3f')} |")
    _heatmap(matrix, plots / "target_correlations.png")
    return [*lines, "", "![target correlations](plots/target_correlations.png)", ""]


def _heatmap(matrix: pd.DataFrame, path: Path) -> None:
    k = len(matrix)
    fig = figure(2 + 1.1 * k, 1.5 + 1.0 * k)
    ax = fig.subplots()
    image = ax.imshow(matrix.to_numpy(dtype=float), vmin=-1, vmax=1, cmap="coolwarm")
    ax.set_xticks(range(k), matrix.columns, rotation=45, ha="right")
    ax.set_yticks(range(k), matrix.index)
    for (i, j), r in np.ndenumerate(matrix.to_numpy(dtype=float)):
        ax.text(j, i, num(r, "+.2f"), ha="center", va="center", fontsize=9)
    ax.set_title("Pearson r between targets")
    fig.colorbar(image, ax=ax)
    save_figure(fig, path)
