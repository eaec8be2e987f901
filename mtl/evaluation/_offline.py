"""``mtl evaluate``: score a trained run or an export on a labelled file (next month's data, a held-out set).

The file is read by the training readers (``mtl.data.read_table``), every feature column is parsed by its kind's
parser and every label encoded by its task (``mtl.data.prepare_labelled``): the raw-value rule of training. Task
columns come from the run's tasks (``model.keras``) or from the export's metadata (``task_configs``). Scores are
those of a run's ``metrics.json`` (``evaluate_split``), so a run evaluated on its own test rows reproduces its
test metrics.
"""

from __future__ import annotations

import json
import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from mtl.errors import MtlError
from mtl.evaluation._plots import task_plots
from mtl.evaluation._report import evaluate_split, predict

log = logging.getLogger("mtl")

__all__ = ["OfflineEvaluation", "evaluate_file"]


@dataclass
class OfflineEvaluation:
    """What ``evaluate_file`` wrote: ``out_dir/metrics.json`` (``metrics``: ``{task: {metric: value, "n": rows}}``)
    and ``out_dir/plots/``."""

    out_dir: Path
    metrics: dict
    plots: list[Path]


def _load_run(path: Path) -> tuple[Any, dict, dict, int]:
    """``(predict function, features, tasks, batch size)`` of a run directory's ``model.keras``."""
    import keras

    import mtl.model  # noqa: F401  registers MultiTaskModel for loading
    from mtl.config import load_config

    model = keras.saving.load_model(path / "model.keras", compile=False)
    batch_size = 1024
    if (path / "config.yaml").is_file():
        config = load_config(path / "config.yaml")
        if any(f.provides_words for f in model.features.values()):
            batch_size = config.training.batch_size  # as the run predicted its text splits
    return (lambda split, frame: predict(model, split, batch_size)), model.features, model.tasks, batch_size


def _load_export(path: Path) -> tuple[Any, dict, dict, int]:
    """``(predict function, features, tasks, batch size)`` of an export version folder or base."""
    from mtl.serving import load
    from mtl.tasks import task_from_config

    served = load(path)
    configs = served.metadata.get("task_configs")
    if not configs:
        raise MtlError(f"{served.path} does not record its tasks' label columns (exported by an older mtl); "
                       "evaluate its run directory, or export the run again", where="RUN_OR_EXPORT")
    tasks = {name: task_from_config(config) for name, config in configs.items()}
    batch_size = 1024

    def run(split: Any, frame: Any) -> dict[str, np.ndarray]:
        parts: dict[str, list] = {name: [] for name in tasks}
        for start in range(0, len(frame), batch_size):
            chunk = frame.iloc[start:start + batch_size]
            outputs = served.predict({c: chunk[c].to_numpy(dtype=object) for c in served.features})
            for name in tasks:
                parts[name].append(outputs[name])
        return {name: np.concatenate(values) if values else np.zeros((0, 1), "float32")
                for name, values in parts.items()}

    return run, served.features, tasks, batch_size


def evaluate_file(model_path: str | Path, data_path: str | Path, out_dir: str | Path) -> OfflineEvaluation:
    """Score ``model_path`` (a run directory or an export) on the labelled file ``data_path``; write
    ``out_dir/metrics.json`` and the tasks' plots in ``out_dir/plots``."""
    from mtl.data import prepare_labelled, read_table
    from mtl.serving import versions
    from mtl.tasks import decode_hierarchy

    path = Path(model_path)
    if (path / "model.keras").is_file():
        run, features, tasks, _ = _load_run(path)
    elif (path / "saved_model.pb").is_file() or versions(path):
        run, features, tasks, _ = _load_export(path)
    else:
        raise MtlError(f"{path} is neither a finished run directory (model.keras) nor an export (a version folder "
                       "with saved_model.pb, or a base holding version folders)", where="RUN_OR_EXPORT")
    try:
        frame, source = read_table(str(data_path))
    except MtlError as exc:
        raise MtlError(exc.message, where=f"--data {data_path}") from None
    frame.columns = [str(c) for c in frame.columns]
    split = prepare_labelled(frame, features, tasks, source=f"--data {data_path}")
    if len(split) == 0:
        raise MtlError("no row to score", where=f"--data {data_path}")
    predictions = run(split, frame.loc[split.rows])
    metrics = evaluate_split(tasks, split, predictions)
    out = Path(out_dir)
    plot_dir = out / "plots"
    plot_dir.mkdir(parents=True, exist_ok=True)
    plots = task_plots(tasks, split, decode_hierarchy(tasks, predictions), plot_dir)
    record = {"model": str(path.resolve()), "data": str(Path(data_path).resolve()), "rows": len(split),
              "metrics": metrics}
    tmp = out / ".metrics.json.tmp"
    tmp.write_text(json.dumps(record, indent=2, default=float), encoding="utf-8")
    os.replace(tmp, out / "metrics.json")
    return OfflineEvaluation(out, metrics, plots)
