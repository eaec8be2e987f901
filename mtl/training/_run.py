"""A training run: config -> data -> model -> fit -> evaluation, in a run directory.

The run directory holds ``config.yaml`` (resolved), ``history.csv``, ``checkpoints/`` (verified, see
``mtl.training._checkpoints``), ``tensorboard/``, ``plots/``, ``model.keras`` and, last, ``metrics.json``: a run that
fails leaves no ``metrics.json``. One process at a time writes a run directory (an OS lock, ``.lock``). A run that
fails before its first checkpoint leaves no directory; one that fails later can be continued with ``--resume``.
"""

from __future__ import annotations

import difflib
import hashlib
import json
import logging
import math
import os
import shutil
import tempfile
import time
from collections.abc import Iterator
from contextlib import ExitStack, nullcontext
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

import keras
import numpy as np
import pandas as pd
import yaml

import mtl.evaluation as run_plots  # called through the package, so tests may patch a plot
from mtl._locks import DirectoryLock
from mtl.config import Config, dump_config, load_config
from mtl.data import PreparedData, SplitData, StreamingData, load_data
from mtl.errors import MtlError
from mtl.evaluation import choose_on_validation, evaluate_split, predict, predict_streamed
from mtl.model import MultiTaskModel, backbone_variables, build_model
from mtl.tasks import Task, decode_hierarchy
from mtl.training import _checkpoints as checkpoints
from mtl.training import _distributed as distributed
from mtl.training._batches import StepGather, to_dataset
from mtl.training._callbacks import (
    DivergenceGuard,
    EpochCheckpoint,
    EpochTensorBoard,
    LossWeightScheduler,
    ResumableEarlyStopping,
    ResumableReduceLROnPlateau,
    WeightingEpochHooks,
    write_text_atomic,
)
from mtl.training._fingerprint import data_change, data_fingerprint, split_fingerprint
from mtl.training._optimizers import make_optimizer
from mtl.training._progress import EpochLine, fit_verbosity
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
    """Train ``config`` in a new run directory (``run_dir``, else ``output.run_dir``, else ``runs/<time>``).
    With ``training.distribute`` set, this process trains as its part of the distribution (``run_worker``)."""
    if config.training.distribute.strategy != "none" and distributed.active() is None:
        from mtl.training._launch import run_worker  # it calls train again, with the distribution active

        return run_worker(config, run_dir)
    path = Path(run_dir or config.output.run_dir or f"runs/run-{time.strftime('%Y%m%d-%H%M%S')}")
    check_writable(path)  # before the data stage: a read-only place should not cost a data pass
    _check_cache_dir(config, path)
    created = not path.exists()
    if not created and _holds_files(path):
        raise _not_empty(path)
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise MtlError(f"{path}: cannot create the run directory: {exc.strerror.lower()}") from None
    lock = DirectoryLock(path, what=f"the run directory {path}").acquire()
    try:
        if _holds_files(path):  # another process got in first and has finished or failed since
            lock.release()
            raise _not_empty(path)
        try:
            fingerprint = data_fingerprint(config)
            data, tasks = _prepare(config)
            config_text = dump_config(config)
            write_text_atomic(path / "config.yaml", config_text)
            record = {"config_sha256": hashlib.sha256(config_text.encode("utf-8")).hexdigest(), "data": fingerprint,
                      "split": split_fingerprint(data)}
            return _run(config, data, tasks, path, record)
        except BaseException as exc:
            if not (path / "checkpoints" / checkpoints.STATE_FILE).is_file():
                # failed before its first checkpoint (bad input, a backbone that will not load, Ctrl-C, a full
                # disk): leave nothing behind, so no advice to --resume it can be wrong
                _remove_run_dir(path, created)
            error = checkpoints.disk_error(exc, path, 0)
            if error is not None:
                raise error from None
            raise
    finally:
        lock.release()


