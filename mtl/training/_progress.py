"""Training progress: a Keras progress bar on a terminal, one line per epoch elsewhere (a log file, CI)."""

from __future__ import annotations

import sys
import time
from typing import Literal

import keras


def fit_verbosity(verbose: Literal["auto", 0, 1, 2]) -> Literal[0, 1, 2]:
    """``training.verbose`` resolved: ``auto`` is a bar (1) when stdout is a terminal, else one line per epoch (2)."""
    if verbose == "auto":
        return 1 if sys.stdout.isatty() else 2
    return verbose


class EpochLine(keras.callbacks.Callback):
    """Print one line per epoch to stdout: ``epoch 3/12 - 4.1 s - loss 0.4123 - ... - val_loss 0.4310``.

    Why not Keras' ``verbose=2``: it prints two lines per epoch and nothing that says how many epochs remain."""

    def __init__(self, epochs: int) -> None:
        super().__init__()
        self.epochs = epochs
        self._start = time.perf_counter()

    def on_epoch_begin(self, epoch: int, logs: dict | None = None) -> None:
        self._start = time.perf_counter()

    def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
        logs = {k: v for k, v in (logs or {}).items() if not k.endswith("_weight")}
        order = sorted(logs, key=lambda k: (k.startswith("val_"), k.removeprefix("val_") != "loss", k))
        shown = [f"{key} {float(logs[key]):.4g}" for key in order]  # loss first, then the rest, then val_ alike
        line = " - ".join([f"epoch {epoch + 1}/{self.epochs}", f"{time.perf_counter() - self._start:.1f} s", *shown])
        print(line, flush=True)
