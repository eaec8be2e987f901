"""The one interface every weighting strategy implements, and the registry of strategies by name.

A strategy is a Keras layer so that its state (learned log-variances, GradNorm weights, DWA's loss
history, RLW's seed) lives in ``keras.Variable``s that are saved with the model and checkpointed with
its weights, and are read and written inside the compiled train step.

``MultiTaskModel.train_step`` asks the strategy in one of two ways:
- loss level (``uses_gradients = False``): ``task_weights(task_losses, step)`` gives each task's weight,
  and the total loss is ``sum(weight * loss) + extra_loss()``;
- gradient level (``uses_gradients = True``): the step computes each task's gradient of its weighted loss
  (weights from ``task_weights``) and ``combine(task_gradients, shared_vars, task_losses)`` merges the
  gradients of the shared variables (those that receive a gradient from two or more tasks); every other
  variable gets its own task's gradient.
"""

from __future__ import annotations

from typing import Any, ClassVar

import keras


class WeightingStrategy(keras.layers.Layer):
    """Base class: equal weights, no extra loss, gradients summed."""

    key: ClassVar[str] = ""
    uses_gradients: ClassVar[bool] = False
    min_tasks: ClassVar[int] = 2

    def __init__(self, task_names: list[str], **kwargs: Any) -> None:
        super().__init__(name=kwargs.pop("name", f"weighting_{self.key}"), **kwargs)
        self.task_names = list(task_names)

    # ------------------------------------------------------------------ hooks asked by train_step
    def task_weights(self, task_losses: dict[str, Any], step: Any) -> dict[str, Any]:
        """Each task's loss weight for this step (tensors; may depend on trainable variables)."""
        return {name: keras.ops.convert_to_tensor(1.0) for name in self.task_names}

    def extra_loss(self) -> Any | None:
        """A term added to the total loss (e.g. the uncertainty regulariser), or None."""
        return None

    def combine(self, task_gradients: dict[str, list[Any]], shared_vars: list[Any],
                task_losses: dict[str, Any]) -> list[Any]:
        """One gradient per shared variable from the tasks' gradients of their weighted losses."""
        return [keras.ops.sum(keras.ops.stack([task_gradients[n][i] for n in self.task_names]), axis=0)
                for i in range(len(shared_vars))]

    # ------------------------------------------------------------------ epoch hooks (called by a callback)
    def on_epoch_begin(self, epoch: int) -> None:
        """Python-side update before an epoch (eager)."""

    def on_epoch_end(self, epoch: int, logs: dict) -> None:
        """Python-side update after an epoch, with the epoch's logs (eager)."""

    def params(self) -> dict[str, Any]:
        """The strategy's hyper-parameters, enough with ``key`` and ``task_names`` to rebuild it."""
        return {}


def flatten(gradients: list[Any]) -> Any:
    """Concatenate a list of gradient tensors into one vector."""
    return keras.ops.concatenate([keras.ops.reshape(g, (-1,)) for g in gradients], axis=0)


def unflatten(vector: Any, like: list[Any]) -> list[Any]:
    """Split a vector back into tensors shaped like ``like``."""
    out, start = [], 0
    for ref in like:
        size = 1
        for d in ref.shape:
            size *= int(d)
        out.append(keras.ops.reshape(vector[start:start + size], ref.shape))
        start += size
    return out
