"""Which models and versions are served: TF Serving's version lifecycle over the file system.

Every ``poll_seconds`` each model's base path is scanned. As in TF Serving, the server reflects the disk: a version
folder that disappears is unloaded, a version that appears under a number (including a number served before, or the
same number with new files) is loaded fresh, a version that fails to load is logged once and retried with back-off
without blocking the versions that do load, and folder names that are not integers are ignored. The
``model_version_policy`` (latest N, all, specific) and the version labels come from ``--model_config_file``
(TF Serving's ``model_config_list`` text format) or default to "latest 1" for ``--model_base_path``.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mtl.errors import MtlError
from mtl.serving._loader import LoadedModel, load, versions

log = logging.getLogger("mtl.serve")

START, LOADING, AVAILABLE, END = "START", "LOADING", "AVAILABLE", "END"  # TF Serving's state names
MAX_BACKOFF_SECONDS = 300.0


class ServingError(Exception):
    """A request the server refuses, with TF Serving's canonical error ``code`` (``NOT_FOUND``, ...)."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code


@dataclass(frozen=True)
class VersionPolicy:
    """TF Serving's ``model_version_policy``: ``latest`` (the ``count`` highest), ``all``, or ``specific``."""

    kind: str = "latest"
    count: int = 1
    specific: tuple[int, ...] = ()

    def candidates(self, present: list[int]) -> list[int]:
        """The versions on disk this policy may serve, in the order they are tried (newest first)."""
        newest_first = sorted(present, reverse=True)
        if self.kind == "specific":
            return [v for v in newest_first if v in self.specific]
        return newest_first

    def wanted(self) -> int | None:
        """How many versions to keep available (``None``: every candidate)."""
        return self.count if self.kind == "latest" else None


@dataclass
class _Version:
    """One version folder as the server knows it: state, the loaded model, load failures."""

    number: int
    identity: tuple
    state: str = START
    model: LoadedModel | None = None
    error: str = ""
    failures: int = 0
    retry_at: float = 0.0


def _identity(folder: Path) -> tuple:
    """What tells a re-exported version from the one served before: inode, size, mtime and ctime of the key files
    (ctime changes with every new file, even one copied with its old mtime, or one that reuses a freed inode)."""
    parts: list[Any] = []
    for path in (folder, folder / "saved_model.pb", folder / "variables" / "variables.index",
                 folder / "assets" / "mtl_metadata.json"):
        try:
            stat = path.stat()
            parts.append((stat.st_ino, stat.st_size, stat.st_mtime_ns, stat.st_ctime_ns))
        except OSError:
            parts.append(None)
    return tuple(parts)


def _short(exc: BaseException, folder: Path) -> str:
    """A one-line load error without the server's paths (they stay in the server log)."""
    text = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
    for path in (str(folder), str(folder.parent), str(folder.parent.parent)):
        text = text.replace(path, "<version>" if path == str(folder) else "<base>")
    return text[:300]


