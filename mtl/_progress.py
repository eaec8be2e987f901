"""What a long command shows while it works, and what it keeps quiet.

Why a file descriptor and not an environment variable: TensorFlow's start-up lines (absl's ``WARNING: All log
messages before absl::InitializeLog()``, ``cudart_stub``, ``cpu_feature_guard``, ``failed call to cuInit``) are
written by C++ code before absl logging is initialised, so ``TF_CPP_MIN_LOG_LEVEL`` does not reach them. They are
caught by pointing file descriptor 2 at a temporary file while TensorFlow is imported and its devices initialised;
every other line written meanwhile is passed on.
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import sys
import tempfile
import time
from collections.abc import Iterator

__all__ = ["STARTUP_NOISE", "quiet_tensorflow_startup", "stage"]

log = logging.getLogger("mtl")

# The lines TensorFlow 2.21 prints on a CPU-only machine at import and device initialisation (none is an error).
STARTUP_NOISE = re.compile(
    r"All log messages before absl::InitializeLog|cudart_stub|cpu_feature_guard|To enable the following "
    r"instructions|cuInit|cuda_platform|Unable to register cu(?:DNN|FFT|BLAS) factory|computation_placer")


def quiet_tensorflow_startup() -> None:
    """Import TensorFlow and initialise its devices with its start-up lines filtered out of stderr.

    Does nothing when TensorFlow is already imported (its start-up lines are then printed already)."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    if "tensorflow" in sys.modules:
        return
    sys.stderr.flush()
    saved = os.dup(2)
    with tempfile.TemporaryFile() as captured:
        os.dup2(captured.fileno(), 2)
        try:
            import tensorflow as tf

            tf.config.list_physical_devices()  # device initialisation: where "failed call to cuInit" is printed
        finally:
            sys.stderr.flush()
            os.dup2(saved, 2)
            os.close(saved)
            captured.seek(0)
            lines = captured.read().decode("utf-8", errors="replace").splitlines(keepends=True)
            sys.stderr.write("".join(line for line in lines if not STARTUP_NOISE.search(line)))
            sys.stderr.flush()


@contextlib.contextmanager
def stage(what: str) -> Iterator[None]:
    """Log ``what ...`` on entry and ``what: done in 3.2 s`` on exit: a step with no progress of its own
    (SMOTE, an export) says that it is working and how long it took."""
    log.info("%s ...", what)
    start = time.perf_counter()
    yield
    log.info("%s: done in %.1f s", what, time.perf_counter() - start)
