"""Verified epoch checkpoints of a run: what is written after every epoch and what ``--resume`` accepts.

``checkpoints/epoch-NNNN.npz`` holds every variable of the model (weights, the weighting strategy's state, the
random generators' states) and of the optimizer (moments, step count, learning rate), and the state arrays of
callbacks (early stopping's best weights). ``checkpoints/state.json``, written atomically after the file, lists the
last two checkpoints, newest first, each with the SHA-256 digest and size of its file, the epoch it holds, that
epoch's logs and the callbacks' state; it also records the digest of ``config.yaml`` and the data fingerprint.

Why ``.npz`` written from memory and not ``save_weights``: h5py writing to a full disk prints dozens of errors and
can crash the process; here the bytes are built in memory and one ordinary write either succeeds or raises
``OSError``. The digest is computed on the same bytes.
"""

from __future__ import annotations

import errno
import hashlib
import io
import json
import logging
import math
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from mtl.errors import MtlError

log = logging.getLogger("mtl")

FORMAT = 2
KEEP = 2
STATE_FILE = "state.json"
_FILE = re.compile(r"^epoch-(\d{4,})\.npz$")
_DISK_ERRORS = (errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EACCES, errno.EPERM, errno.EIO)


def sha256_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def write_bytes_atomic(path: Path, data: bytes) -> None:
    """Write ``data`` to a temporary file, flush it to disk, then rename it into place (readers see the old or
    the new file, never half of one, even after a power loss)."""
    tmp = path.with_name(f".{path.name}.tmp")
    try:
        with open(tmp, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    try:
        directory = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(directory)
        finally:
            os.close(directory)
    except OSError:  # some file systems cannot fsync a directory; the rename is done either way
        pass


def disk_error(exc: BaseException, fallback: Path, kept_epoch: int) -> MtlError | None:
    """The one-line error for a failed write (full disk, read-only, no permission), or None for other errors."""
    if not isinstance(exc, OSError) or exc.errno not in _DISK_ERRORS:
        return None
    kept = f"the checkpoint of epoch {kept_epoch} is kept" if kept_epoch else "no checkpoint was written yet"
    return MtlError(f"{exc.filename or fallback}: {os.strerror(exc.errno).lower()}; {kept}")


# ----------------------------------------------------------------------------- writing
def model_variables(model: Any) -> list[Any]:
    """Every variable a checkpoint restores: the model's (including seed generator states, which
    ``save_weights`` leaves out) and the optimizer's."""
    return list(model.variables) + list(model.optimizer.variables)


def pack(model: Any, epoch: int, extra: dict[str, np.ndarray]) -> bytes:
    """The ``.npz`` bytes of a checkpoint: ``v00000``... in ``model_variables`` order, ``epoch``, and ``extra``."""
    arrays = {f"v{i:05d}": np.asarray(v.numpy()) for i, v in enumerate(model_variables(model))}
    arrays.update(extra)
    arrays["epoch"] = np.asarray(epoch, dtype="int64")
    buffer = io.BytesIO()
    np.savez(buffer, **arrays)
    return buffer.getvalue()


def checkpoint_entry(file: str, data: bytes, epoch: int, logs: dict, callbacks: dict, stopped: bool) -> dict:
    return {"epoch": epoch, "file": file, "sha256": sha256_bytes(data), "bytes": len(data), "logs": logs,
            "callbacks": callbacks, "stopped": stopped}


# ----------------------------------------------------------------------------- reading and verifying
@dataclass
class Checkpoint:
    """A verified checkpoint chosen for a resume: its ``state.json`` entry and the arrays of its file."""

    entry: dict
    arrays: dict[str, np.ndarray]
    path: Path

    @property
    def epoch(self) -> int:
        return int(self.entry["epoch"])

    def restore(self, model: Any) -> None:
        """Assign every model and optimizer variable; a file that does not fit the model is one error line."""
        variables = model_variables(model)
        stored = sorted(k for k in self.arrays if re.fullmatch(r"v\d{5}", k))
        if len(stored) != len(variables):
            raise MtlError(f"holds {len(stored)} variables, the model built from config.yaml has {len(variables)}",
                           where=str(self.path))
        for key, variable in zip(stored, variables, strict=True):
            value = self.arrays[key]
            if tuple(value.shape) != tuple(variable.shape):
                raise MtlError(f"variable {variable.path} has shape {value.shape}, the model's is "
                               f"{tuple(variable.shape)} (was the data or the config changed?)", where=str(self.path))
        for key, variable in zip(stored, variables, strict=True):
            variable.assign(self.arrays[key])


def _bad_state(path: Path, why: str) -> MtlError:
    return MtlError(f"not a valid checkpoint state ({why}); nothing was changed", where=str(path))


def read_state(directory: Path) -> dict | None:
    """``state.json`` parsed and checked for shape (not yet against the run); None when there is none."""
    path = directory / STATE_FILE
    if not path.is_file():
        return None
    try:
        state = json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise _bad_state(path, f"not JSON: {str(exc).splitlines()[0]}") from None
    if not isinstance(state, dict):
        raise _bad_state(path, "not a JSON object")
    if state.get("format") != FORMAT:
        raise _bad_state(path, f"format {state.get('format')!r}, this mtl reads format {FORMAT}; "
                               "was the run made by an older mtl?")
    epochs = state.get("epochs_completed")
    entries = state.get("checkpoints")
    if not isinstance(epochs, int) or isinstance(epochs, bool):
        raise _bad_state(path, f"epochs_completed is {epochs!r}, not an integer")
    if not isinstance(entries, list) or not entries:
        raise _bad_state(path, "no checkpoints listed")
    for entry in entries:
        if not (isinstance(entry, dict) and isinstance(entry.get("epoch"), int) and isinstance(entry.get("file"), str)
                and _FILE.match(entry["file"]) and isinstance(entry.get("sha256"), str)
                and isinstance(entry.get("bytes"), int) and isinstance(entry.get("callbacks"), dict)
                and isinstance(entry.get("logs"), dict)):
            raise _bad_state(path, f"a malformed checkpoint entry {str(entry)[:80]!r}")
    if entries[0]["epoch"] != epochs:
        raise _bad_state(path, f"epochs_completed is {epochs} but the newest checkpoint holds epoch "
                               f"{entries[0]['epoch']}")
    if any(b["epoch"] >= a["epoch"] for a, b in zip(entries, entries[1:], strict=False)):
        raise _bad_state(path, "checkpoints not listed newest first")
    return state


def check_epochs(state: dict, directory: Path, epochs: int) -> None:
    """``epochs_completed`` must lie in 1..``training.epochs`` of the run's config."""
    done = state["epochs_completed"]
    if not 1 <= done <= epochs:
        raise _bad_state(directory / STATE_FILE, f"epochs_completed is {done}, the config trains 1 to {epochs}")
    if state["checkpoints"][-1]["epoch"] < 1:
        raise _bad_state(directory / STATE_FILE, f"a checkpoint of epoch {state['checkpoints'][-1]['epoch']}")


def choose_checkpoint(state: dict, directory: Path) -> Checkpoint:
    """The newest checkpoint whose file has its recorded size, digest and epoch; a corrupt newest one falls back
    to the older one (said in the log); none intact is one error line naming the newest file."""
    problems = []
    for entry in state["checkpoints"]:
        path = directory / entry["file"]
        problem = None
        try:
            data = path.read_bytes()
        except OSError as exc:
            data, problem = b"", f"cannot be read: {exc.strerror.lower()}"
        if problem is None and len(data) != entry["bytes"]:
            problem = f"has {len(data)} bytes, the checkpoint recorded {entry['bytes']} (truncated?)"
        elif problem is None and sha256_bytes(data) != entry["sha256"]:
            problem = "does not match its recorded SHA-256 digest (corrupted)"
        if problem is None:
            try:
                with np.load(io.BytesIO(data)) as npz:
                    arrays = {k: npz[k] for k in npz.files}
            except Exception as exc:  # numpy/zipfile raise many types for a damaged archive
                problem = f"cannot be read as a checkpoint ({type(exc).__name__})"
            else:
                if "epoch" not in arrays or int(arrays["epoch"]) != entry["epoch"]:
                    problem = f"does not hold epoch {entry['epoch']}"
        if problem is None:
            if problems:
                log.warning("%s; resuming from the older checkpoint of epoch %d instead", problems[0],
                            entry["epoch"])
            return Checkpoint(entry, arrays, path)
        problems.append(f"{path} {problem}")
    raise MtlError(f"{problems[0]}; no intact checkpoint to resume from; nothing was changed", where="--resume")


def check_history(path: Path, checkpoint: Checkpoint) -> None:
    """``history.csv`` must start with one row per epoch up to the checkpoint's, in order, its row of that epoch
    holding the loss the checkpoint recorded. Later rows (an epoch logged before a kill or a failed write) are
    dropped on resume and not read."""
    if not path.is_file():
        raise MtlError(f"missing; the checkpoint of epoch {checkpoint.epoch} needs its rows", where=str(path))
    try:
        history = pd.read_csv(path, nrows=checkpoint.epoch)
    except Exception as exc:  # pandas raises many types for a damaged CSV
        raise MtlError(f"cannot be read as CSV ({type(exc).__name__}); nothing was changed", where=str(path)) from None
    if "epoch" not in history or not pd.api.types.is_integer_dtype(history["epoch"]):
        raise MtlError("has no integer 'epoch' column; nothing was changed", where=str(path))
    rows = history["epoch"].tolist()
    if rows != list(range(checkpoint.epoch)):
        raise MtlError(f"holds epochs {_ranges(rows)}, the checkpoint needs 0 to {checkpoint.epoch - 1} in order; "
                       "nothing was changed", where=str(path))
    logged = history["loss"].iloc[-1] if "loss" in history else None
    recorded = checkpoint.entry["logs"].get("loss")
    if logged is None or recorded is None or not math.isclose(float(logged), float(recorded), rel_tol=1e-6):
        raise MtlError(f"the loss of epoch {checkpoint.epoch - 1} is {logged}, the checkpoint recorded {recorded}; "
                       "nothing was changed", where=str(path))


def _ranges(rows: list) -> str:
    return "none" if not rows else f"{rows[0]}..{rows[-1]} ({len(rows)} rows)"


def truncate_history(path: Path, epochs_completed: int) -> None:
    """Keep the rows of the epochs a checkpoint holds; later ones are re-run after a resume."""
    if len(path.read_text(encoding="utf-8").splitlines()) > epochs_completed + 1:
        buffer = io.StringIO()
        pd.read_csv(path, nrows=epochs_completed).to_csv(buffer, index=False)
        write_bytes_atomic(path, buffer.getvalue().encode())
