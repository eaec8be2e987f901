"""What the benchmarks record about the machine they run on, and how they watch its load.

Shared by the benchmark scripts (run from ``benchmarks/``, so importable by name, also in their spawned workers).
"""

from __future__ import annotations

import contextlib
import datetime
import importlib.metadata
import os
import platform
import resource
import sys
import traceback
from collections.abc import Callable, Iterator
from typing import Any

PACKAGES = ("tensorflow", "keras", "keras-hub")


def machine() -> dict[str, str]:
    """CPU, cores (logical and usable), RAM, bf16/AMX instruction flags, Python and package versions, the date."""
    cpu, flags = platform.processor() or "?", set()
    try:
        with open("/proc/cpuinfo") as f:
            lines = f.read().splitlines()
        cpu = next(line.split(":", 1)[1].strip() for line in lines if line.startswith("model name"))
        flags = set(next(line.split(":", 1)[1].split() for line in lines if line.startswith("flags")))
    except (OSError, StopIteration):
        pass
    usable = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    try:
        ram = f"{os.sysconf('SC_PAGE_SIZE') * os.sysconf('SC_PHYS_PAGES') / 2**30:.0f} GiB"
    except (ValueError, OSError):
        ram = "?"
    versions = {name: importlib.metadata.version(name) for name in PACKAGES}
    return {"cpu": cpu, "cores": f"{os.cpu_count()} logical ({usable} usable)", "ram": ram,
            "bf16_instructions": ", ".join(sorted(f for f in flags if "bf16" in f or f.startswith("amx"))) or "none",
            "python": platform.python_version(), **versions,
            "date": datetime.datetime.now().strftime("%Y-%m-%d %H:%M")}


def busy_cpu() -> float:
    """CPU-seconds the machine has spent busy so far (all processes, and time stolen by the hypervisor)."""
    import psutil

    t = psutil.cpu_times()
    return sum(getattr(t, field, 0.0) for field in ("user", "nice", "system", "irq", "softirq", "steal"))


def rss_mib() -> float:
    """This process's current resident set size in MiB."""
    import psutil

    return psutil.Process().memory_info().rss / 2**20


@contextlib.contextmanager
def worker_side(conn: Any, log_path: str) -> Iterator[None]:
    """The body of a ``SpawnedWorker``'s target: stderr (TensorFlow's chatter) goes to ``log_path``; when the body
    ends, the worker's peak RSS is its last reply; an exception is sent to the parent with its traceback."""
    log = open(log_path, "w")
    os.dup2(log.fileno(), 2)
    sys.stderr = log
    try:
        yield
        conn.send({"peak_rss": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024})
    except BaseException:
        traceback.print_exc()
        log.flush()
        conn.send({"error": traceback.format_exc()})
        raise


class SpawnedWorker:
    """A spawned process that builds a model once and then times runs on request, over a pipe.

    ``target(conn, *args, log_path)`` receives ``("run", ...)`` commands and finally ``("stop",)``; it answers
    each with a dict, or with ``{"error": traceback}``, which ``recv`` raises here with the worker's log path.
    """

    def __init__(self, ctx: Any, name: str, log_path: str, target: Callable[..., None], args: tuple) -> None:
        self.name, self.log_path = name, log_path
        self.conn, child = ctx.Pipe()
        self.process = ctx.Process(target=target, daemon=True, args=(child, *args, log_path))
        self.process.start()

    def recv(self) -> Any:
        reply = self.conn.recv()
        if isinstance(reply, dict) and "error" in reply:
            raise RuntimeError(f"{self.name} worker failed (log: {self.log_path}):\n{reply['error']}")
        return reply

    def stop(self) -> dict:
        """The worker's last reply (its peak memory), after which it exits."""
        self.conn.send(("stop",))
        reply = self.recv()
        self.process.join(timeout=60)
        return reply