def resume(run_dir: str | Path, allow_data_change: bool = False) -> RunResult:
    """Continue an interrupted run from its last verified checkpoint, exactly as the uninterrupted run would.

    Everything is checked before anything is changed: the checkpoint files against their digests (a corrupt newest
    one falls back to the one before), ``state.json`` against ``history.csv`` and the config, ``config.yaml``
    against its digest, the data against its fingerprint (``allow_data_change`` resumes anyway and records it).
    """
    path = Path(run_dir)
    directory = path / "checkpoints"
    if not (path / "config.yaml").is_file() or not (directory / checkpoints.STATE_FILE).is_file():
        raise MtlError(f"{path} is not a run directory with a checkpoint (config.yaml and "
                       "checkpoints/state.json)", where="--resume")
    with DirectoryLock(path, what=f"the run directory {path}"):
        if (path / "metrics.json").is_file():
            raise MtlError(f"{path} holds a finished run (metrics.json exists); nothing to resume", where="--resume")
        state = checkpoints.read_state(directory)
        config_text = (path / "config.yaml").read_bytes()
        if hashlib.sha256(config_text).hexdigest() != state.get("config_sha256"):
            raise MtlError("edited after the run started (its SHA-256 is not the one in checkpoints/state.json); "
                           "restore it, or start a new run with the edited config; nothing was changed",
                           where=str(path / "config.yaml"))
        config = load_config(path / "config.yaml")
        _check_cache_dir(config, path)
        checkpoints.check_epochs(state, directory, config.training.epochs)
        checkpoint = checkpoints.choose_checkpoint(state, directory)
        checkpoints.check_history(path / "history.csv", checkpoint)
        changes = list(state.get("data_changed", []))
        fingerprint = data_fingerprint(config)
        change = data_change(state.get("data", {}), fingerprint)
        if change is not None:
            if not allow_data_change:
                raise MtlError(f"{change}; refusing to resume on other data (mtl train --resume {path} "
                               "--allow-data-change resumes anyway); nothing was changed", where="data")
            log.warning("resuming on changed data (--allow-data-change): %s", change)
            changes.append(change)
        record = {"config_sha256": state["config_sha256"], "data": fingerprint}
        data, tasks = _prepare(config)
        record["split"] = split_fingerprint(data)
        if record["split"] != state.get("split"):
            source = config.data.path or f"dataset {config.data.dataset!r}"
            if not allow_data_change:
                raise MtlError(f"the train/val/test split of {source} differs from the run's (other rows in a "
                               f"split); refusing to resume (--allow-data-change resumes anyway); nothing was changed",
                               where="data")
            log.warning("resuming with another split of %s (--allow-data-change)", source)
            changes.append(f"the train/val/test split of {source} differs from the run's")
        if changes:
            record["data_changed"] = changes
        return _run(config, data, tasks, path, record, resume_from=(state, checkpoint))


def check_writable(path: Path, key: str = "output.run_dir", what: str = "the run directory") -> None:
    """``path`` (or the folder it will be created in) must accept new files; checked by creating one (removed)."""
    folder = path
    while not folder.exists() and folder != folder.parent:
        folder = folder.parent
    if not folder.is_dir():
        raise MtlError(f"{folder} is not a directory", where=key)
    try:
        with tempfile.TemporaryFile(dir=folder, prefix=".mtl-write-check-"):
            pass
    except OSError as exc:
        where = {} if key == "output.run_dir" else {"where": key}
        raise MtlError(f"{folder}: cannot write {what} here: {exc.strerror.lower()}", **where) from None


def encoder_cache_dir(config: Config, run_dir: Path) -> Path | None:
    """Where a frozen backbone's encodings are cached (``model.backbone.cache_dir``, default
    ``<run_dir>/encoder_cache``); None when nothing is cached (no frozen backbone, or ``cache: false``)."""
    backbone = config.model.backbone
    if backbone is None or not backbone.cache or backbone.trainable is not False:
        return None
    return Path(backbone.cache_dir).expanduser() if backbone.cache_dir else run_dir / "encoder_cache"


def _check_cache_dir(config: Config, run_dir: Path) -> None:
    """A configured cache directory must be writable (checked before anything is created)."""
    directory = encoder_cache_dir(config, run_dir)
    if directory is not None and config.model.backbone.cache_dir:
        check_writable(directory, key="model.backbone.cache_dir", what="the frozen-encoder cache")


def _holds_files(path: Path) -> bool:
    return any(p.name != ".lock" for p in path.iterdir())


def _not_empty(path: Path) -> MtlError:
    return MtlError(f"run directory {path} already exists and is not empty; choose another, "
                    f"or continue it with --resume {path}", where="output.run_dir")


def _remove_run_dir(path: Path, created: bool) -> None:
    if created:
        shutil.rmtree(path, ignore_errors=True)
    else:  # the user's own (empty) folder: empty it again
        for child in path.iterdir():
            shutil.rmtree(child, ignore_errors=True) if child.is_dir() else child.unlink(missing_ok=True)


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


def _save_without_optimizer(model: MultiTaskModel, target: Path) -> None:
    """``model.keras`` for prediction and export: the weights without the optimizer's state (Adam's two moments
    would triple a text model's file), which ``--resume`` reads from the checkpoints instead."""
    tmp_model = target.with_name(".model.tmp.keras")
    optimizer = model.optimizer
    model.optimizer = None
    try:
        model.save(tmp_model)
    finally:
        model.optimizer = optimizer
    os.replace(tmp_model, target)