class ModelVersions:
    """One model: its base path, version policy and labels, and the versions loaded from it."""

    def __init__(self, name: str, base_path: str | Path, policy: VersionPolicy | None = None,
                 labels: dict[str, int] | None = None, poll_seconds: float = 1.0,
                 loader: Callable[[Path], LoadedModel] = load) -> None:
        self.name = name
        self.base_path = Path(base_path)
        self.policy = policy or VersionPolicy()
        self.labels = dict(labels or {})
        self.poll_seconds = poll_seconds
        self._loader = loader
        self._versions: dict[int, _Version] = {}
        self._available: dict[int, _Version] = {}  # replaced as a whole, so readers need no lock
        self._lock = threading.Lock()

    # ------------------------------------------------------------------ polling
    def poll(self, now: float | None = None) -> None:
        """Bring the loaded versions in line with the disk and the policy (never raises for a bad version)."""
        with self._lock:
            self._poll(time.monotonic() if now is None else now)

    def _poll(self, now: float) -> None:
        present = {v: _identity(self.base_path / str(v)) for v in versions(self.base_path)}
        for number, record in list(self._versions.items()):
            if number in present and present[number] == record.identity:
                continue
            if record.state == AVAILABLE:
                self._unload(record, "removed from disk" if number not in present else "changed on disk")
            if number in present:  # a new export under a number seen before: a fresh version
                self._versions[number] = _Version(number, present[number])
            elif record.state != END or record.error:
                record.state, record.error = END, ""
        for number, identity in present.items():
            self._versions.setdefault(number, _Version(number, identity))

        keep: set[int] = set()
        wanted = self.policy.wanted()
        for number in self.policy.candidates(list(present)):
            if wanted is not None and len(keep) >= wanted:
                break
            record = self._versions[number]
            if record.state != AVAILABLE and record.failures and now < record.retry_at:
                continue  # failing: backing off, the next version may serve meanwhile
            if record.state != AVAILABLE:
                self._load(record, now)
            if record.state == AVAILABLE:
                keep.add(number)
        for number, record in self._versions.items():
            if record.state == AVAILABLE and number not in keep:
                self._unload(record, "no longer wanted by the version policy")
        self._available = {n: r for n, r in self._versions.items() if r.state == AVAILABLE}

    def _load(self, record: _Version, now: float) -> None:
        folder = self.base_path / str(record.number)
        record.state = LOADING
        try:
            model = self._loader(folder)
        except Exception as exc:  # a broken version must never stop the server or the other versions
            message = _short(exc, folder)
            record.failures += 1
            delay = min(max(self.poll_seconds, 1.0) * 2 ** record.failures, MAX_BACKOFF_SECONDS)
            record.retry_at = now + delay
            if message != record.error:  # logged once per distinct failure, not at every retry
                log.error("model %s version %d not loaded (%s): %s; retrying with back-off", self.name,
                          record.number, folder, message if isinstance(exc, MtlError) else f"{exc!r}"[:500])
            record.state, record.error = END, message
            return
        record.model = model
        record.state, record.error, record.failures = AVAILABLE, "", 0
        log.info("model %s: version %d available (%s)", self.name, record.number, folder)

    def _unload(self, record: _Version, why: str) -> None:
        """Stop serving ``record``; requests already holding its model finish with it."""
        record.model = None
        record.state = END
        log.info("model %s: version %d unloaded (%s)", self.name, record.number, why)

    # ------------------------------------------------------------------ requests
    def resolve(self, version: int | None = None, label: str | None = None) -> tuple[int, LoadedModel, dict]:
        """``(version, model, signature_defs)`` for a request, or ``ServingError`` as TF Serving answers it."""
        available = self._available
        if label is not None:
            if label not in self.labels:
                raise ServingError("INVALID_ARGUMENT", f"Unrecognized servable version label: {label}")
            version = self.labels[label]
        if version is None:
            if not available:
                raise ServingError("NOT_FOUND", f"Servable not found for request: Latest({self.name})")
            version = max(available)
        record = available.get(version)
        model = record.model if record is not None else None
        if model is None:  # never loaded, or unloaded by the poller just now
            raise ServingError("NOT_FOUND", f"Servable not found for request: Specific({self.name}, {version})")
        return version, model, model.runner.signature_defs

    def status(self, version: int | None = None) -> list[dict]:
        """TF Serving's ``model_version_status`` entries: every version seen (newest first), or the one asked for."""
        snapshot = list(self._versions.values())  # the poller may add versions meanwhile
        records = sorted((r for r in snapshot if r.state != START), key=lambda r: -r.number)
        if version is not None:
            records = [r for r in records if r.number == version]
            if not records:
                raise ServingError("NOT_FOUND", f"Could not find version {version} of model {self.name}")
        elif not records:
            raise ServingError("NOT_FOUND", f"Could not find any versions of model {self.name}")
        return [{"version": r.number, "state": r.state, "error_code": "UNKNOWN" if r.error else "OK",
                 "error_message": r.error} for r in records]


