"""Hyper-parameter search: ``mtl tune`` runs Optuna trials of ``mtl.training.train`` over ``tune.space``.

Each trial sets its sampled values as ``--set`` would, trains in its own run directory (``<out>/trial-0007``)
and is scored by the validation metric of ``tune.objective`` in that run's ``metrics.json``. The study lives
in ``<out>/optuna.db`` (SQLite), so the same command run again continues it and runs only the trials missing
up to ``trials``. A trial whose process was killed is marked failed and re-run with the same values. After
every trial ``trials.csv`` and ``best_config.yaml`` are rewritten atomically.
"""

from __future__ import annotations

import contextlib
import csv
import difflib
import fcntl
import io
import json
import logging
import math
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import keras
import optuna
import yaml
from optuna.trial import FrozenTrial, TrialState

from mtl.config import Config, TuneParam, apply_overrides, config_from_dict, dump_config, load_config
from mtl.errors import MtlError
from mtl.tasks import TASK_TYPES
from mtl.training import train
from mtl.training._callbacks import write_text_atomic

__all__ = ["TuneResult", "tune"]

log = logging.getLogger("mtl")

STORAGE_FILE = "optuna.db"
TRIALS_FILE = "trials.csv"
BEST_CONFIG_FILE = "best_config.yaml"
LOCK_FILE = ".tune.lock"
LOWER_IS_BETTER = ("loss", "rmse", "mae", "mse")


@dataclass
class TuneResult:
    """What a search gives back; the same is on disk in ``out_dir`` (``best_config.yaml``, ``trials.csv``)."""

    out_dir: Path
    objective: str  # e.g. "val income auc"
    best_trial: int
    best_value: float
    best_params: dict[str, Any]  # space key -> value
    best_config: Config  # resolved, without the tune section
    best_run_dir: Path
    trials: int  # finished trials in the study (complete + failed)
    failed: int
    new_trials: int  # run by this call
    study: optuna.Study


@dataclass(frozen=True)
class _Dimension:
    """One key of ``tune.space`` and how to sample it. Choices reach Optuna as their YAML text."""

    key: str
    spec: TuneParam

    @property
    def choices(self) -> dict[str, Any]:
        return {_yaml_text(c): c for c in self.spec.choice or []}

    def suggest(self, trial: optuna.Trial) -> Any:
        s = self.spec
        if s.choice is not None:
            return self.choices[trial.suggest_categorical(self.key, list(self.choices))]
        if s.int is not None:
            return trial.suggest_int(self.key, s.int[0], s.int[1], step=int(s.step or 1), log=bool(s.log))
        low, high = s.uniform or s.log_uniform  # type: ignore[misc]
        return trial.suggest_float(self.key, low, high, step=s.step, log=s.log_uniform is not None)

    def decode(self, stored: Any) -> Any:
        return self.choices[stored] if self.spec.choice is not None else stored

    def edges(self) -> list[Any]:
        """Values that show before any training whether the key and its range fit the config."""
        s = self.spec
        return list(s.choice) if s.choice is not None else list(s.int or s.uniform or s.log_uniform or ())


def tune(config: Config | dict | str | Path, trials: int, out_dir: str | Path | None = None,
         overrides: list[str] | None = None) -> TuneResult:
    """Search ``config``'s ``tune.space`` until the study in ``out_dir`` holds ``trials`` finished trials.

    ``config`` is a YAML path, a raw dict or a ``Config``; ``overrides`` are ``--set`` items. ``out_dir``
    defaults to ``runs/tune-<config file stem>``. Bad input raises ``MtlError`` before anything is written.
    """
    if trials < 1:
        raise MtlError(f"the number of trials must be 1 or more, got {trials}", where="--trials")
    raw, base, source, name = _read(config, overrides or [])
    dimensions = _search_space(base, raw, source)
    task, metric, direction = _objective(base, source)
    out = Path(out_dir or f"runs/tune-{name}")
    if out.exists() and not (out / STORAGE_FILE).is_file() and (not out.is_dir() or any(out.iterdir())):
        raise MtlError(f"{out} exists and is not a tune directory (no {STORAGE_FILE}); choose another",
                       where="--out")

    out.mkdir(parents=True, exist_ok=True)
    verbosity = optuna.logging.get_verbosity()
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    try:
        with _locked(out):
            study = _open_study(out, name, direction, base)
            _recover_interrupted(study)
            new = _run_trials(study, dimensions, raw, source, out, trials, (task, metric))
    finally:
        optuna.logging.set_verbosity(verbosity)
    return _result(study, dimensions, raw, source, out, (task, metric), new)