def _callbacks(config: Config, tasks: dict[str, Task], path: Path, has_val: bool, record: dict) -> list:
    t = config.training
    schedules = {name: LossWeightSchedule.from_config(cfg.weight, t.epochs) for name, cfg in config.tasks.items()}
    weighting = LossWeightScheduler(schedules) if t.weighting.name == "fixed" else WeightingEpochHooks()
    callbacks: list = [weighting, DivergenceGuard()]
    stateful: list = []
    if t.early_stopping is not None:
        es = t.early_stopping
        stateful.append(ResumableEarlyStopping(
            monitor=es.monitor, patience=es.patience, mode=_mode(es.monitor, es.mode), min_delta=es.min_delta,
            restore_best_weights=es.restore_best_weights))
    if t.lr_schedule.type == "reduce_on_plateau":
        lr = t.lr_schedule
        stateful.append(ResumableReduceLROnPlateau(
            monitor=lr.monitor, factor=lr.factor, patience=lr.patience, min_lr=lr.min_lr, mode=_mode(lr.monitor)))
    # the history row of an epoch is written before its checkpoint: a run killed in between has one row more than
    # its checkpoint (dropped on --resume), never one less
    callbacks += stateful + [
        keras.callbacks.CSVLogger(str(path / "history.csv"), append=True),
        EpochTensorBoard(path / "tensorboard"),
        EpochCheckpoint(path / "checkpoints", stateful, record),
    ]
    return callbacks


def _compiled_model(config: Config, data: PreparedData | StreamingData, tasks: dict[str, Task],
                    steps_per_epoch: int) -> MultiTaskModel:
    t = config.training
    model = build_model(config.model, tasks, data.features, weighting=t.weighting.model_dump())
    model.compile(optimizer=make_optimizer(config, steps_per_epoch, backbone_variables(model)),
                  jit_compile=t.jit_compile, steps_per_execution=min(t.steps_per_execution, steps_per_epoch))
    # the optimizer's variables made now, eagerly: made inside the first traced step they cost about 2.5 s of tracing
    # per run on 2 cores (issue 11); under a strategy this runs in its scope (``apply`` in a replica cannot make them)
    model.optimizer.build(model.trainable_variables)
    return model


def teaching_rows(split: SplitData) -> SplitData:
    """The rows of a training split that carry at least one label (after ``label_fraction`` and SMOTE): a row with
    no label adds nothing to any masked loss, so training does not iterate over it."""
    return split.subset(np.logical_or.reduce([w > 0 for w in split.weights.values()]))


def _training_rows(data: PreparedData | StreamingData, skip: bool, batch_size: int) -> tuple[SplitData | None, int]:
    """What training iterates over and its row count (the streamed data skips the rows itself: ``None``), logged
    when rows are set aside; ``skip`` false (``training.skip_unlabelled_rows``) keeps every row."""
    if not skip:
        return (None, len(data.train)) if data.streaming else (data.train, len(data.train))
    train = None if data.streaming else teaching_rows(data.train)
    kept = data.train.teaching_count if train is None else len(train)
    if kept == 0:
        raise MtlError("no training row carries a label after label_fraction; raise a label_fraction", where="tasks")
    if kept < len(data.train):
        log.info("training iterates over %d of %d training rows: %d carry no label after label_fraction%s and are "
                 "set aside (evaluation is unchanged); %d step(s) per epoch instead of %d: raise training.epochs "
                 "to keep the optimizer steps", kept, len(data.train), len(data.train) - kept,
                 "" if data.streaming else " and SMOTE", math.ceil(kept / batch_size),
                 math.ceil(len(data.train) / batch_size))
    return train, kept


def _train_dataset(config: Config, data: PreparedData | StreamingData, train: SplitData | None,
                   first_epoch: int) -> tuple[Any, StepGather | None]:
    """The training batches of ``train`` (``_training_rows``), reshuffled each epoch from ``(seed, epoch)``:
    gathered from the arrays in memory, or read from the files with ``data.streaming``. In one process without
    length buckets the dataset yields row numbers and the returned ``StepGather`` gathers the batch in the
    training step (faster, same batches); else it is None."""
    t = config.training
    bucketed = data.words_column is not None and t.bucket_by_length
    if not data.streaming and not bucketed and distributed.active() is None:
        gather = StepGather(train, t.batch_size, seed=config.seed)  # a callback too: it orders each epoch
        return gather.dataset, gather
    if data.streaming:
        return data.dataset("train", t.batch_size, shuffle=True, seed=config.seed, first_epoch=first_epoch,
                            skip_unlabelled=t.skip_unlabelled_rows), None
    return to_dataset(train, t.batch_size, shuffle=True, seed=config.seed,
                      bucket_by=data.words_column if bucketed else None, first_epoch=first_epoch), None


