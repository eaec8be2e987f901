"""Starting distributed runs: one worker of a cluster (any manager that sets ``TF_CONFIG``), and ``mtl train
--workers N``, which starts N such workers on this machine on free loopback ports and fails as one.

A worker's part: the chief (worker 0) writes the run directory; the others write only to a scratch directory
removed at the end. A run directory that holds a checkpoint and no ``metrics.json`` is resumed from its last
completed epoch by the same command (TensorFlow's ``BackupAndRestore`` contract), so a restart policy only has to
start the same workers again.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections import deque
from pathlib import Path
from typing import Any

import numpy as np

from mtl.config import Config, dump_config, load_config
from mtl.errors import MtlError
from mtl.training import _checkpoints as checkpoints
from mtl.training import _distributed as distributed
from mtl.training._run import RunResult, _holds_files, _not_empty, _prepare, _run, resume, train

log = logging.getLogger("mtl")

SCRATCH_ENV = "MTL_SCRATCH_DIR"  # a non-chief worker's scratch directory, made and removed by its launcher
_STOP_GRACE_SECONDS = 5.0


def resumable(path: Path) -> bool:
    """A run directory with a checkpoint and no ``metrics.json``: the same command continues it."""
    return (path / "checkpoints" / checkpoints.STATE_FILE).is_file() and not (path / "metrics.json").is_file()


def run_worker(config: Config, run_dir: str | Path | None) -> RunResult:
    """Train ``config`` as this process's part of a ``training.distribute`` run (resuming ``run_dir`` when it
    holds an unfinished run). The chief's result holds the metrics; another worker's has none."""
    settings = config.training.distribute
    logging.getLogger("tensorflow").setLevel(logging.WARNING)  # not a line per collective
    path = Path(run_dir or config.output.run_dir or f"runs/run-{time.strftime('%Y%m%d-%H%M%S')}")
    if settings.strategy == "multi_worker":
        check_several_workers(config)
    resuming = resumable(path)
    if resuming:
        _check_same_config(config, path)
    distribution = distributed.make_distribution(settings.strategy, dict(os.environ), settings.timeout_seconds)
    if distribution is not None and distribution.worker_count > 1:
        cluster = distributed.read_tf_config(os.environ.get("TF_CONFIG"))
        log.info("worker %d of %d on %s (%s)", distribution.worker_index, distribution.worker_count,
                 ", ".join(cluster.addresses),
                 "chief: writes the run directory" if distribution.is_chief else "scratch directory only")
    elif distribution is not None:
        log.info("%s strategy, replicas: %d", settings.strategy, distribution.replicas)
    with distributed.activated(distribution):
        if distributed.is_chief():
            if resuming:
                log.info("%s holds an unfinished run: resuming it", path)
                result = resume(path)
            elif path.exists() and _holds_files(path):
                raise _not_empty(path)
            else:
                result = train(config, path)
        else:
            scratch = Path(os.environ.get(SCRATCH_ENV) or tempfile.mkdtemp(prefix="mtl-worker-"))
            try:
                result = _resume_worker(path, scratch / "run") if resuming else train(config, scratch / "run")
            finally:
                shutil.rmtree(scratch, ignore_errors=True)
    if distribution is not None:  # equal on every worker: they trained in sync
        log.info("worker %d: final weights sha256 %s", distribution.worker_index, weights_digest(result.model))
        distributed.barrier(distribution)
    return result


def weights_digest(model: Any) -> str:
    """SHA-256 of every model and optimizer variable's bytes, in order."""
    digest = hashlib.sha256()
    for variable in checkpoints.model_variables(model):
        digest.update(np.ascontiguousarray(variable.numpy()).tobytes())
    return digest.hexdigest()


def check_several_workers(config: Config) -> None:
    """What one process can do and several workers cannot (yet), as one line."""
    if config.training.smote is not None:
        raise MtlError("SMOTE resampling is not supported with several workers; train it in one process or drop "
                       "training.smote", where="training.smote")


def _check_same_config(config: Config, path: Path) -> None:
    """Resuming by re-running the command: the command's config must be the run's."""
    config_file = path / "config.yaml"
    if config_file.is_file() and config_file.read_text(encoding="utf-8") != dump_config(config):
        raise MtlError(f"{path} holds an unfinished run of another config (its config.yaml differs); continue it "
                       f"with mtl train --resume {path}, or choose another run directory", where="--config")


def _resume_worker(path: Path, scratch: Path) -> RunResult:
    """A non-chief worker's part of a resumed run: the chief's checkpoint restored, its files written to
    ``scratch`` (the chief checks the run and writes its directory)."""
    directory = path / "checkpoints"
    state = checkpoints.read_state(directory)
    chosen = checkpoints.choose_checkpoint(state, directory)
    config = load_config(path / "config.yaml")
    data, tasks = _prepare(config)
    scratch.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(path / "history.csv", scratch / "history.csv")
    record = {key: state[key] for key in ("config_sha256", "data", "split") if key in state}
    return _run(config, data, tasks, scratch, record, resume_from=(state, chosen))


# ----------------------------------------------------------------------------- mtl train --workers N
def free_loopback_ports(count: int) -> list[int]:
    """``count`` distinct ports free on 127.0.0.1 now (held open together, so none is given twice)."""
    sockets = []
    try:
        for _ in range(count):
            probe = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            probe.bind(("127.0.0.1", 0))
            sockets.append(probe)
        return [probe.getsockname()[1] for probe in sockets]
    finally:
        for probe in sockets:
            probe.close()


