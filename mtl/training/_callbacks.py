"""Callbacks of a run: the loss-weight schedule, the weighting strategy's epoch hooks, the divergence guard,
early stopping and reduce-on-plateau whose state is checkpointed, and verified epoch checkpoints."""

from __future__ import annotations

import json
import math
import time
from pathlib import Path
from typing import Any

import keras
import numpy as np

from mtl.errors import MtlError
from mtl.training import _checkpoints as checkpoints
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
    """Stop at the first non-finite loss by raising ``TrainingDiverged`` before anything is saved.

    Checked once per ``steps_per_execution`` steps (Keras' batch end), on the training thread: marking it
    ``async_safe`` (Keras' callback thread) was measured to stall the loop (epochs 4-5x longer in wall time at the
    same CPU time, TF 2.21 / Keras 3.15), so the check stays synchronous.
    """

    def __init__(self) -> None:
        super().__init__()
        self.epoch = 0

    def on_epoch_begin(self, epoch: int, logs: dict | None = None) -> None:
        self.epoch = epoch

    def on_train_batch_end(self, batch: int, logs: dict | None = None) -> None:
        loss = (logs or {}).get("loss")
        if loss is not None and not math.isfinite(float(loss)):
            kept = f"the checkpoint of epoch {self.epoch} is kept" if self.epoch else "no epoch was completed"
            raise TrainingDiverged(
                f"training stopped in epoch {self.epoch + 1}, batch {batch + 1}: the loss became {float(loss)}; "
                f"{kept} (lower training.learning_rate?)"
            )


class EpochTensorBoard(keras.callbacks.Callback):
    """Each epoch's logs as TensorBoard scalars (``epoch_<name>``; ``train/`` and ``validation/`` runs, as Keras'
    ``TensorBoard`` writes them), and nothing per batch: Keras' callback converts every batch's logs, which turns
    off its asynchronous batch callbacks and costs a host sync per step group.

    Written with TensorBoard's own event writer (protocol buffers built in Python, one event per epoch and run)
    rather than ``tf.summary``, whose eager op per scalar cost about 20 ms an epoch (issue 11); the records are
    those ``tf.summary.scalar`` writes (a float32 tensor with the scalars plugin's metadata)."""

    def __init__(self, log_dir: str | Path) -> None:
        super().__init__()
        self.log_dir = Path(log_dir)
        self._writers: dict[str, Any] = {}

    def on_train_begin(self, logs: dict | None = None) -> None:
        from tensorboard.summary.writer.event_file_writer import EventFileWriter

        self._writers = {run: EventFileWriter(str(self.log_dir / run)) for run in ("train", "validation")}

    def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
        from tensorboard.compat.proto import event_pb2, summary_pb2
        from tensorboard.plugins.scalar import metadata
        from tensorboard.util import tensor_util

        by_run: dict[str, list] = {"train": [], "validation": []}
        scalar = metadata.create_summary_metadata(display_name=None, description=None)
        for name, value in (logs or {}).items():
            run, key = ("validation", name[4:]) if name.startswith("val_") else ("train", name)
            by_run[run].append(summary_pb2.Summary.Value(
                tag=f"epoch_{key}", metadata=scalar,
                tensor=tensor_util.make_tensor_proto(_number(value), dtype="float32")))
        for run, values in by_run.items():
            if values:
                self._writers[run].add_event(event_pb2.Event(wall_time=time.time(), step=epoch,
                                                             summary=summary_pb2.Summary(value=values)))
                self._writers[run].flush()

    def on_train_end(self, logs: dict | None = None) -> None:
        for writer in self._writers.values():
            writer.close()
        self._writers = {}