def _held_out_batch(config: Config, data: PreparedData | StreamingData) -> int:
    """Batch size of the passes over held-out rows (validation, evaluation): the training batch size for text (a
    batch is as long as its longest text), else at least 1,024 rows, since the metrics are sums over the rows and a
    step costs the same for 256 rows as for 1,024 on a small model (validation took a tenth of an epoch: issue 11)."""
    return config.training.batch_size if data.words_column else max(config.training.batch_size, 1024)


def _held_out_dataset(data: PreparedData | StreamingData, split: str, batch_size: int,
                      cache_dir: Path | None = None) -> Any:
    """The batches of a held-out split; with ``data.streaming`` and a ``cache_dir``, its first pass is cached there
    (``StreamingData.dataset``: later epochs' validation reads it back instead of every file)."""
    if data.streaming:
        return data.dataset(split, batch_size, cache_file=None if cache_dir is None else cache_dir / split)
    return to_dataset(data.splits()[split], batch_size)


def _split_values(data: PreparedData | StreamingData, train: SplitData | None, column: str) -> Iterator[np.ndarray]:
    """The parsed values of ``column`` that the run will encode: the training rows it iterates over (``train``, from
    ``_training_rows``), then the held-out splits (read chunk by chunk with ``data.streaming``)."""
    for name, split in data.splits().items():
        if data.streaming:
            yield from (chunk.features[column] for chunk in split.chunks())
        else:
            yield (train if name == "train" and train is not None else split).features[column]


def _encoding_caches(model: MultiTaskModel, config: Config, data: PreparedData | StreamingData,
                     train: SplitData | None, path: Path) -> ExitStack:
    """Each feature's encoding cache (``Feature.encoding_cache``: a frozen encoder's outputs computed once),
    entered; closing the stack detaches them."""
    stack = ExitStack()
    directory = encoder_cache_dir(config, path)
    if directory is None:
        return stack
    words = any(task.level == "word" for task in model.tasks.values())
    try:
        for column, feature in data.features.items():
            cache = feature.encoding_cache(model, config.model, directory, partial(_split_values, data, train, column),
                                           words)
            if cache is not None:
                stack.enter_context(cache)
    except BaseException:
        stack.close()
        raise
    return stack


