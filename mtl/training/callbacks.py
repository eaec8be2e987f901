"""Callbacks of a run: the loss-weight schedule, the weighting strategy's epoch hooks, the divergence guard
and atomic epoch checkpoints."""

from __future__ import annotations

import json
import math
import os
from pathlib import Path
from typing import Any

import keras

from mtl.errors import MtlError
from mtl.weighting import LossWeightSchedule


class LossWeightScheduler(keras.callbacks.Callback):
    """Assign each task's scheduled loss weight at the start of every epoch.

    The weights are non-trainable variables read inside the compiled train step, so the change
    takes effect without retracing; the train step logs the values it used (``<task>_weight``).
    """

    def __init__(self, schedules: dict[str, LossWeightSchedule]) -> None:
        super().__init__()
        self.schedules = schedules

    def on_epoch_begin(self, epoch: int, logs: dict | None = None) -> None:
        self.model.set_task_weights({name: s.value(epoch) for name, s in self.schedules.items()})


class WeightingEpochHooks(keras.callbacks.Callback):
    """Call the weighting strategy's epoch hooks (DWA sets its weights from the last two epochs' losses)."""

    def on_epoch_begin(self, epoch: int, logs: dict | None = None) -> None:
        self.model.weighting.on_epoch_begin(epoch)

    def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
        self.model.weighting.on_epoch_end(epoch, logs or {})


class TrainingDiverged(MtlError):
    """The loss became NaN or infinite; the last completed epoch's checkpoint is kept."""


class DivergenceGuard(keras.callbacks.Callback):
    """Stop at the first non-finite loss by raising ``TrainingDiverged`` before anything is saved."""

    def __init__(self) -> None:
        super().__init__()
        self.epoch = 0

    def on_epoch_begin(self, epoch: int, logs: dict | None = None) -> None:
        self.epoch = epoch

    def on_train_batch_end(self, batch: int, logs: dict | None = None) -> None:
        loss = (logs or {}).get("loss")
        if loss is not None and not math.isfinite(float(loss)):
            raise TrainingDiverged(
                f"training stopped in epoch {self.epoch + 1}, batch {batch + 1}: the loss became {float(loss)}; "
                "the checkpoint of the last completed epoch is kept (lower training.learning_rate?)"
            )


class EpochCheckpoint(keras.callbacks.Callback):
    """After every epoch, write ``last.weights.h5`` (model and optimizer state) then ``state.json``.

    Both are written to a temporary file and renamed into place, so a run killed at any moment
    leaves the previous complete checkpoint; ``state.json`` names the epochs it holds.
    """

    def __init__(self, directory: str | Path) -> None:
        super().__init__()
        self.directory = Path(directory)

    @property
    def weights_path(self) -> Path:
        return self.directory / "last.weights.h5"

    @property
    def state_path(self) -> Path:
        return self.directory / "state.json"

    def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
        self.directory.mkdir(parents=True, exist_ok=True)
        tmp = self.directory / "last.tmp.weights.h5"
        self.model.save_weights(tmp)
        os.replace(tmp, self.weights_path)
        state = {"epochs_completed": epoch + 1, "logs": {k: _number(v) for k, v in (logs or {}).items()}}
        write_text_atomic(self.state_path, json.dumps(state, indent=2))

    def read_state(self) -> dict[str, Any] | None:
        if not self.state_path.is_file() or not self.weights_path.is_file():
            return None
        return json.loads(self.state_path.read_text())


def write_text_atomic(path: Path, text: str) -> None:
    """Write a file so that readers see the old or the new content, never half of it."""
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


def _number(value: Any) -> float:
    try:
        return float(value)
    except (TypeError, ValueError):
        return float("nan")
