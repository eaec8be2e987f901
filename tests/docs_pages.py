"""Running the documentation's examples as a reader would (used by the ``test_docs*.py`` files).

A block marked runnable (a ``<!-- test -->`` line right before the fence) runs as written, in an empty folder
beside a link to ``configs/``, with this environment's ``mtl`` and ``python`` on the ``PATH``. The blocks of a page
run in order in one folder, as a reader types them; a process a block leaves running in the background
(``mtl serve ... &``) serves the page's later blocks and is stopped when the page ends. Python blocks share one
namespace per page.

The pages that train models are split over several test files (``PAGE_GROUPS``) so that pytest-xdist's
``--dist loadfile`` spreads them over its workers.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import re
import signal
import subprocess
import sys
import tempfile
from pathlib import Path

from conftest import ROOT

DOCS = ROOT / "docs"
PAGES = [*sorted(DOCS.glob("*.md")), ROOT / "README.md"]
RUNNABLE = re.compile(r"^<!-- test -->\n```(bash|python)\n(.*?)^```$", re.MULTILINE | re.DOTALL)

# Pages whose examples train models (a minute or more each), by the test file that runs them.
PAGE_GROUPS = {
    "serving": ["serving.md", "export-and-serve.md"],
    "guides": ["workflow.md", "runs.md", "low-label.md", "scaling.md"],
    "data": ["README.md", "getting-started.md", "streaming.md", "tabular-and-text.md"],
}


def page_path(name: str) -> Path:
    return ROOT / name if name == "README.md" else DOCS / name


def runnable_blocks(page: Path) -> list[tuple[str, str]]:
    """``(language, code)`` of each block of ``page`` marked runnable, in order."""
    return RUNNABLE.findall(page.read_text(encoding="utf-8"))


def trains(page: Path) -> bool:
    """Whether the page's runnable commands train a model (such a page belongs in ``PAGE_GROUPS``)."""
    return any(language == "bash" and re.search(r"mtl (train|tune)|run_training", code)
               for language, code in runnable_blocks(page))


@contextlib.contextmanager
def _servers_one_page_at_a_time(blocks: list[tuple[str, str]]):
    """Pages that start servers use the documented ports (8500, 8501, 6006); the test files run on two pytest-xdist
    workers, so such pages take turns (a lock file shared by the workers)."""
    if not any(re.search(r"mtl serve|tensorboard", code) for _, code in blocks):
        yield
        return
    with open(Path(tempfile.gettempdir()) / "mtl-docs-servers.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


def run_page(name: str, folder: Path) -> None:
    """Run every runnable block of page ``name`` in ``folder``; a failing block fails with its output."""
    blocks = runnable_blocks(page_path(name))
    with _servers_one_page_at_a_time(blocks):
        _run_blocks(name, blocks, folder)


def _run_blocks(name: str, blocks: list[tuple[str, str]], folder: Path) -> None:
    (folder / "configs").symlink_to(ROOT / "configs")
    path = f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"  # mtl and python of this venv
    env = {**os.environ, "PYTHONPATH": str(ROOT), "PATH": path}
    namespace: dict = {}
    sessions = []  # each bash block runs in a session of its own: what it leaves in the background is stopped below
    here = os.getcwd()
    os.chdir(folder)
    try:
        for number, (language, code) in enumerate(blocks, 1):
            if language == "python":
                exec(compile(code, f"{name} block {number}", "exec"), namespace)  # noqa: S102  the page's example
                continue
            # Output goes to a file, not a pipe: a background process holds its end open after the block ends.
            log = folder.parent / f"{folder.name}-block{number}.log"
            with open(log, "w") as sink:
                block = subprocess.Popen(["bash", "-euo", "pipefail", "-c", code], cwd=folder, env=env,
                                         stdout=sink, stderr=subprocess.STDOUT, start_new_session=True)
                sessions.append(block.pid)
                try:
                    block.wait(timeout=540)
                except subprocess.TimeoutExpired:
                    os.killpg(block.pid, signal.SIGKILL)
                    block.wait()
            assert block.returncode == 0, f"{name}, block {number}:\n{code}\n{log.read_text()[-5000:]}"
    finally:
        os.chdir(here)
        for session in sessions:
            try:
                os.killpg(session, signal.SIGTERM)
            except ProcessLookupError:
                pass  # nothing of it is left running