def _run(config: Config, data: PreparedData, tasks: dict[str, Task], path: Path, record: dict,
         resume_from: tuple[dict, checkpoints.Checkpoint] | None = None) -> RunResult:
    t = config.training
    keras.utils.set_random_seed(config.seed)
    policy = keras.config.dtype_policy()
    keras.config.set_dtype_policy(t.mixed_precision)
    kept_epoch = resume_from[1].epoch if resume_from else 0
    try:
        train, train_rows = _training_rows(data, t.skip_unlabelled_rows, t.batch_size)
        steps_per_epoch = math.ceil(train_rows / t.batch_size)
        with distributed.scope():  # a no-op in one process
            model = _compiled_model(config, data, tasks, steps_per_epoch)
        has_val = len(data.val) > 0
        callbacks = _callbacks(config, tasks, path, has_val, record)
        checkpoint = next(c for c in callbacks if isinstance(c, EpochCheckpoint))
        early = next((c for c in callbacks if isinstance(c, ResumableEarlyStopping)), None)
        initial_epoch, stopped = 0, False
        if resume_from is not None:
            state, chosen = resume_from
            chosen.restore(model)
            checkpoint.restore(state, chosen)
            initial_epoch, stopped = chosen.epoch, bool(chosen.entry.get("stopped"))
            checkpoints.truncate_history(path / "history.csv", initial_epoch)
            log.info("resuming %s after epoch %d of %d", path, initial_epoch, t.epochs)
        caches = _encoding_caches(model, config, data, train, path)
        if initial_epoch < t.epochs and not stopped:
            verbose = fit_verbosity(t.verbose)
            if verbose == 2:
                callbacks.append(EpochLine(t.epochs))
            dataset, model.batch_gather = _train_dataset(config, data, train, initial_epoch)
            gathers = [] if model.batch_gather is None else [model.batch_gather]
            # streamed validation rows are read from the files once, then from a cache removed after training
            held_out_cache = tempfile.TemporaryDirectory(prefix=".validation-cache-", dir=path) \
                if data.streaming and has_val else nullcontext()
            try:
                with held_out_cache as cache_dir:
                    validation = _held_out_dataset(data, "val", _held_out_batch(config, data),
                                                   Path(cache_dir) if cache_dir else None) if has_val else None
                    distributed.fit_function(model)(  # model.fit, or under training.distribute the same in a loop
                        dataset, validation_data=validation, epochs=t.epochs, initial_epoch=initial_epoch,
                        callbacks=gathers + callbacks, verbose=1 if verbose == 1 else 0,
                        shuffle=False)  # each epoch's order is drawn from (seed, epoch)
                    del validation
            finally:
                model.batch_gather = None
        elif early is not None and early.restored_weights:
            model.set_weights(early.best_weights)  # what fit's end would have done: killed after the last epoch
        kept_epoch = checkpoint.epochs_saved
        if not distributed.is_chief():  # a worker's part ends with training: the chief writes the run
            return RunResult(path, {}, pd.DataFrame(), model, tasks, data)
        model = distributed.local_model(model, lambda: _compiled_model(config, data, tasks, steps_per_epoch))
        splits = {"val": data.val, "test": data.test}
        batch_size = _held_out_batch(config, data)
        if data.streaming:  # one pass over each held-out split: its targets and the model's outputs
            streamed = {name: predict_streamed(model, split.chunks(), batch_size) for name, split in splits.items()}
            splits = {name: split for name, (split, _) in streamed.items()}
            raw_predictions = {name: predicted for name, (_, predicted) in streamed.items()}
        else:
            raw_predictions = {name: predict(model, split, batch_size) for name, split in splits.items()}
        caches.close()  # the saved and exported model computes its encodings itself
        chosen = choose_on_validation(tasks, splits["val"], raw_predictions["val"])  # e.g. thresholds, before saving
        if chosen:
            model.set_tasks(tasks)
            for name, choice in chosen.items():
                log.info("%s: chosen on the validation split: %s", name, choice)
        _save_without_optimizer(model, path / "model.keras")

        history = pd.read_csv(path / "history.csv")
        best_epoch = early.best_epoch + 1 if early is not None and early.restored_weights else None
        if best_epoch is not None:
            log.info("early stopping: the model holds the weights of epoch %d (%s %.4f), of %d epochs trained",
                     best_epoch, early.monitor, float(early.best), len(history))
        metrics: dict[str, Any] = {name: evaluate_split(tasks, split, raw_predictions[name])
                                   for name, split in splits.items()}
        predictions = {name: decode_hierarchy(tasks, raw) for name, raw in raw_predictions.items()}
        test_predictions = predictions["test"]
        plot_dir = path / "plots"
        plot_dir.mkdir(exist_ok=True)
        run_plots.learning_curves(history, tasks, plot_dir, best_epoch=best_epoch)
        run_plots.loss_weights(history, tasks, plot_dir)
        run_plots.task_plots(tasks, splits["test"], test_predictions, plot_dir)
        if config.output.export is not None:  # before metrics.json: a run whose export failed is not finished
            from mtl.export import export_model

            exported = export_model(model, config.output.export.base_path, config.output.export.name,
                                    config.output.export.version, source=str(path.resolve()))
            log.info("exported %s", exported)
        if best_epoch is not None:  # the weights (and so the metrics) are those of best_epoch, not the last one
            metrics.update(best_epoch=best_epoch, epochs_trained=len(history))
        if record.get("data_changed"):
            metrics["data_changed"] = record["data_changed"]
        if chosen:
            metrics["chosen_on_val"] = chosen
        counts = run_plots.parameter_counts(model)
        run_plots.write_model_summary(model, path / "model_summary.txt")
        run_plots.log_hparams(yaml.safe_load(dump_config(config)), metrics, path / "tensorboard" / "hparams",
                              counts["total"])
        write_text_atomic(path / "metrics.json", json.dumps(metrics, indent=2, default=float))
    except (Exception, KeyboardInterrupt) as exc:
        kept_epoch = max(kept_epoch, checkpoint.epochs_saved if "checkpoint" in locals() else 0)
        if kept_epoch:
            log.error("run failed (%s); no metrics.json written; the checkpoint of epoch %d is kept: continue it "
                      "with mtl train --resume %s", type(exc).__name__, kept_epoch, path)
        else:
            log.error("run failed (%s) before its first checkpoint; %s is removed", type(exc).__name__, path)
        error = checkpoints.disk_error(exc, path, kept_epoch)
        if error is not None:
            raise error from None
        raise
    finally:
        if "caches" in locals():
            caches.close()
        keras.config.set_dtype_policy(policy)
    log.info("run finished: %s", path)
    return RunResult(path, metrics, history, model, tasks, data)
