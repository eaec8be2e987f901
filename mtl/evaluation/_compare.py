"""``mtl compare``: the test metrics of several runs side by side, their config differences, and the multi-task
delta over a baseline.

The multi-task delta is the one LibMTL reports (Lin and Zhang, "LibMTL: A Python Library for Multi-Task Learning",
JMLR 24(209), 2023; ``LibMTL.utils.count_improvement``), introduced by Maninis et al., "Attentive Single-Tasking of
Multiple Tasks", CVPR 2019:

    delta_m = 100 % * 1/T * sum_t 1/N_t * sum_i (-1)^l_ti * (M_t,i - B_t,i) / B_t,i

over the T tasks and each task's N_t metrics, where ``B`` is the baseline's value and ``l_ti`` is 1 for a metric
where lower is better (``Task.lower_is_better``), so a positive delta is an improvement. Tasks and metrics the
baseline lacks, or where its value is 0 or not finite, are left out.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd
import yaml

from mtl.errors import MtlError

__all__ = ["RunSummary", "compare_runs", "format_comparison", "flatten_config", "multitask_delta", "read_run"]

_NOT_METRICS = ("n",)


@dataclass
class RunSummary:
    """A finished run as ``mtl compare`` reads it: its test metrics, flattened config and task types."""

    name: str
    path: Path
    test: dict[str, dict[str, float]]
    config: dict[str, Any]
    task_types: dict[str, str]


def flatten_config(node: Any, prefix: str = "") -> dict[str, Any]:
    """``{"training.learning_rate": 0.001, ...}``: a nested config as dotted keys; lists stay whole values."""
    if isinstance(node, dict):
        flat: dict[str, Any] = {}
        for key, value in node.items():
            flat.update(flatten_config(value, f"{prefix}{key}."))
        return flat if flat or not prefix else {prefix[:-1]: {}}
    return {prefix[:-1]: node}


def read_run(path: str | Path) -> RunSummary:
    """A run directory's ``metrics.json`` (test split) and ``config.yaml``."""
    path = Path(path)
    metrics_file, config_file = path / "metrics.json", path / "config.yaml"
    if not metrics_file.is_file() or not config_file.is_file():
        raise MtlError(f"{path} is not a finished run directory (metrics.json and config.yaml)", where="mtl compare")
    try:
        metrics = json.loads(metrics_file.read_text(encoding="utf-8"))
        config = yaml.safe_load(config_file.read_text(encoding="utf-8"))
        types = {name: task["type"] for name, task in config["tasks"].items()}
        test = metrics["test"]
    except (ValueError, KeyError, TypeError, yaml.YAMLError) as exc:
        raise MtlError(f"{path}: cannot read its metrics.json or config.yaml ({type(exc).__name__})",
                       where="mtl compare") from None
    return RunSummary(path.name, path, test, flatten_config(config), types)


def _lower_is_better(task_type: str, metric: str) -> bool:
    from mtl.tasks import TASK_TYPES

    cls = TASK_TYPES.get(task_type)
    return cls is not None and cls.lower_is_better(metric)


def multitask_delta(run: RunSummary, baseline: RunSummary) -> float | None:
    """LibMTL's delta_m of ``run`` over ``baseline`` in percent (see the module docstring); None when no task and
    metric are shared."""
    per_task = []
    for task, scores in run.test.items():
        base = baseline.test.get(task, {})
        terms = []
        for metric, value in scores.items():
            reference = base.get(metric)
            if metric in _NOT_METRICS or not isinstance(value, int | float) or not isinstance(reference, int | float):
                continue
            if not (math.isfinite(value) and math.isfinite(reference)) or reference == 0:
                continue
            sign = -1.0 if _lower_is_better(run.task_types.get(task, ""), metric) else 1.0
            terms.append(sign * (value - reference) / reference)
        if terms:
            per_task.append(sum(terms) / len(terms))
    return 100.0 * sum(per_task) / len(per_task) if per_task else None


def _merged_baseline(baselines: list[RunSummary]) -> RunSummary:
    """Several baselines (e.g. one single-task run per task) as one: each task's metrics from the first baseline
    that has the task."""
    test: dict[str, dict] = {}
    types: dict[str, str] = {}
    for run in baselines:
        for task, scores in run.test.items():
            if task not in test:
                test[task], types[task] = scores, run.task_types.get(task, "")
    return RunSummary(" + ".join(b.name for b in baselines), baselines[0].path, test, {}, types)


