"""``MultiTaskModel``: a functional Keras model with masked, weighted task losses.

The masked task losses and the loss-weight variables live in ``compute_task_losses`` /
``compute_loss`` (backend-neutral ``keras.ops``); ``train_step`` owns only the gradient tape.
Each task's loss is averaged over the rows that carry its label (their weight is > 0), not over
the batch, and under a ``tf.distribute`` strategy over those rows on all replicas.
"""

from __future__ import annotations

from typing import Any

import keras
import tensorflow as tf

from mtl.tasks import Task, task_from_config


def masked_mean(per_example: Any, weight: Any) -> tuple[Any, Any]:
    """``(sum(loss * weight) / count, count)`` with ``count`` = rows whose weight is > 0.

    Under a distribution strategy the count is summed over replicas, so that summing the replicas'
    gradients (what Keras does) gives the gradient of the global masked mean.
    """
    weight = keras.ops.cast(weight, per_example.dtype)
    labelled = keras.ops.cast(weight > 0, per_example.dtype)
    count = keras.ops.sum(labelled)
    context = tf.distribute.get_replica_context()
    if context is not None and context.num_replicas_in_sync > 1:
        count = context.all_reduce(tf.distribute.ReduceOp.SUM, count)
    total = keras.ops.sum(keras.ops.where(labelled > 0, per_example * weight, 0.0))
    return total / keras.ops.maximum(count, 1.0), count


def _labels_where_weighted(labels: Any, weight: Any) -> Any:
    """Labels with unweighted rows zeroed, so that a NaN placeholder never reaches a loss or its gradient."""
    flat_weight = keras.ops.reshape(weight, (-1,) + (1,) * (len(labels.shape) - 1))
    return keras.ops.where(flat_weight > 0, labels, keras.ops.zeros_like(labels))


@keras.saving.register_keras_serializable("mtl")
class MultiTaskModel(keras.Model):
    """A functional model whose outputs are a dict keyed by task name.

    Build it with ``MultiTaskModel(inputs=..., outputs=..., tasks=[task.get_config(), ...])``.
    Train on ``(features, labels, weights)`` batches where ``labels`` and ``weights`` are dicts keyed
    by task; a weight of 0 means "no label for this task on this row".
    """

    def __init__(self, *args: Any, tasks: list[dict] | None = None, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.task_configs = list(tasks or [])
        self.tasks: dict[str, Task] = {c["name"]: task_from_config(c) for c in self.task_configs}
        missing = set(self.tasks) - set(self.output)
        if missing:
            raise ValueError(f"tasks {sorted(missing)} have no output of the same name")
        self.task_weights = {
            name: keras.Variable(1.0, trainable=False, dtype="float32", name=f"{name}_weight") for name in self.tasks
        }
        self.loss_tracker = keras.metrics.Mean(name="loss")
        self.task_loss_trackers = {name: keras.metrics.Mean(name=f"{name}_loss") for name in self.tasks}
        self.task_metrics = {name: task.make_metrics() for name, task in self.tasks.items()}

    # ------------------------------------------------------------------ losses
    def compute_task_losses(self, y: dict, y_pred: dict, sample_weight: dict | None) -> dict[str, tuple]:
        """``{task: (masked mean loss, labelled row count)}``."""
        out = {}
        for name, task in self.tasks.items():
            weight = self._row_weight(sample_weight, name, y[name])
            per_example = task.per_example_loss(_labels_where_weighted(y[name], weight), y_pred[name])
            out[name] = masked_mean(per_example, weight)
        return out

    @staticmethod
    def _row_weight(sample_weight: dict | None, name: str, labels: Any) -> Any:
        if sample_weight is None:
            return keras.ops.ones((keras.ops.shape(labels)[0],), "float32")
        return keras.ops.reshape(keras.ops.cast(sample_weight[name], "float32"), (-1,))

    def combine_task_losses(self, task_losses: dict[str, tuple]) -> Any:
        """The total loss: the weighted sum of the task losses plus regularisation losses."""
        total = keras.ops.sum(
            keras.ops.stack([self.task_weights[name] * loss for name, (loss, _) in task_losses.items()])
        )
        if self.losses:
            total = total + keras.ops.sum(keras.ops.stack(self.losses))
        return total

    def compute_loss(self, x: Any = None, y: Any = None, y_pred: Any = None, sample_weight: Any = None,
                     training: bool = True) -> Any:
        return self.combine_task_losses(self.compute_task_losses(y, y_pred, sample_weight))

    # ------------------------------------------------------------------ steps
    def train_step(self, data: Any) -> dict:
        x, y, sample_weight = keras.utils.unpack_x_y_sample_weight(data)
        with tf.GradientTape() as tape:
            y_pred = self(x, training=True)
            task_losses = self.compute_task_losses(y, y_pred, sample_weight)
            loss = self.combine_task_losses(task_losses)
            scaled = self.optimizer.scale_loss(loss)
        variables = self.trainable_variables
        gradients = tape.gradient(scaled, variables)
        self.optimizer.apply(gradients, variables)
        logs = self._update_metrics(loss, task_losses, y, y_pred, sample_weight)
        logs.update({f"{name}_weight": variable.value for name, variable in self.task_weights.items()})
        logs["learning_rate"] = self.optimizer.learning_rate
        return logs

    def test_step(self, data: Any) -> dict:
        x, y, sample_weight = keras.utils.unpack_x_y_sample_weight(data)
        y_pred = self(x, training=False)
        task_losses = self.compute_task_losses(y, y_pred, sample_weight)
        return self._update_metrics(self.combine_task_losses(task_losses), task_losses, y, y_pred, sample_weight)

    def _update_metrics(self, loss: Any, task_losses: dict, y: dict, y_pred: dict, sample_weight: dict | None) -> dict:
        self.loss_tracker.update_state(loss)
        for name, (task_loss, count) in task_losses.items():
            self.task_loss_trackers[name].update_state(task_loss, sample_weight=count)
            weight = self._row_weight(sample_weight, name, y[name])
            labels = _labels_where_weighted(y[name], weight)
            self.tasks[name].update_metrics(self.task_metrics[name], labels, y_pred[name], weight)
        return {metric.name: metric.result() for metric in self.metrics}

    @property
    def metrics(self) -> list:
        tracked = [self.loss_tracker, *self.task_loss_trackers.values()]
        return tracked + [m for name in self.tasks for m in self.task_metrics[name]]

    # ------------------------------------------------------------------ weights and config
    def set_task_weights(self, weights: dict[str, float]) -> None:
        """Assign loss weights; read inside the compiled step, so a callback may change them any time."""
        for name, value in weights.items():
            self.task_weights[name].assign(float(value))

    def get_task_weights(self) -> dict[str, float]:
        return {name: float(keras.ops.convert_to_numpy(v)) for name, v in self.task_weights.items()}

    def get_config(self) -> dict:
        return {**super().get_config(), "tasks": self.task_configs}
