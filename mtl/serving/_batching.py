"""Server-side batching (``--enable_batching``): concurrent requests for one model version merge into one signature
call, as TF Serving's batching session does.

``--batching_parameters_file`` is TF Serving's text proto (``max_batch_size { value: 128 }`` ...). A request waits
at most ``batch_timeout_micros`` for others to join its batch; ``num_batch_threads`` batches run at once; with more
than ``max_enqueued_batches`` full batches waiting, a request is refused with ``UNAVAILABLE`` as TF Serving does.
"""

from __future__ import annotations

import logging
import os
import re
import threading
import time
from collections import deque
from concurrent.futures import Future
from concurrent.futures import TimeoutError as FutureTimeout
from dataclasses import dataclass, fields
from pathlib import Path

import numpy as np

from mtl.errors import MtlError
from mtl.serving._loader import LoadedModel
from mtl.serving._monitoring import Metrics
from mtl.serving._signature import call_signature
from mtl.serving._versions import ServingError


@dataclass(frozen=True)
class BatchingParameters:
    """TF Serving's ``BatchingParameters`` keys this server honours (defaults as TF Serving's)."""

    max_batch_size: int = 1000
    batch_timeout_micros: int = 0
    max_enqueued_batches: int = 1000
    num_batch_threads: int = os.cpu_count() or 1


_ENTRY = re.compile(r"\s*(?P<key>[A-Za-z_]+)\s*:?\s*\{\s*value\s*:\s*(?P<value>-?[0-9]+)\s*\}\s*")
_IGNORED = {"pad_variable_length_inputs", "allowed_batch_sizes", "enable_large_batch_splitting",
            "max_execution_batch_size", "thread_pool_name"}


def read_batching_parameters(path: str | Path | None) -> BatchingParameters:
    """Parse a ``--batching_parameters_file``; no file gives TF Serving's defaults."""
    if path is None:
        return BatchingParameters()
    where = f"--batching_parameters_file {path}"
    file = Path(path)
    if not file.is_file():
        raise MtlError("no such file", where=where)
    text = "\n".join(line.split("#", 1)[0] for line in file.read_text(encoding="utf-8").splitlines())
    known = {f.name for f in fields(BatchingParameters)}
    values: dict[str, int] = {}
    position = 0
    while position < len(text.rstrip()):
        match = _ENTRY.match(text, position)
        if match is None:
            snippet = text[position:].strip().splitlines()[0][:60]
            raise MtlError(f"expected 'key {{ value: N }}' at {snippet!r}", where=where)
        key, value = match["key"], int(match["value"])
        if key not in known and key not in _IGNORED:
            raise MtlError(f"unknown key {key!r}; known: {sorted(known)}", where=where)
        if key in known:
            if value < (0 if key == "batch_timeout_micros" else 1):
                raise MtlError(f"{key} must be {'>= 0' if key == 'batch_timeout_micros' else '>= 1'}, not {value}",
                               where=where)
            values[key] = value
        position = match.end()
    return BatchingParameters(**values)


log = logging.getLogger("mtl.serve")


@dataclass(eq=False)  # compared by identity: ``deque.remove`` must never compare two requests' arrays (a
class _Task:          # multi-row array's truth value raises, which lost the batch's first request)
    model: LoadedModel
    tensors: dict[str, np.ndarray]
    rows: int
    future: Future


class Batcher:
    """Merges concurrent ``run(model, tensors)`` calls for the same loaded model into one signature call."""

    def __init__(self, parameters: BatchingParameters, metrics: Metrics | None = None) -> None:
        self.parameters = parameters
        self.metrics = metrics
        self._queue: deque[_Task] = deque()
        self._queued_rows = 0
        self._ready = threading.Condition()
        self._stopped = False
        self._threads = [threading.Thread(target=self._work, name=f"mtl-batch-{i}", daemon=True)
                         for i in range(parameters.num_batch_threads)]
        for thread in self._threads:
            thread.start()

    def __call__(self, model: LoadedModel, tensors: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """The signature's outputs for these rows, computed in a batch with other requests' rows."""
        rows = len(next(iter(tensors.values())))
        limit = self.parameters.max_enqueued_batches * self.parameters.max_batch_size
        task = _Task(model, tensors, rows, Future())
        with self._ready:
            if self._queued_rows + rows > limit:
                raise ServingError("UNAVAILABLE", "The batch scheduling queue to which this task was submitted is full")
            self._queue.append(task)
            self._queued_rows += rows
            self._ready.notify()
        while True:  # never wait on a worker that is gone: run the request alone instead
            try:
                return task.future.result(timeout=1.0)
            except FutureTimeout:
                if not any(thread.is_alive() for thread in self._threads) and not task.future.done():
                    log.error("batching: no batch thread is alive; running the request alone")
                    return call_signature(model, tensors)

    def stop(self) -> None:
        with self._ready:
            self._stopped = True
            self._ready.notify_all()
        for thread in self._threads:
            thread.join(timeout=5)

    def _take_batch(self) -> list[_Task] | None:
        """Wait for a task, then for more of the same model until the batch is full or the timeout passes."""
        p = self.parameters
        with self._ready:
            while not self._queue and not self._stopped:
                self._ready.wait()
            if self._stopped:
                return None
            first = self._queue.popleft()
            batch, rows = [first], first.rows
            deadline = time.monotonic() + p.batch_timeout_micros / 1e6
            while rows < p.max_batch_size:
                same = next((t for t in self._queue if t.model is first.model and rows + t.rows <= p.max_batch_size),
                            None)
                if same is not None:
                    self._queue.remove(same)
                    batch.append(same)
                    rows += same.rows
                    continue
                left = deadline - time.monotonic()
                if left <= 0 or self._stopped:
                    break
                self._ready.wait(left)
            self._queued_rows -= rows
            return batch

    def _work(self) -> None:
        while True:
            try:
                batch = self._take_batch()
            except Exception:  # the worker must outlive any surprise, or requests would wait forever
                log.exception("batching: taking a batch failed")
                continue
            if batch is None:
                return
            try:
                self._run(batch)
            except BaseException as exc:  # handed to the waiting requests; the worker lives on
                for task in batch:
                    if not task.future.done():
                        task.future.set_exception(exc)

    def _run(self, batch: list[_Task]) -> None:
        model = batch[0].model
        if len(batch) == 1:
            batch[0].future.set_result(call_signature(model, batch[0].tensors))
            return
        merged = {name: np.concatenate([t.tensors[name] for t in batch]) for name in batch[0].tensors}
        try:
            outputs = call_signature(model, merged)
        except ServingError:  # one bad request must not fail the others: run each alone for its own answer
            for task in batch:
                try:
                    task.future.set_result(call_signature(model, task.tensors))
                except BaseException as exc:
                    task.future.set_exception(exc)
            return
        total = sum(t.rows for t in batch)
        if self.metrics is not None:
            self.metrics.batch_rows.labels(model.path.parent.name, str(model.version)).observe(total)
        if any(np.ndim(v) == 0 or len(v) != total for v in outputs.values()):
            for task in batch:  # an output without a batch dimension cannot be split: run each alone
                task.future.set_result(call_signature(model, task.tensors))
            return
        start = 0
        for task in batch:
            task.future.set_result({k: v[start:start + task.rows] for k, v in outputs.items()})
            start += task.rows


__all__ = ["Batcher", "BatchingParameters", "read_batching_parameters"]