# ----------------------------------------------------------------------------- input
def _read(config: Config | dict | str | Path, overrides: list[str]) -> tuple[dict, Config, str, str]:
    """The raw config (overrides applied), its validated form, where it came from, and the study name."""
    if isinstance(config, Config | dict):
        raw = config.model_dump(mode="json") if isinstance(config, Config) else config
        raw = apply_overrides(raw, overrides)
        return raw, config_from_dict(raw), "config", "config"
    path = Path(config)
    base = load_config(path, overrides)  # every file and schema error, named by the file
    raw = apply_overrides(yaml.safe_load(path.read_text(encoding="utf-8")), overrides)
    return raw, base, str(path), path.stem


def _search_space(base: Config, raw: dict, source: str) -> list[_Dimension]:
    """``tune.space`` as dimensions; each key is set to its range's ends (or every choice) and validated."""
    space = base.tune.space if base.tune is not None else {}
    if not space:
        raise MtlError("empty search space: list config keys to search under tune.space, e.g. "
                       "training.learning_rate: {log_uniform: [1.0e-4, 1.0e-2]}", where=source)
    where = f"{source}: tune.space"
    for key in space:
        parts = key.split(".")
        if not all(parts):
            raise MtlError(f"{key!r} is not a dotted config key such as training.learning_rate", where=where)
        if parts[0] == "tune":
            raise MtlError(f"{key}: the tune section cannot be searched", where=where)
        node: Any = raw
        for depth, part in enumerate(parts[:-1]):
            node = node.get(part) if isinstance(node, dict) else None
            if node is not None and not isinstance(node, dict):
                raise MtlError(f"{key}: {'.'.join(parts[:depth + 1])} holds a value, not a mapping", where=where)
    dimensions = [_Dimension(key, spec) for key, spec in space.items()]
    for dimension in dimensions:
        for value in dimension.edges():
            _trial_config(raw, {dimension.key: value}, where)
    return dimensions


def _objective(base: Config, source: str) -> tuple[str, str, str]:
    """The objective's task, metric and direction, checked against the config's tasks."""
    assert base.tune is not None
    objective = base.tune.objective
    tasks = list(base.tasks)
    if objective.task not in tasks:
        raise MtlError(f"tune.objective.task: {objective.task!r} is not a task{_hint(objective.task, tasks)}",
                       where=source)
    task = base.tasks[objective.task]
    metrics = list(task.metrics if task.metrics is not None else TASK_TYPES[task.type].default_metrics)
    if objective.metric not in metrics:
        raise MtlError(f"tune.objective.metric: {objective.metric!r} is not a metric of task {objective.task!r}"
                       f"{_hint(objective.metric, metrics)}", where=source)
    if base.data.split.val == 0:
        raise MtlError("tune.objective: trials are scored on the validation split, but data.split.val is 0",
                       where=source)
    direction = objective.direction or ("minimize" if objective.metric.endswith(LOWER_IS_BETTER) else "maximize")
    return objective.task, objective.metric, direction


def _hint(value: str, valid: list[str]) -> str:
    close = difflib.get_close_matches(value, valid, n=1)
    return f" (did you mean {close[0]!r}?)" if close else f"; valid: {', '.join(valid)}"


def _trial_config(raw: dict, values: dict[str, Any], source: str) -> Config:
    """The config with ``values`` set as ``--set key=value`` would, without the tune section."""
    resolved = apply_overrides(raw, [f"{key}={_yaml_text(value)}" for key, value in values.items()])
    resolved.pop("tune", None)
    weighting = (resolved.get("training") or {}).get("weighting", "fixed")
    name = weighting.get("name", "fixed") if isinstance(weighting, dict) else weighting
    if name != "fixed" and any(k.startswith("training.weighting") for k in values):
        # task weights are the fixed strategy's parameters: a trial of another strategy sets the weights itself
        for task in (resolved.get("tasks") or {}).values():
            if isinstance(task, dict) and "weight" not in [k.split(".")[-1] for k in values]:
                task.pop("weight", None)
    return config_from_dict(resolved, source)