@dataclass
class ModelRegistry:
    """All served models by name, polled together by one background thread."""

    models: dict[str, ModelVersions]
    poll_seconds: float = 1.0
    _stop: threading.Event = field(default_factory=threading.Event, repr=False)
    _thread: threading.Thread | None = field(default=None, repr=False)

    def model(self, name: str) -> ModelVersions:
        found = self.models.get(name)
        if found is None:
            raise ServingError("NOT_FOUND", f"Servable not found for request: Latest({name})")
        return found

    def poll(self) -> None:
        for model in self.models.values():
            try:
                model.poll()
            except Exception:  # the poller must outlive any surprise on disk
                log.exception("polling model %s failed", model.name)

    def start(self, watch: bool = True) -> None:
        """Poll once now (start-up never waits for a broken version), then every ``poll_seconds`` if ``watch``
        (``poll_seconds`` 0: once only, as TF Serving's ``--file_system_poll_wait_seconds=0``)."""
        self.poll()
        if watch and self.poll_seconds > 0 and self._thread is None:
            self._stop.clear()
            self._thread = threading.Thread(target=self._loop, name="mtl-version-poll", daemon=True)
            self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=30)
            self._thread = None

    def _loop(self) -> None:
        while not self._stop.wait(self.poll_seconds):
            self.poll()

    @classmethod
    def for_base_path(cls, base_path: str | Path, name: str | None = None, poll_seconds: float = 1.0) -> ModelRegistry:
        """One model served from ``base_path`` with TF Serving's default policy (the newest version)."""
        base = Path(base_path)
        name = name or base.name
        return cls({name: ModelVersions(name, base, poll_seconds=poll_seconds)}, poll_seconds)

    @classmethod
    def from_config_file(cls, path: str | Path, poll_seconds: float = 1.0) -> ModelRegistry:
        """The models of a ``--model_config_file`` (TF Serving's ``model_config_list`` text proto)."""
        return cls({m.name: m for m in read_model_config(path, poll_seconds)}, poll_seconds)


def read_model_config(path: str | Path, poll_seconds: float = 1.0) -> list[ModelVersions]:
    """Parse ``model_config_list { config { name base_path model_version_policy version_labels } ... }``."""
    from google.protobuf import text_format
    from tensorflow_serving.config import model_server_config_pb2

    where = f"--model_config_file {path}"
    file = Path(path)
    if not file.is_file():
        raise MtlError("no such file", where=where)
    config = model_server_config_pb2.ModelServerConfig()
    try:
        text_format.Parse(file.read_text(encoding="utf-8"), config)
    except (text_format.ParseError, UnicodeDecodeError) as exc:
        raise MtlError(f"not a model_config_list text proto: {str(exc).splitlines()[0]}", where=where) from None
    if config.WhichOneof("config") != "model_config_list" or not config.model_config_list.config:
        raise MtlError("holds no model_config_list { config { ... } }", where=where)
    models: list[ModelVersions] = []
    for i, entry in enumerate(config.model_config_list.config):
        at = f"{where}: config {i + 1}"
        if not entry.name or "/" in entry.name or ":" in entry.name:
            raise MtlError(f"name {entry.name!r} must be non-empty, without '/' or ':'", where=at)
        if any(m.name == entry.name for m in models):
            raise MtlError(f"model name {entry.name!r} is given twice", where=at)
        if not entry.base_path:
            raise MtlError(f"model {entry.name!r} has no base_path", where=at)
        if entry.model_platform not in ("", "tensorflow"):
            raise MtlError(f"model_platform {entry.model_platform!r}: only 'tensorflow' is served", where=at)
        choice = entry.model_version_policy.WhichOneof("policy_choice")
        if choice == "specific":
            numbers = tuple(entry.model_version_policy.specific.versions)
            if not numbers:
                raise MtlError(f"model {entry.name!r}: specific {{ versions: ... }} lists no version", where=at)
            policy = VersionPolicy("specific", specific=numbers)
        elif choice == "all":
            policy = VersionPolicy("all")
        else:
            count = entry.model_version_policy.latest.num_versions if choice == "latest" else 1
            policy = VersionPolicy("latest", count=max(count, 1))
        labels = dict(entry.version_labels)
        if policy.kind == "specific":
            stray = {k: v for k, v in labels.items() if v not in policy.specific}
            if stray:
                raise MtlError(f"model {entry.name!r}: label(s) {stray} point at versions the policy never serves",
                               where=at)
        models.append(ModelVersions(entry.name, entry.base_path, policy, labels, poll_seconds))
    return models


__all__ = ["AVAILABLE", "END", "LOADING", "ModelRegistry", "ModelVersions", "ServingError", "VersionPolicy",
           "read_model_config"]
