"""OS file locks for directories that one process at a time may write: a run directory, an export base.

Why ``fcntl.flock`` on a lock file: the kernel releases it when the holding process dies (even by SIGKILL), so
a lock is never stale; the holder writes its pid into the file so that a second writer can name it.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import re
import shutil
from collections.abc import Iterator
from pathlib import Path

from mtl.errors import MtlError

_TMP_EXPORT = re.compile(r"^\.tmp-\d+-(\d+)$")


class DirectoryLock:
    """An exclusive, non-blocking lock on ``directory/<name>``; ``acquire`` raises ``MtlError`` naming the
    holder's pid when another process holds it."""

    def __init__(self, directory: str | Path, name: str = ".lock", what: str = "this directory") -> None:
        self.path = Path(directory) / name
        self.what = what
        self._handle = None

    def acquire(self) -> DirectoryLock:
        try:
            handle = open(self.path, "a+")  # noqa: SIM115  held open until release()
        except OSError as exc:
            raise MtlError(f"cannot create the lock file: {exc.strerror.lower()}", where=str(self.path)) from None
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.seek(0)
            holder = handle.read().strip() or "unknown"
            handle.close()
            raise MtlError(f"another mtl process (pid {holder}) is writing {self.what}; wait for it to end",
                           where=str(self.path.parent)) from None
        handle.seek(0)
        handle.truncate()
        handle.write(str(os.getpid()))
        handle.flush()
        self._handle = handle
        return self

    def release(self) -> None:
        """Unlock (the file stays: removing it would let a waiting process lock a file nobody else sees)."""
        if self._handle is not None:
            fcntl.flock(self._handle, fcntl.LOCK_UN)
            self._handle.close()
            self._handle = None

    def __enter__(self) -> DirectoryLock:
        return self.acquire()

    def __exit__(self, *exc: object) -> None:
        self.release()


def pid_alive(pid: int) -> bool:
    """Whether a process with this pid exists (signal 0 checks without sending anything)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # it exists, owned by another user
        return True
    return True


def remove_stale_export_folders(model_dir: Path) -> list[Path]:
    """Remove ``.tmp-<version>-<pid>`` folders left by exports whose process is gone; returns them.

    Call it holding the export base's lock, so no live export of this process tree owns them."""
    removed = []
    for folder in model_dir.glob(".tmp-*"):
        match = _TMP_EXPORT.match(folder.name)
        if match and folder.is_dir() and (int(match.group(1)) == os.getpid() or not pid_alive(int(match.group(1)))):
            shutil.rmtree(folder, ignore_errors=True)
            removed.append(folder)
    return removed


@contextlib.contextmanager
def export_lock(model_dir: Path) -> Iterator[None]:
    """Hold ``model_dir``'s export lock and clear the folders of dead exports first."""
    with DirectoryLock(model_dir, ".export.lock", f"exports of {model_dir}"):
        remove_stale_export_folders(model_dir)
        yield