def _yaml_text(value: Any) -> str:
    """One-line YAML that reads back as ``value`` (what ``--set`` parses)."""
    return yaml.safe_dump(value, default_flow_style=True, width=1 << 30).removesuffix("\n...\n").strip()


# ----------------------------------------------------------------------------- the study
@contextlib.contextmanager
def _locked(out: Path) -> Iterator[None]:
    """Hold ``out``'s lock file: one search per directory, so RUNNING trials found in it are stale."""
    with open(out / LOCK_FILE, "w") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise MtlError(f"another mtl tune is running in {out}", where="--out") from None
        yield


def _open_study(out: Path, name: str, direction: str, base: Config) -> optuna.Study:
    """Create or continue the study in ``out/optuna.db``; refuse one made from a different config."""
    storage = optuna.storages.RDBStorage(f"sqlite:///{(out / STORAGE_FILE).resolve()}")
    names = optuna.get_all_study_names(storage)
    if names and name not in names:
        raise MtlError(f"{out} holds the study {names[0]!r}, not {name!r} (named after the config file); "
                       "choose another", where="--out")
    study = optuna.create_study(storage=storage, study_name=name, direction=direction, load_if_exists=True)
    fingerprint = base.model_dump(mode="json")
    known = study.user_attrs.get("config")
    if known is None:
        study.set_user_attr("config", fingerprint)
    elif known != fingerprint:
        changed = _changed_keys(known, fingerprint)
        raise MtlError(f"{out} holds a search of another config ({', '.join(changed[:3])} differ); run it with "
                       "the same config and --set, or choose another", where="--out")
    tune_config = base.tune
    assert tune_config is not None
    seed = base.seed + len(study.get_trials(deepcopy=False))  # a continued study does not replay its samples
    study.sampler = (optuna.samplers.RandomSampler(seed=seed) if tune_config.sampler == "random"
                     else optuna.samplers.TPESampler(seed=seed))
    return study


def _changed_keys(old: Any, new: Any, prefix: str = "") -> list[str]:
    if isinstance(old, dict) and isinstance(new, dict):
        return [changed for key in dict.fromkeys([*old, *new])
                for changed in _changed_keys(old.get(key), new.get(key), f"{prefix}{key}.")]
    return [] if old == new else [prefix.rstrip(".")]


def _recover_interrupted(study: optuna.Study) -> None:
    """Mark the trials of a killed search (still RUNNING; we hold the lock) failed, and queue them again."""
    for trial in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        log.warning("trial %d was interrupted; it is marked failed and run again", trial.number)
        _interrupted(study, trial.number, trial.params)


def _interrupted(study: optuna.Study, number: int, params: dict[str, Any]) -> None:
    """An interrupted trial does not count towards ``trials``; its values are tried again."""
    study.set_user_attr("interrupted", sorted({*study.user_attrs.get("interrupted", []), number}))
    study.tell(number, state=TrialState.FAIL, skip_if_finished=True)
    study.enqueue_trial(params, user_attrs={"rerun_of": number})


def _finished(study: optuna.Study) -> list[FrozenTrial]:
    """Trials that ran to an end: complete, or failed with an error (not interrupted)."""
    interrupted = set(study.user_attrs.get("interrupted", []))
    return [t for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE, TrialState.FAIL))
            if t.number not in interrupted]