def _unique_names(runs: list[RunSummary]) -> list[str]:
    names = [r.name for r in runs]
    return [str(r.path) if names.count(r.name) > 1 else r.name for r in runs]


@dataclass
class Comparison:
    """``metrics``: rows ``task.metric`` (and ``delta_m (%)``), a column per run; ``config``: the config keys whose
    values differ between the runs, a column per run."""

    metrics: pd.DataFrame
    config: pd.DataFrame
    baseline: str | None


def compare_runs(run_dirs: list[str | Path], baseline_dirs: list[str | Path] | None = None) -> Comparison:
    """Compare finished runs (and the baselines, shown first) on their test metrics and configs."""
    baselines = [read_run(p) for p in baseline_dirs or []]
    runs = [read_run(p) for p in run_dirs]
    if not runs:
        raise MtlError("name at least one run directory", where="mtl compare")
    everyone = baselines + [r for r in runs if r.path.resolve() not in {b.path.resolve() for b in baselines}]
    names = _unique_names(everyone)
    rows: dict[str, dict[str, Any]] = {}
    for name, run in zip(names, everyone, strict=True):
        for task, scores in run.test.items():
            for metric, value in scores.items():
                rows.setdefault(f"{task}.{metric}", {})[name] = value
    metrics = pd.DataFrame.from_dict(rows, orient="index", dtype=object).reindex(columns=names)
    baseline = None
    if baselines:
        merged = _merged_baseline(baselines)
        baseline = merged.name
        delta = {name: multitask_delta(run, merged) for name, run in zip(names, everyone, strict=True)}
        metrics.loc["delta_m (%)"] = pd.Series(delta).reindex(names)
    keys = sorted({k for run in everyone for k in run.config})
    differing = {}
    for key in keys:
        values = [run.config.get(key, "—") for run in everyone]
        texts = [json.dumps(v, sort_keys=True, default=str) if not isinstance(v, str) else v for v in values]
        if len(set(texts)) > 1 and not key.startswith("output."):
            differing[key] = dict(zip(names, texts, strict=True))
    config = pd.DataFrame.from_dict(differing, orient="index").reindex(columns=names) if differing else \
        pd.DataFrame(columns=names)
    return Comparison(metrics, config, baseline)


def _shown(value: Any) -> str:
    if isinstance(value, float):
        return "" if math.isnan(value) else f"{value:.4f}"
    if isinstance(value, int | float):
        return str(value)
    return "" if value is None else str(value)


def _markdown(frame: pd.DataFrame, first: str) -> str:
    header = [first, *map(str, frame.columns)]
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join(["---"] + ["---:"] * len(frame.columns)) + "|"]
    for index, row in frame.iterrows():
        cells = [str(index), *(_shown(v).replace("|", "\\|") for v in row)]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def format_comparison(comparison: Comparison, fmt: str = "table") -> str:
    """The comparison as ``table`` (terminal text), ``markdown`` or ``csv`` (one table: metric rows, then the
    differing config keys as ``config.<key>`` rows)."""
    metrics, config = comparison.metrics, comparison.config
    if fmt == "csv":
        both = pd.concat([metrics.astype(object), config.rename(index=lambda k: f"config.{k}")])
        return both.to_csv(index_label="row")
    note = f"delta_m: LibMTL's multi-task delta over {comparison.baseline} (percent; positive is better)" \
        if comparison.baseline else ""
    if fmt == "markdown":
        parts = ["### Test metrics", "", _markdown(metrics, "metric")]
        if note:
            parts += ["", note]
        if len(config):
            parts += ["", "### Config differences", "", _markdown(config, "key")]
        return "\n".join(parts) + "\n"
    if fmt != "table":
        raise MtlError(f"unknown format {fmt!r}; use table, markdown or csv", where="--format")
    shown = metrics.map(_shown)
    parts = ["test metrics", shown.to_string()]
    if note:
        parts.append(note)
    if len(config):
        parts += ["", "config differences", config.to_string()]
    return "\n".join(parts) + "\n"
