"""``MultiTaskModel``: a functional Keras model with masked, weighted task losses.

The masked task losses and the loss-weight variables live in ``compute_task_losses`` /
``compute_loss`` (backend-neutral ``keras.ops``); ``train_step`` owns only the gradient tape.
Each task's loss is averaged over the rows that carry its label (their weight is > 0), not over
the batch, and under a ``tf.distribute`` strategy over those rows on all replicas.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import keras
import numpy as np
import tensorflow as tf

from mtl.errors import MtlError
from mtl.features import Feature, feature_from_config
from mtl.tasks import Task, decode_hierarchy, task_from_config
from mtl.weighting import WeightingStrategy, make_strategy


def masked_mean(per_example: Any, weight: Any) -> tuple[Any, Any]:
    """``(sum(loss * weight) / count, count)`` with ``count`` = rows whose weight is > 0.

    Under a distribution strategy the count is summed over replicas, so that summing the replicas'
    gradients (what Keras does) gives the gradient of the global masked mean.
    """
    weight = keras.ops.cast(weight, per_example.dtype)
    labelled = weight > 0
    count = keras.ops.sum(keras.ops.cast(labelled, per_example.dtype))
    replicas = replica_count()
    context = tf.distribute.get_replica_context()
    if replicas > 1:
        count = context.all_reduce(tf.distribute.ReduceOp.SUM, count)
    total = keras.ops.sum(keras.ops.where(labelled, per_example * weight, 0.0))
    mean = total / keras.ops.maximum(count, 1.0)
    if replicas > 1:
        # value: the global mean (every replica weighs, logs and tracks the same loss); gradient: this replica's
        # share times the replica count. ``train_step`` divides its loss by the count, so the replicas' summed
        # gradients are those of the global loss, also for terms that do not depend on the rows (a learned
        # strategy's own parameters and regulariser)
        share = mean * replicas
        global_mean = context.all_reduce(tf.distribute.ReduceOp.SUM, tf.stop_gradient(mean))
        mean = global_mean + (share - tf.stop_gradient(share))
    return mean, count


def replica_count() -> int:
    """Replicas training in sync (1 outside a ``tf.distribute`` strategy's replica context)."""
    context = tf.distribute.get_replica_context()
    return context.num_replicas_in_sync if context is not None else 1


def _labels_where_weighted(labels: Any, weight: Any) -> Any:
    """Labels with unweighted rows zeroed, so that a NaN placeholder never reaches a loss or its gradient."""
    flat_weight = keras.ops.reshape(weight, (-1,) + (1,) * (len(labels.shape) - 1))
    return keras.ops.where(flat_weight > 0, labels, keras.ops.zeros_like(labels))


@keras.saving.register_keras_serializable("mtl")
class MultiTaskModel(keras.Model):
    """A functional model whose outputs are a dict keyed by task name.

    Build it with ``MultiTaskModel(inputs=..., outputs=..., tasks=[task.get_config(), ...],
    features=[feature.get_config(), ...])`` (``mtl.model.build_model`` does). Train on ``(features, labels,
    weights)`` batches where ``labels`` and ``weights`` are dicts keyed by task; a weight of 0 means "no label for
    this task on this row". ``tasks`` and ``features`` (keyed by column) are the fitted task and feature objects:
    what export and serving read, by attribute.
    """

    def __init__(self, *args: Any, tasks: list[dict] | None = None, features: list[dict] | None = None,
                 weighting: dict | None = None, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.task_configs = list(tasks or [])
        self.feature_configs = list(features or [])
        self.weighting_config = dict(weighting or {"name": "fixed"})
        self.tasks: dict[str, Task] = {c["name"]: task_from_config(c) for c in self.task_configs}
        self.features: dict[str, Feature] = {c["column"]: feature_from_config(c) for c in self.feature_configs}
        self._input_names = {f.column: f.input_name for f in self.features.values() if f.column != f.input_name}
        missing = set(self.tasks) - set(self.output)
        if missing:
            raise ValueError(f"tasks {sorted(missing)} have no output of the same name")
        # assigned inside the step: under a distribution strategy every replica computes the same value
        self.task_weights = {
            name: keras.Variable(1.0, trainable=False, dtype="float32", name=f"{name}_weight",
                                 aggregation="only_first_replica") for name in self.tasks
        }
        self.weighting: WeightingStrategy = make_strategy(self.weighting_config, list(self.tasks))
        self.loss_tracker = keras.metrics.Mean(name="loss")
        self.task_loss_trackers = {name: keras.metrics.Mean(name=f"{name}_loss") for name in self.tasks}
        self.task_metrics = {name: task.make_metrics() for name, task in self.tasks.items()}
        # what the training dataset yields, turned into ``(features, labels, weights)`` at the start of each
        # training step; None: the dataset yields the batches (``mtl.training.StepGather`` is the other case)
        self.batch_gather: Callable[[Any], Any] | None = None
        # made under a tf.distribute strategy: its metric variables are distributed, the eager calls stay Keras'
        self._under_strategy = tf.distribute.has_strategy()
        self._compiled: dict[str, tuple[int, Callable]] = {}

    def __call__(self, inputs: Any, *args: Any, **kwargs: Any) -> Any:
        """A dict of inputs may be keyed by column name (the data stage, ``predict_raw``) or by the signature input
        name the graph's ``keras.Input`` carries (Keras layer names cannot hold every column name, e.g. a ``/``)."""
        if isinstance(inputs, dict) and self._input_names:
            inputs = {self._input_names.get(key, key): value for key, value in inputs.items()}
        return super().__call__(inputs, *args, **kwargs)

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

    def combine_task_losses(self, task_losses: dict[str, tuple], weights: dict | None = None) -> Any:
        """The total loss: the weighted sum of the task losses (weights: the ``task_weights`` variables
        unless given) plus regularisation losses."""
        weights = self.task_weights if weights is None else weights
        total = keras.ops.sum(
            keras.ops.stack([weights[name] * loss for name, (loss, _) in task_losses.items()])
        )
        if self.losses:
            total = total + keras.ops.sum(keras.ops.stack(self.losses))
        return total

    def compute_loss(self, x: Any = None, y: Any = None, y_pred: Any = None, sample_weight: Any = None,
                     training: bool = True) -> Any:
        return self.combine_task_losses(self.compute_task_losses(y, y_pred, sample_weight))

    # ------------------------------------------------------------------ steps
    def train_step(self, data: Any) -> dict:
        if self.batch_gather is not None:
            data = self.batch_gather(data)
        x, y, sample_weight = keras.utils.unpack_x_y_sample_weight(data)
        if self.weighting.uses_gradients:
            return self._gradient_level_step(x, y, sample_weight)
        fixed = self.weighting.key == "fixed"
        with tf.GradientTape() as tape:
            y_pred = self(x, training=True)
            task_losses = self.compute_task_losses(y, y_pred, sample_weight)
            weights = None if fixed else self.weighting.task_weights(
                {name: loss for name, (loss, _) in task_losses.items()}, self.optimizer.iterations)
            loss = self.combine_task_losses(task_losses, weights)
            extra = self.weighting.extra_loss()
            if extra is not None:
                loss = loss + extra
            scaled = self.optimizer.scale_loss(loss / replica_count())  # see masked_mean
        variables = self.trainable_variables
        gradients = _dense(tape.gradient(scaled, variables))
        self.optimizer.apply(gradients, variables)
        if weights is not None:
            self.set_task_weights(weights)
        return self._train_logs(loss, task_losses, y, y_pred, sample_weight)

    def _gradient_level_step(self, x: Any, y: dict, sample_weight: dict | None) -> dict:
        """One tape, one gradient per task loss; the strategy combines the shared variables' gradients."""
        names = list(self.tasks)
        with tf.GradientTape(persistent=True) as tape:
            y_pred = self(x, training=True)
            task_losses = self.compute_task_losses(y, y_pred, sample_weight)
            losses = {name: loss for name, (loss, _) in task_losses.items()}
            weights = {name: tf.identity(keras.ops.convert_to_tensor(w))  # the values used, before any update
                       for name, w in self.weighting.task_weights(losses, self.optimizer.iterations).items()}
            scaled = {name: self.optimizer.scale_loss(weights[name] * losses[name]) for name in names}
            regular = self.optimizer.scale_loss(keras.ops.sum(keras.ops.stack(self.losses))) if self.losses else None
        variables = self.trainable_variables
        per_task = {name: _global_gradients(tape.gradient(scaled[name], variables)) for name in names}
        regular_grads = tape.gradient(regular, variables) if regular is not None else [None] * len(variables)
        del tape
        shared = [i for i in range(len(variables)) if sum(per_task[n][i] is not None for n in names) >= 2]
        shared_task_grads = {n: [tf.convert_to_tensor(per_task[n][i]) for i in shared] for n in names}
        combined = self.weighting.combine(shared_task_grads, [variables[i] for i in shared], losses) if shared else []
        by_index = dict(zip(shared, combined, strict=True))
        gradients = []
        for i, variable in enumerate(variables):
            parts = [by_index[i]] if i in by_index else [per_task[n][i] for n in names if per_task[n][i] is not None]
            if regular_grads[i] is not None:
                parts.append(regular_grads[i])
            gradients.append(tf.add_n([tf.convert_to_tensor(p) for p in parts]) if parts
                             else keras.ops.zeros_like(variable))
        replicas = replica_count()
        if replicas > 1:  # every replica holds the global gradient; the optimizer sums the replicas' gradients
            gradients = [g / replicas for g in gradients]
        self.optimizer.apply(gradients, variables)
        self.set_task_weights(weights)
        loss = self.combine_task_losses(task_losses, weights)
        logs = self._train_logs(loss, task_losses, y, y_pred, sample_weight)
        for name in names:
            norm = keras.ops.sqrt(sum(keras.ops.sum(keras.ops.square(g)) for g in shared_task_grads[name])) \
                if shared else keras.ops.convert_to_tensor(0.0)
            logs[f"{name}_grad_norm"] = norm
        return logs

    def _train_logs(self, loss: Any, task_losses: dict, y: dict, y_pred: dict, sample_weight: dict | None) -> dict:
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
        return self.get_metrics_result()  # a metric group's dict of results flattened

    def get_metrics_result(self) -> dict:
        """Keras' hook, the metrics' results as one dict. Keras calls it eagerly after each training and evaluation
        loop; there it runs as one compiled function (an eager pass over the metrics, AUC's among them, cost about
        10 ms, twice an epoch: issue 11)."""
        if self._eager_call_compiles():
            return self._compiled_call("result", super().get_metrics_result)
        return super().get_metrics_result()

    def reset_metrics(self) -> None:
        """Keras' hook, called eagerly before each training and evaluation loop: one compiled function (assigning
        every metric variable eagerly cost about 6 ms a call)."""
        if self._eager_call_compiles():
            self._compiled_call("reset", super().reset_metrics)
        else:
            super().reset_metrics()

    def _eager_call_compiles(self) -> bool:
        return tf.executing_eagerly() and not self._under_strategy and not tf.distribute.has_strategy()

    def _compiled_call(self, key: str, function: Callable) -> Any:
        """``function`` run as a ``tf.function``, traced again when the metrics have made new variables (some
        build on their first update)."""
        variables = len(self.metrics_variables)
        if key not in self._compiled or self._compiled[key][0] != variables:
            self._compiled[key] = (variables, tf.function(function))
        return self._compiled[key][1]()

    @property
    def metrics(self) -> list:
        tracked = [self.loss_tracker, *self.task_loss_trackers.values()]
        return tracked + [m for name in self.tasks for m in self.task_metrics[name]]

    # ------------------------------------------------------------------ weights and config
    def set_task_weights(self, weights: dict[str, Any]) -> None:
        """Assign loss weights; read inside the compiled step, so a callback may change them any time.

        With a strategy other than ``fixed`` the step assigns the weights it used, for the logs."""
        for name, value in weights.items():
            value = float(value) if isinstance(value, (int, float)) else keras.ops.cast(value, "float32")
            self.task_weights[name].assign(value)

    def get_task_weights(self) -> dict[str, float]:
        return {name: float(keras.ops.convert_to_numpy(v)) for name, v in self.task_weights.items()}

    # ------------------------------------------------------------------ raw rows
    def predict_raw(self, columns: Any, where: str = "input", batch_size: int = 1024) -> dict[str, np.ndarray]:
        """Predict raw cells (a DataFrame or ``{column: values}``), parsed by each feature's kind with the same
        rule as training and serving; returns ``{task: outputs}`` as the export's ``serving_default`` gives them
        (label trees decoded)."""
        missing = [c for c in self.features if c not in columns]
        if missing:
            raise MtlError(f"missing column(s) {missing}; the model takes {list(self.features)}", where=where)
        parsed = {c: f.parse(np.asarray(columns[c], dtype=object), where=where) for c, f in self.features.items()}
        rows = len(next(iter(parsed.values())))
        parts: dict[str, list[np.ndarray]] = {name: [] for name in self.tasks}
        for start in range(0, rows, batch_size):
            batch = {c: v[start:start + batch_size] for c, v in parsed.items()}
            outputs = decode_hierarchy(self.tasks, self.predict_on_batch(batch))
            for name in self.tasks:
                parts[name].append(np.asarray(outputs[name]))
        return {name: _concatenate(values) for name, values in parts.items()}

    def set_tasks(self, tasks: dict[str, Task]) -> None:
        """Take the fitted state of ``tasks`` (e.g. a threshold chosen on validation after training), so that
        ``model.keras`` and exports carry it."""
        self.task_configs = [tasks[c["name"]].get_config() for c in self.task_configs]
        self.tasks = {c["name"]: task_from_config(c) for c in self.task_configs}

    def get_config(self) -> dict:
        return {**super().get_config(), "tasks": self.task_configs, "features": self.feature_configs,
                "weighting": self.weighting_config}


def _dense(gradients: list[Any]) -> list[Any]:
    """Embedding gradients (``IndexedSlices``, one slice per lookup) summed into dense tensors, in one process and
    under a distribution strategy alike. Why: Keras 3's optimizers square a sparse gradient slice by slice (Adam's
    second moment then counts a category seen twice in a batch as two squares, not as the square of its summed
    gradient), so the update would depend on how a batch's rows are split across replicas; a dense gradient gives
    the textbook update, the same on any number of workers. And TensorFlow's collective all-reduce of
    ``IndexedSlices`` inside the step loop fails with a shape mismatch between workers (checked with 2 workers)."""
    return [tf.convert_to_tensor(g) if isinstance(g, tf.IndexedSlices) else g for g in gradients]


def _global_gradients(gradients: list[Any]) -> list[Any]:
    """Under a distribution strategy, a task's gradients summed over replicas and divided by their count (see
    ``masked_mean``): the gradient of the global task loss, the same on every replica, which a gradient-level
    strategy combines as in one process. Unchanged in one process."""
    replicas = replica_count()
    present = [i for i, g in enumerate(gradients) if g is not None]
    if replicas == 1 or not present:
        return gradients
    summed = tf.distribute.get_replica_context().all_reduce(
        tf.distribute.ReduceOp.SUM, [tf.convert_to_tensor(gradients[i]) for i in present])
    out = list(gradients)
    for i, g in zip(present, summed, strict=True):
        out[i] = g / replicas
    return out


def _concatenate(parts: list[np.ndarray]) -> np.ndarray:
    """Batches of outputs; per-word outputs are padded to the widest batch."""
    if parts[0].ndim == 3:
        width = max(p.shape[1] for p in parts)
        parts = [np.pad(p, ((0, 0), (0, width - p.shape[1]), (0, 0))) for p in parts]
    return np.concatenate(parts)