def _run_trials(study: optuna.Study, dimensions: list[_Dimension], raw: dict, source: str, out: Path,
                trials: int, objective: tuple[str, str]) -> int:
    """Ask, train and tell until ``trials`` trials have finished; a trial's ``MtlError`` fails only it."""
    new = 0
    while len(_finished(study)) < trials:
        trial = study.ask()
        run_dir = out / f"trial-{trial.number:04d}"
        trial.set_user_attr("run_dir", str(run_dir))
        try:
            params = {d.key: d.suggest(trial) for d in dimensions}
            config = _trial_config(raw, params, f"{source}: trial {trial.number}")
            config.output.export = None  # trials do not export; best_config.yaml keeps output.export
            log.info("trial %d of %d (number %d): %s", len(_finished(study)) + 1, trials, trial.number,
                     ", ".join(f"{k}={_yaml_text(v)}" for k, v in params.items()))
            train(config, run_dir)
            value = _read_objective(run_dir, *objective)
        except MtlError as exc:
            trial.set_user_attr("error", str(exc))
            study.tell(trial, state=TrialState.FAIL)
            log.warning("trial %d failed: %s", trial.number, exc)
        except BaseException as exc:  # Ctrl-C or a bug: the trial is re-run next time
            trial.set_user_attr("error", "interrupted" if isinstance(exc, KeyboardInterrupt) else repr(exc))
            _interrupted(study, trial.number, trial.params)
            raise
        else:
            study.tell(trial, value)
            log.info("trial %d: val %s %s %.6g", trial.number, *objective, value)
        finally:
            keras.backend.clear_session()
        new += 1
        _write_outputs(study, dimensions, raw, source, out, objective)
    _write_outputs(study, dimensions, raw, source, out, objective)
    if not any(t.state == TrialState.COMPLETE for t in _finished(study)):
        first = _finished(study)[0].user_attrs.get("error", "unknown error")
        raise MtlError(f"every trial failed ({len(_finished(study))}); trial {_finished(study)[0].number}: {first}",
                       where=str(out))
    return new


def _read_objective(run_dir: Path, task: str, metric: str) -> float:
    metrics = json.loads((run_dir / "metrics.json").read_text())
    value = metrics["val"].get(task, {}).get(metric)
    if value is None or not math.isfinite(value):
        raise MtlError(f"val {task} {metric} is {value} (no labelled validation rows, or one class only)",
                       where=str(run_dir / "metrics.json"))
    return float(value)


# ----------------------------------------------------------------------------- outputs
def _write_outputs(study: optuna.Study, dimensions: list[_Dimension], raw: dict, source: str, out: Path,
                   objective: tuple[str, str]) -> None:
    """``trials.csv`` (every trial) and ``best_config.yaml`` (once a trial has completed), atomically."""
    trials = study.get_trials(deepcopy=False)
    interrupted = set(study.user_attrs.get("interrupted", []))
    table = io.StringIO()
    writer = csv.writer(table, lineterminator="\n")
    writer.writerow(["number", "state", f"val_{objective[0]}_{objective[1]}", "duration_s", "run_dir",
                     *(d.key for d in dimensions), "error"])
    for t in trials:
        duration = f"{t.duration.total_seconds():.1f}" if t.duration and t.number not in interrupted else ""
        error = t.user_attrs.get("error", "interrupted" if t.number in interrupted else "")
        writer.writerow([t.number, t.state.name, "" if t.value is None else repr(t.value), duration,
                         t.user_attrs.get("run_dir", ""), *(_shown(t.params.get(d.key)) for d in dimensions),
                         error])
    write_text_atomic(out / TRIALS_FILE, table.getvalue())
    if any(t.state == TrialState.COMPLETE for t in trials):
        best = study.best_trial
        config = _trial_config(raw, {d.key: d.decode(best.params[d.key]) for d in dimensions}, source)
        header = (f"# The best of {len(_finished(study))} trials of mtl tune: trial {best.number}, "
                  f"val {objective[0]} {objective[1]} {best.value:.6g} ({best.user_attrs.get('run_dir')}).\n"
                  f"# Train it with: mtl train --config {out / BEST_CONFIG_FILE}\n")
        write_text_atomic(out / BEST_CONFIG_FILE, header + dump_config(config))


def _shown(value: Any) -> str:
    return "" if value is None else value if isinstance(value, str) else repr(value)


def _result(study: optuna.Study, dimensions: list[_Dimension], raw: dict, source: str, out: Path,
            objective: tuple[str, str], new: int) -> TuneResult:
    best = study.best_trial
    params = {d.key: d.decode(best.params[d.key]) for d in dimensions}
    finished = _finished(study)
    return TuneResult(
        out_dir=out, objective=f"val {objective[0]} {objective[1]}", best_trial=best.number,
        best_value=float(best.value), best_params=params, best_config=_trial_config(raw, params, source),
        best_run_dir=Path(best.user_attrs["run_dir"]), trials=len(finished),
        failed=sum(t.state == TrialState.FAIL for t in finished), new_trials=new, study=study)
