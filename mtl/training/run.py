"""A training run: config -> data -> model -> fit -> evaluation, in a run directory.

The run directory holds ``config.yaml`` (resolved), ``history.csv``, ``checkpoints/``, ``tensorboard/``,
``plots/``, ``model.keras`` and, last, ``metrics.json``: a run that fails leaves no ``metrics.json``.
Bad input is found before the run directory is created.
"""

from __future__ import annotations

import difflib
import json
import logging
import math
import os
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import keras
import pandas as pd

from mtl.config import Config, dump_config, load_config
from mtl.data import PreparedData, load_data
from mtl.errors import MtlError
from mtl.evaluation import evaluate
from mtl.evaluation import plots as run_plots
from mtl.model import MultiTaskModel, build_model
from mtl.tasks import Task
from mtl.training.batches import to_dataset
from mtl.training.callbacks import (
    DivergenceGuard,
    EpochCheckpoint,
    LossWeightScheduler,
    TrainingDiverged,
    WeightingEpochHooks,
    write_text_atomic,
)
from mtl.weighting import LossWeightSchedule

log = logging.getLogger("mtl")

_LOWER_IS_BETTER = ("loss", "rmse", "mae", "mse")


@dataclass
class RunResult:
    """What a finished run gives back; the same is on disk in ``run_dir``."""

    run_dir: Path
    metrics: dict
    history: pd.DataFrame
    model: MultiTaskModel
    tasks: dict[str, Task]
    data: PreparedData


def train(config: Config, run_dir: str | Path | None = None) -> RunResult:
    """Train ``config`` in a new run directory (``run_dir``, else ``output.run_dir``, else ``runs/<time>``)."""
    data, tasks = _prepare(config)
    path = Path(run_dir or config.output.run_dir or f"runs/run-{time.strftime('%Y%m%d-%H%M%S')}")
    if path.exists() and any(path.iterdir()):
        raise MtlError(f"run directory {path} already exists and is not empty; choose another, "
                       f"or continue it with --resume {path}", where="output.run_dir")
    path.mkdir(parents=True, exist_ok=True)
    write_text_atomic(path / "config.yaml", dump_config(config))
    try:
        return _run(config, data, tasks, path, resume=False)
    except MtlError as exc:
        if not isinstance(exc, TrainingDiverged) and EpochCheckpoint(path / "checkpoints").read_state() is None:
            # bad input found while building the model (a backbone that will not load): leave nothing behind
            shutil.rmtree(path, ignore_errors=True)
        raise


def resume(run_dir: str | Path) -> RunResult:
    """Continue an interrupted run from its last completed epoch, with its optimizer state."""
    path = Path(run_dir)
    checkpoint = EpochCheckpoint(path / "checkpoints")
    if not (path / "config.yaml").is_file() or checkpoint.read_state() is None:
        raise MtlError(f"{path} is not a run directory with a checkpoint (config.yaml and "
                       "checkpoints/state.json)", where="--resume")
    if (path / "metrics.json").is_file():
        raise MtlError(f"{path} holds a finished run (metrics.json exists); nothing to resume", where="--resume")
    config = load_config(path / "config.yaml")
    data, tasks = _prepare(config)
    return _run(config, data, tasks, path, resume=True)


def _prepare(config: Config) -> tuple[PreparedData, dict[str, Task]]:
    data, tasks = load_data(config)
    _check_monitors(config, tasks, has_val=len(data.val) > 0)
    export = config.output.export
    if export is not None and export.version is not None:
        target = Path(export.base_path) / export.name / str(export.version)
        if target.exists():
            raise MtlError(f"{target} already exists; leave version out to export the next one",
                           where="output.export.version")
    return data, tasks


def log_keys(tasks: dict[str, Task], validation: bool = True) -> list[str]:
    """The metric names a run logs each epoch (what ``monitor`` keys may name)."""
    keys = ["loss"] + [f"{n}_loss" for n in tasks] + [f"{n}_{m}" for n, t in tasks.items() for m in t.logged_metrics()]
    return keys + ([f"val_{k}" for k in keys] if validation else [])


def _check_monitors(config: Config, tasks: dict[str, Task], has_val: bool) -> None:
    valid = log_keys(tasks, has_val)
    monitors = []
    if config.training.early_stopping is not None:
        monitors.append(("training.early_stopping.monitor", config.training.early_stopping.monitor))
    if config.training.lr_schedule.type == "reduce_on_plateau":
        monitors.append(("training.lr_schedule.monitor", config.training.lr_schedule.monitor))
    for key, monitor in monitors:
        if monitor not in valid:
            hint = difflib.get_close_matches(monitor, valid, n=1)
            tail = f" (did you mean {hint[0]!r}?)" if hint else f"; valid: {', '.join(valid)}"
            raise MtlError(f"{monitor!r} is not a logged metric{tail}", where=key)


def _mode(monitor: str, mode: str = "auto") -> str:
    if mode != "auto":
        return mode
    return "min" if monitor.endswith(_LOWER_IS_BETTER) else "max"