class ResumableEarlyStopping(keras.callbacks.EarlyStopping):
    """Keras' early stopping whose state (wait, best value and epoch, best weights) is checkpointed, so a resumed
    run stops, and restores, exactly where the uninterrupted run would."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._restored: tuple[dict, dict] | None = None

    def on_train_begin(self, logs: dict | None = None) -> None:
        super().on_train_begin(logs)
        if self._restored is not None:
            state, arrays = self._restored
            self.wait, self.best, self.best_epoch = state["wait"], state["best"], state["best_epoch"]
            self.stopped_epoch = state["stopped_epoch"]
            if state["best_weights"]:
                self.best_weights = [arrays[f"best{i:05d}"] for i in range(state["best_weights"])]

    def checkpoint_state(self) -> tuple[dict, dict[str, np.ndarray]]:
        weights = self.best_weights or []
        state = {"wait": self.wait, "best": _number(self.best) if self.best is not None else None,
                 "best_epoch": self.best_epoch, "stopped_epoch": self.stopped_epoch, "best_weights": len(weights)}
        return state, {f"best{i:05d}": np.asarray(w) for i, w in enumerate(weights)}

    def restore_state(self, state: dict, arrays: dict[str, np.ndarray]) -> None:
        self._restored = (state, arrays)
        self.on_train_begin()

    @property
    def restored_weights(self) -> bool:
        """Whether the weights at the end of training are those of ``best_epoch``."""
        return bool(self.restore_best_weights and self.best_weights is not None)


class ResumableReduceLROnPlateau(keras.callbacks.ReduceLROnPlateau):
    """Keras' reduce-on-plateau whose counters are checkpointed (the learning rate is an optimizer variable)."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._restored: dict | None = None

    def on_train_begin(self, logs: dict | None = None) -> None:
        super().on_train_begin(logs)
        if self._restored is not None:
            self.wait, self.best = self._restored["wait"], self._restored["best"]
            self.cooldown_counter = self._restored["cooldown_counter"]

    def checkpoint_state(self) -> tuple[dict, dict[str, np.ndarray]]:
        return {"wait": self.wait, "best": _number(self.best) if self.best is not None else None,
                "cooldown_counter": self.cooldown_counter}, {}

    def restore_state(self, state: dict, arrays: dict[str, np.ndarray]) -> None:
        self._restored = state


class EpochCheckpoint(keras.callbacks.Callback):
    """After every epoch, write ``epoch-NNNN.npz`` (every model and optimizer variable, the random generators'
    states, callbacks' arrays), then ``state.json`` naming it with its digest; keep the last two.

    Both files are written to a temporary file, flushed and renamed into place, so a run killed at any moment leaves
    the previous complete checkpoint. ``stateful`` callbacks (``checkpoint_state``/``restore_state``) are saved by
    class name. A failed write (full disk, read-only directory) is one ``MtlError`` line.
    """

    def __init__(self, directory: str | Path, stateful: list | None = None, run_record: dict | None = None) -> None:
        super().__init__()
        self.directory = Path(directory)
        self.stateful = list(stateful or [])
        self.run_record = dict(run_record or {})  # config digest and data fingerprint, repeated in every state
        self.entries: list[dict] = []

    @property
    def state_path(self) -> Path:
        return self.directory / checkpoints.STATE_FILE

    @property
    def epochs_saved(self) -> int:
        return self.entries[0]["epoch"] if self.entries else 0

    def restore(self, state: dict, checkpoint: checkpoints.Checkpoint) -> None:
        """Continue the list of checkpoints of ``state`` from ``checkpoint`` and give callbacks their state."""
        self.entries = [e for e in state["checkpoints"] if e["epoch"] <= checkpoint.epoch]
        for callback in self.stateful:
            saved = checkpoint.entry["callbacks"].get(type(callback).__name__)
            if saved is not None:
                callback.restore_state(saved, checkpoint.arrays)

    def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
        callbacks, arrays = {}, {}
        for callback in self.stateful:
            callbacks[type(callback).__name__], own = callback.checkpoint_state()
            arrays.update(own)
        file = f"epoch-{epoch + 1:04d}.npz"
        path = self.directory / file
        try:
            self.directory.mkdir(parents=True, exist_ok=True)
            data = checkpoints.pack(self.model, epoch + 1, arrays)
            checkpoints.write_bytes_atomic(path, data)
            logs = {k: _number(v) for k, v in (logs or {}).items()}
            entry = checkpoints.checkpoint_entry(file, data, epoch + 1, logs, callbacks,
                                                 bool(self.model.stop_training))
            entries = [entry] + [e for e in self.entries if e["epoch"] < epoch + 1][:checkpoints.KEEP - 1]
            state = {"format": checkpoints.FORMAT, "epochs_completed": epoch + 1, **self.run_record,
                     "checkpoints": entries, "logs": logs}
            checkpoints.write_bytes_atomic(self.state_path, json.dumps(state, indent=2).encode())
        except OSError as exc:
            error = checkpoints.disk_error(exc, path, self.epochs_saved)
            if error is None:
                raise
            raise error from None
        self.entries = entries
        keep = {e["file"] for e in entries}
        for old in self.directory.glob("epoch-*.npz"):
            if old.name not in keep:
                old.unlink(missing_ok=True)

    def read_state(self) -> dict[str, Any] | None:
        return checkpoints.read_state(self.directory)


def write_text_atomic(path: Path, text: str) -> None:
    """Write a file so that readers see the old or the new content, never half of it."""
    checkpoints.write_bytes_atomic(path, text.encode("utf-8"))


def _number(value: Any) -> float:
    try:
        return float(value)
    except (TypeError, ValueError):
        return float("nan")
