"""What a run directory records for comparing runs: ``model_summary.txt`` (layers and parameter counts) and the
run's hyper-parameters with its final metrics in TensorBoard's HParams dashboard (``tensorboard/hparams``)."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

from mtl.evaluation._compare import flatten_config

__all__ = ["log_hparams", "parameter_counts", "write_model_summary"]


def parameter_counts(model: Any) -> dict[str, int]:
    """``{"total", "trainable", "non_trainable"}`` parameter counts of a built Keras model."""
    import numpy as np

    trainable = int(sum(np.prod(v.shape) for v in model.trainable_weights))
    non_trainable = int(sum(np.prod(v.shape) for v in model.non_trainable_weights))
    return {"total": trainable + non_trainable, "trainable": trainable, "non_trainable": non_trainable}


def write_model_summary(model: Any, path: Path) -> Path:
    """``path`` (``model_summary.txt``): the parameter counts, then Keras' layer-by-layer summary."""
    counts = parameter_counts(model)
    lines = [f"parameters: {counts['total']:,} ({counts['trainable']:,} trainable, "
             f"{counts['non_trainable']:,} non-trainable)", ""]
    model.summary(line_length=120, print_fn=lambda line, line_break=True: lines.append(line))
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def _hparam_value(value: Any) -> bool | int | float | str:
    if isinstance(value, bool | int | float | str):
        return value
    return str(value)


def log_hparams(config: dict, metrics: dict, log_dir: Path, parameters: int | None = None) -> None:
    """Write the run's flattened config as hyper-parameters and its final ``split/task/metric`` values as metrics
    for TensorBoard's HParams dashboard, in ``log_dir``."""
    import tensorflow as tf
    from tensorboard.plugins.hparams import api as hp

    hparams = {key: _hparam_value(value) for key, value in flatten_config(config).items()
               if not key.startswith("output.") and value is not None}
    values = {}
    for split in ("val", "test"):
        for task, scores in metrics.get(split, {}).items():
            for metric, value in scores.items():
                if metric != "n" and isinstance(value, int | float) and math.isfinite(value):
                    values[f"{split}/{task}/{metric}"] = float(value)
    if parameters is not None:
        values["parameters"] = float(parameters)
    writer = tf.summary.create_file_writer(str(log_dir))
    with writer.as_default():
        hp.hparams_config(hparams=[hp.HParam(key) for key in hparams],
                          metrics=[hp.Metric(tag) for tag in values])
        hp.hparams(hparams, trial_id=log_dir.parent.parent.name)
        for tag, value in values.items():
            tf.summary.scalar(tag, value, step=0)
    writer.close()