def tf_config(ports: list[int], index: int) -> str:
    """The ``TF_CONFIG`` of worker ``index`` of a cluster on loopback ``ports`` (worker 0 is the chief)."""
    return json.dumps({"cluster": {"worker": [f"127.0.0.1:{port}" for port in ports]},
                       "task": {"type": "worker", "index": index}})


class WorkerFailed(MtlError):
    """A worker of a distributed run failed; every worker was stopped."""


def launch_workers(workers: int, worker_args: list[str], run_dir: Path, max_restarts: int,
                   created: bool) -> int:
    """Run ``mtl train <worker_args>`` in ``workers`` local processes joined by ``TF_CONFIG``; restart them all up
    to ``max_restarts`` times after a failure (each start resumes from the last completed epoch). Their output is
    streamed, each line prefixed ``[worker i]``. Returns 0, or raises ``WorkerFailed`` naming the worker."""
    attempt = 0
    while True:
        failure = _run_workers_once(workers, worker_args)
        if failure is None:
            return 0
        epoch = _epochs_completed(run_dir)
        kept = (f"the checkpoint of epoch {epoch} is kept" if epoch else "no epoch was completed")
        if attempt >= max_restarts or failure.startswith("bad input"):
            hint = f"; run the same command to resume from epoch {epoch}" if epoch and resumable(run_dir) else ""
            raise WorkerFailed(f"{failure}; all workers stopped; {kept}{hint}")
        attempt += 1
        log.warning("%s; all workers stopped; %s; restart %d of %d (training.distribute.max_restarts)", failure,
                    kept, attempt, max_restarts)
        if created and not resumable(run_dir) and not (run_dir / "metrics.json").exists():
            shutil.rmtree(run_dir, ignore_errors=True)  # killed before its first checkpoint: start it afresh


def _epochs_completed(run_dir: Path) -> int:
    try:
        state = checkpoints.read_state(run_dir / "checkpoints")
    except MtlError:
        return 0
    return int(state["epochs_completed"]) if state else 0


def _run_workers_once(workers: int, worker_args: list[str]) -> str | None:
    """Start the workers, wait for them; None when all succeeded, else what the first failure was."""
    ports = free_loopback_ports(workers)
    scratch = [Path(tempfile.mkdtemp(prefix=f"mtl-worker{i}-")) for i in range(workers)]
    processes: list[subprocess.Popen] = []
    tails: list[deque] = [deque(maxlen=20) for _ in range(workers)]
    threads = []
    try:
        for index in range(workers):
            env = {**os.environ, "TF_CONFIG": tf_config(ports, index), SCRATCH_ENV: str(scratch[index]),
                   "PYTHONUNBUFFERED": "1"}
            process = subprocess.Popen([sys.executable, "-m", "mtl.cli", "train", *worker_args], env=env,
                                       stdout=subprocess.PIPE, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                       text=True, errors="replace", preexec_fn=_die_with_parent)
            processes.append(process)
            thread = threading.Thread(target=_stream, args=(process, index, tails[index]), daemon=True)
            thread.start()
            threads.append(thread)
        failure = None
        while failure is None and any(p.poll() is None for p in processes):
            for index, process in enumerate(processes):
                code = process.poll()
                if code not in (None, 0):
                    failure = (index, code)
                    break
            time.sleep(0.1)
        if failure is None:
            failure = next(((i, p.returncode) for i, p in enumerate(processes) if p.returncode != 0), None)
        if failure is None:
            return None
        _stop(processes)
        for thread in threads:
            thread.join(timeout=2)
        index, code = failure
        return _describe(index, code, tails[index])
    finally:
        _stop(processes)
        for path in scratch:
            shutil.rmtree(path, ignore_errors=True)


def _die_with_parent() -> None:
    """In a worker, before it starts: on Linux, be killed when the launcher dies (even by SIGKILL), so that no worker
    is left running; elsewhere the launcher's own cleanup stops them."""
    if sys.platform.startswith("linux"):
        import ctypes

        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG


def _stream(process: subprocess.Popen, index: int, tail: deque) -> None:
    for line in process.stdout:
        line = line.rstrip("\n")
        if line.strip():
            tail.append(line)
        print(f"[worker {index}] {line}", file=sys.stderr, flush=True)


def _describe(index: int, code: int, tail: deque) -> str:
    """``worker i ...: <its last error line>`` (a bad-input line says so first, so it is not restarted)."""
    errors = [line for line in tail if line.startswith("error:")]
    last = errors[-1] if errors else (tail[-1] if tail else "no output")
    if code < 0:
        how = f"was killed by {signal.Signals(-code).name}"
    elif code == 2 and errors:
        return f"bad input: worker {index}: {last.removeprefix('error: ')}"
    else:
        how = f"exited with code {code}"
    return f"worker {index} {how} (its last line: {last.strip()})"


def _stop(processes: list[subprocess.Popen]) -> None:
    """Stop every worker still running (SIGTERM, then SIGKILL after a grace period) and reap it."""
    running = [p for p in processes if p.poll() is None]
    for process in running:
        process.terminate()
    deadline = time.monotonic() + _STOP_GRACE_SECONDS
    for process in running:
        try:
            process.wait(timeout=max(0.1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def worker_arguments(args: Any, run_dir: Path) -> list[str]:
    """The ``mtl train`` arguments of each worker: the command's own, the run directory made explicit, and the
    multi-worker strategy."""
    if args.resume:
        return ["--resume", args.resume]
    out = ["--config", args.config]
    for item in args.set:
        out += ["--set", item]
    return out + ["--set", "training.distribute.strategy=multi_worker", "--run-dir", str(run_dir)]