def _optimizer(config: Config, steps_per_epoch: int) -> keras.optimizers.Optimizer:
    t = config.training
    learning_rate: Any = t.learning_rate
    if t.lr_schedule.type == "cosine":
        warmup = int(round(t.lr_schedule.warmup_epochs * steps_per_epoch))
        total = t.epochs * steps_per_epoch
        learning_rate = keras.optimizers.schedules.CosineDecay(
            initial_learning_rate=0.0 if warmup else t.learning_rate,
            decay_steps=max(total - warmup, 1),
            alpha=t.lr_schedule.alpha,
            warmup_target=t.learning_rate if warmup else None,
            warmup_steps=warmup,
        )
    kinds = {"adam": keras.optimizers.Adam, "adamw": keras.optimizers.AdamW, "sgd": keras.optimizers.SGD,
             "rmsprop": keras.optimizers.RMSprop}
    kwargs: dict[str, Any] = {"learning_rate": learning_rate}
    if t.weight_decay is not None:
        kwargs["weight_decay"] = t.weight_decay
    if t.optimizer == "sgd":
        kwargs["momentum"] = 0.9
    return kinds[t.optimizer](**kwargs)


def _callbacks(config: Config, tasks: dict[str, Task], path: Path, has_val: bool) -> list:
    t = config.training
    schedules = {name: LossWeightSchedule.from_config(cfg.weight, t.epochs) for name, cfg in config.tasks.items()}
    weighting = LossWeightScheduler(schedules) if t.weighting.name == "fixed" else WeightingEpochHooks()
    callbacks: list = [weighting, DivergenceGuard()]
    if t.early_stopping is not None:
        es = t.early_stopping
        callbacks.append(keras.callbacks.EarlyStopping(
            monitor=es.monitor, patience=es.patience, mode=_mode(es.monitor, es.mode), min_delta=es.min_delta,
            restore_best_weights=es.restore_best_weights))
    if t.lr_schedule.type == "reduce_on_plateau":
        lr = t.lr_schedule
        callbacks.append(keras.callbacks.ReduceLROnPlateau(
            monitor=lr.monitor, factor=lr.factor, patience=lr.patience, min_lr=lr.min_lr, mode=_mode(lr.monitor)))
    callbacks += [
        EpochCheckpoint(path / "checkpoints"),
        keras.callbacks.CSVLogger(str(path / "history.csv"), append=True),
        keras.callbacks.TensorBoard(log_dir=str(path / "tensorboard"), write_graph=False),
    ]
    return callbacks


def _run(config: Config, data: PreparedData, tasks: dict[str, Task], path: Path, resume: bool) -> RunResult:
    t = config.training
    keras.utils.set_random_seed(config.seed)
    policy = keras.config.dtype_policy()
    keras.config.set_dtype_policy(t.mixed_precision)
    try:
        model = build_model(config.model, tasks, data.features, weighting=t.weighting.model_dump())
        steps_per_epoch = math.ceil(len(data.train) / t.batch_size)
        model.compile(optimizer=_optimizer(config, steps_per_epoch), jit_compile=t.jit_compile,
                      steps_per_execution=min(t.steps_per_execution, steps_per_epoch))
        has_val = len(data.val) > 0
        callbacks = _callbacks(config, tasks, path, has_val)
        checkpoint = next(c for c in callbacks if isinstance(c, EpochCheckpoint))
        initial_epoch = 0
        if resume:
            state = checkpoint.read_state()
            model.optimizer.build(model.trainable_variables)
            model.load_weights(checkpoint.weights_path)
            initial_epoch = int(state["epochs_completed"])
            _truncate_history(path / "history.csv", initial_epoch)
            log.info("resuming %s after epoch %d of %d", path, initial_epoch, t.epochs)
        if initial_epoch < t.epochs:
            model.fit(
                to_dataset(data.train, t.batch_size, shuffle=True, seed=config.seed,
                           bucket_by=data.words_column if t.bucket_by_length else None),
                validation_data=to_dataset(data.val, t.batch_size) if has_val else None,
                epochs=t.epochs, initial_epoch=initial_epoch, callbacks=callbacks, verbose=t.verbose,
                shuffle=False)  # the dataset reshuffles itself each epoch
        tmp_model = path / ".model.tmp.keras"
        model.save(tmp_model)
        os.replace(tmp_model, path / "model.keras")

        history = pd.read_csv(path / "history.csv")
        metrics, predictions = evaluate(model, tasks, {"val": data.val, "test": data.test},
                                        batch_size=t.batch_size if data.words_column else 1024)
        test_predictions = predictions["test"]
        plot_dir = path / "plots"
        plot_dir.mkdir(exist_ok=True)
        run_plots.learning_curves(history, tasks, plot_dir)
        run_plots.loss_weights(history, tasks, plot_dir)
        run_plots.task_plots(tasks, data.test, test_predictions, plot_dir)
        if config.output.export is not None:  # before metrics.json: a run whose export failed is not finished
            from mtl.export import export_model

            exported = export_model(model, config.output.export.base_path, config.output.export.name,
                                    config.output.export.version, source=str(path.resolve()))
            log.info("exported %s", exported)
        write_text_atomic(path / "metrics.json", json.dumps(metrics, indent=2, default=float))
    except (Exception, KeyboardInterrupt) as exc:
        log.error("run failed (%s); no metrics.json written; checkpoints kept in %s", type(exc).__name__,
                  path / "checkpoints")
        raise
    finally:
        keras.config.set_dtype_policy(policy)
    log.info("run finished: %s", path)
    return RunResult(path, metrics, history, model, tasks, data)


def _truncate_history(path: Path, epochs_completed: int) -> None:
    """Drop history rows of epochs that are re-run after a resume (killed after logging, before saving)."""
    if path.is_file():
        history = pd.read_csv(path)
        history[history["epoch"] < epochs_completed].to_csv(path, index=False)
