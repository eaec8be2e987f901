"""Markdown tables and PNG figures shared by the EDA report and the plug-ins' EDA sections (plain pandas and
matplotlib: figures are drawn on ``Figure`` objects with the Agg canvas, never through pyplot)."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

__all__ = ["MAX_CLASSES", "bar_plot", "cell", "counts_table", "figure", "histograms", "num", "pct", "save_figure",
           "stats_table"]

MAX_CLASSES = 30  # classes listed in a table / drawn in a bar plot; the rest are summed up


def stats_table(data: dict[str, pd.Series], missing: dict[str, int] | None = None,
                bad: dict[str, int] | None = None) -> list[str]:
    """A Markdown table of count/mean/std/min/quartiles/max (plus missing and non-numeric counts if given)."""
    extra = ["missing", "non-numeric"] if missing is not None else []
    head = ["", "count", *extra, "mean", "std", "min", "25%", "50%", "75%", "max"]
    lines = ["| " + " | ".join(head) + " |", "|---" + "|---:" * (len(head) - 1) + "|"]
    for name, x in data.items():
        q = x.quantile([0.25, 0.5, 0.75]).tolist() if len(x) else [math.nan] * 3
        cells = [f"{len(x):,}"] + ([f"{missing[name]:,}", f"{bad[name]:,}"] if extra else [])
        stats = [x.mean(), x.std(), x.min(), *q, x.max()] if len(x) else [math.nan] * 7
        lines.append(f"| `{name}` | " + " | ".join(cells + [num(v) for v in stats]) + " |")
    return lines


def counts_table(counts: pd.Series, noun: str) -> list[str]:
    """``| noun | count | % |`` rows of the most frequent values; the rest summed up in one row."""
    total = int(counts.sum())
    lines = [f"| {noun} | count | % |", "|---|---:|---:|"]
    lines += [f"| {cell(c)} | {k:,} | {pct(k, total)} |" for c, k in counts[:MAX_CLASSES].items()]
    if len(counts) > MAX_CLASSES:
        rest = int(counts[MAX_CLASSES:].sum())
        lines.append(f"| ({len(counts) - MAX_CLASSES} more) | {rest:,} | {pct(rest, total)} |")
    return lines


def figure(width: float, height: float) -> Any:
    from matplotlib.figure import Figure

    return Figure(figsize=(width, height), layout="constrained")


def save_figure(fig: Any, path: Path) -> Path:
    fig.savefig(path, format="png", dpi=100)
    fig.clear()
    return path


def bar_plot(counts: pd.Series, title: str, path: Path) -> None:
    fig = figure(7, 1.2 + 0.3 * max(len(counts), 2))
    ax = fig.subplots()
    ax.barh([str(c) for c in counts.index[::-1]], counts.to_numpy()[::-1], color="tab:blue")
    ax.set(title=title, xlabel="rows")
    save_figure(fig, path)


def histograms(data: dict[str, pd.Series], path: Path) -> None:
    cols = min(3, len(data))
    rows = math.ceil(len(data) / cols)
    fig = figure(4 * cols, 3 * rows)
    axes = np.atleast_1d(fig.subplots(rows, cols)).ravel()
    for ax, (name, x) in zip(axes, data.items(), strict=False):
        if len(x):
            ax.hist(x.to_numpy(dtype=float), bins=max(1, min(30, x.nunique())), color="tab:blue")
        else:
            ax.text(0.5, 0.5, "no numeric values", ha="center", va="center", transform=ax.transAxes)
        ax.set_title(name)
    for ax in axes[len(data):]:
        ax.set_axis_off()
    save_figure(fig, path)


def pct(part: int, whole: int) -> str:
    return f"{100 * part / whole:.2f}%" if whole else "n/a"


def num(value: float, spec: str = "") -> str:
    """``spec`` if given; else 4 significant digits, with thousands separators from 10,000 up."""
    if value is None or not math.isfinite(float(value)):
        return "n/a"
    value = float(value)
    return format(value, spec or (",.0f" if 1e4 <= abs(value) < 1e15 else ".4g"))


def cell(text: Any) -> str:
    return str(text).replace("|", "\\|").replace("\n", " ")
