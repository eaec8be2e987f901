"""Data-parallel training on ``tf.distribute``: the strategy of a process and the loop that drives the model's own
``train_step`` under it.

Why a loop of our own: Keras 3's ``fit`` fails under ``MultiWorkerMirroredStrategy`` (its symbolic first-batch build
reduces a per-replica batch); ``strategy.distribute_datasets_from_function`` and ``strategy.run(train_step)`` inside
a ``tf.function`` are public API and work. The loop calls the callbacks in the order ``fit`` does, so the schedules,
weighting hooks, early stopping, reduce-on-plateau and checkpoints behave as in one process.

Why every global batch is cut into per-replica parts (and not sharded by whole batches): a step then sees exactly
the rows of the single-process step with the same number, so a run on N workers follows the single-process run
(within floating-point summation order), and each row is seen once per epoch across the cluster. Metrics are
global: Keras' metric variables sum on read over all replicas (AUC's confusion counts over all workers' rows).
"""

from __future__ import annotations

import contextlib
import errno
import json
import socket
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import keras
import tensorflow as tf

from mtl.errors import MtlError
from mtl.training._checkpoints import model_variables


@dataclass
class Cluster:
    """A ``TF_CONFIG`` read and checked: every worker's ``host:port`` (the chief first) and this process's index."""

    addresses: list[str]
    index: int

    @property
    def is_chief(self) -> bool:
        return self.index == 0


@dataclass
class Distribution:
    """The ``tf.distribute`` strategy of this process and its place in the cluster (worker 0 is the chief)."""

    strategy: tf.distribute.Strategy
    worker_index: int = 0
    worker_count: int = 1

    @property
    def is_chief(self) -> bool:
        return self.worker_index == 0

    @property
    def replicas(self) -> int:
        return int(self.strategy.num_replicas_in_sync)


_active: Distribution | None = None
_joined: dict[str, Distribution] = {}  # TF_CONFIG -> the multi-worker distribution this process joined with it


def active() -> Distribution | None:
    """The distribution this process trains under, or None for ordinary one-process training."""
    return _active


@contextlib.contextmanager
def activated(distribution: Distribution | None) -> Iterator[Distribution | None]:
    """Make ``distribution`` the one ``mtl.training`` builds and fits models under, for the ``with`` block."""
    global _active
    previous, _active = _active, distribution
    try:
        yield distribution
    finally:
        _active = previous


def scope() -> contextlib.AbstractContextManager:
    """The active strategy's scope (variables created in it are mirrored), or a no-op."""
    return _active.strategy.scope() if _active is not None else contextlib.nullcontext()


def is_chief() -> bool:
    """Whether this process writes the run directory (always, in one process)."""
    return _active is None or _active.is_chief


def fit_function(model: keras.Model) -> Callable[..., Any]:
    """``model.fit``, or under a distribution the loop with the same arguments."""
    if _active is None:
        return model.fit
    distribution = _active
    return lambda x, **kwargs: fit(model, distribution, x, **kwargs)


def local_model(model: keras.Model, rebuild: Callable[[], keras.Model]) -> keras.Model:
    """After distributed training, a copy of ``model`` (every model and optimizer variable) built by ``rebuild``
    outside the strategy, which evaluation, saving and export use as in one process; ``model`` in one process."""
    if _active is None:
        return model
    copy = rebuild()  # its optimizer is built (_compiled_model)
    for target, source in zip(model_variables(copy), model_variables(model), strict=True):
        target.assign(source.numpy())
    return copy


def barrier(distribution: Distribution) -> None:
    """Wait until every worker gets here (an all-reduce of one number): workers end together, so the chief's
    post-training work (evaluation, export) is not mistaken by TensorFlow's coordination service for a lost worker."""
    if distribution.worker_count > 1:
        strategy = distribution.strategy
        tf.function(lambda: strategy.run(lambda: tf.distribute.get_replica_context().all_reduce(
            tf.distribute.ReduceOp.SUM, tf.constant(1.0))))()


# ----------------------------------------------------------------------------- making a strategy
def make_distribution(strategy: str, environ: dict[str, str], timeout_seconds: float) -> Distribution | None:
    """The distribution ``training.distribute.strategy`` names; ``multi_worker`` joins the cluster of ``TF_CONFIG``.

    Checked first, each as one line: a missing or malformed ``TF_CONFIG``, this worker's port in use, a chief that
    cannot be reached within ``timeout_seconds``.
    """
    if strategy == "none":
        return None
    if strategy == "mirrored":  # the GPUs, else every logical CPU device (one, unless configured otherwise)
        devices = tf.config.list_logical_devices("GPU") or tf.config.list_logical_devices("CPU")
        return Distribution(tf.distribute.MirroredStrategy([device.name for device in devices]))
    text = environ.get("TF_CONFIG")
    cluster = read_tf_config(text)
    if text in _joined:  # a process joins its cluster once (TensorFlow's server cannot restart); later runs reuse it
        return _joined[text]
    check_port_free(cluster.addresses[cluster.index], cluster.index)
    if not cluster.is_chief:
        wait_for_chief(cluster.addresses[0], cluster.index, timeout_seconds)
    options = tf.distribute.experimental.CommunicationOptions(
        implementation=tf.distribute.experimental.CommunicationImplementation.RING)
    resolver = tf.distribute.cluster_resolver.TFConfigClusterResolver()
    multi = tf.distribute.MultiWorkerMirroredStrategy(cluster_resolver=resolver, communication_options=options)
    if multi.num_replicas_in_sync != len(cluster.addresses):
        raise MtlError(f"{multi.num_replicas_in_sync} replicas on {len(cluster.addresses)} workers; mtl trains "
                       "one replica per worker (one device each)", where="TF_CONFIG")
    _joined[text] = Distribution(multi, cluster.index, len(cluster.addresses))
    return _joined[text]


def read_tf_config(text: str | None) -> Cluster:
    """Parse and check ``TF_CONFIG``: ``{"cluster": {"worker": [...], "chief": [...]?}, "task": {"type", "index"}}``."""
    if not text:
        raise MtlError("training.distribute.strategy is multi_worker but TF_CONFIG is not set; set it (docs/scaling.md)"
                       " or start the workers with mtl train --workers N", where="TF_CONFIG")
    try:
        config = json.loads(text)
    except json.JSONDecodeError as exc:
        raise MtlError(f"not JSON: {exc.msg} at character {exc.pos}", where="TF_CONFIG") from None
    if not isinstance(config, dict) or not isinstance(config.get("cluster"), dict) \
            or not isinstance(config.get("task"), dict):
        raise MtlError('must be a JSON object with "cluster" and "task"', where="TF_CONFIG")
    cluster, task = config["cluster"], config["task"]
    unknown = sorted(set(cluster) - {"chief", "worker"})
    if unknown:
        raise MtlError(f"cluster has {unknown}; mtl trains with a chief and workers only", where="TF_CONFIG")
    roles = {role: cluster.get(role, []) for role in ("chief", "worker")}
    for role, addresses in roles.items():
        if not isinstance(addresses, list) or not all(isinstance(a, str) for a in addresses):
            raise MtlError(f"cluster.{role} must be a list of \"host:port\" strings", where="TF_CONFIG")
        for address in addresses:
            host, _, port = address.rpartition(":")
            if not host or not (port.isascii() and port.isdigit()) or not 0 < int(port) < 65536:
                raise MtlError(f"cluster.{role}: {address!r} is not host:port", where="TF_CONFIG")
    if len(roles["chief"]) > 1:
        raise MtlError("cluster.chief must name one address", where="TF_CONFIG")
    addresses = roles["chief"] + roles["worker"]
    if not addresses:
        raise MtlError("cluster names no worker", where="TF_CONFIG")
    if len(set(addresses)) < len(addresses):
        raise MtlError("cluster names an address twice", where="TF_CONFIG")
    role, index = task.get("type"), task.get("index", 0)
    if not isinstance(role, str) or role not in roles or not roles[role]:
        raise MtlError(f"task.type {role!r} is not a role of the cluster ({', '.join(r for r in roles if roles[r])})",
                       where="TF_CONFIG")
    if not isinstance(index, int) or isinstance(index, bool) or not 0 <= index < len(roles[role]):
        raise MtlError(f"task.index {index!r} is not in 0..{len(roles[role]) - 1} for {role}", where="TF_CONFIG")
    return Cluster(addresses, index + (len(roles["chief"]) if role == "worker" else 0))


def check_port_free(address: str, index: int) -> None:
    """This worker's port must be free: TensorFlow's gRPC server would otherwise share it with another server."""
    port = int(address.rpartition(":")[2])
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind(("", port))
        except OSError as exc:
            why = "in use" if exc.errno == errno.EADDRINUSE else exc.strerror.lower()
            raise MtlError(f"port {port} of worker {index} ({address}) is {why}", where="TF_CONFIG") from None


def wait_for_chief(address: str, index: int, timeout_seconds: float) -> None:
    """Wait until the chief's port accepts connections; one line naming it after ``timeout_seconds``."""
    host, _, port = address.rpartition(":")
    deadline = time.monotonic() + timeout_seconds
    while True:
        try:
            with socket.create_connection((host.strip("[]"), int(port)), timeout=2):
                return
        except OSError:
            if time.monotonic() >= deadline:
                raise MtlError(f"worker {index} cannot reach the chief at {address} within {timeout_seconds:g} s "
                               "(training.distribute.timeout_seconds)", where="TF_CONFIG") from None
            time.sleep(0.2)


# ----------------------------------------------------------------------------- the loop
def replica_part(batch: Any, replica: int, replicas: int) -> Any:
    """Rows ``[replica * n // replicas, (replica + 1) * n // replicas)`` of each tensor of a batch of ``n`` rows."""
    rows = tf.shape(tf.nest.flatten(batch)[0], out_type=tf.int64)[0]
    start, stop = rows * replica // replicas, rows * (replica + 1) // replicas
    return tf.nest.map_structure(lambda tensor: tensor[start:stop], batch)


def fit(model: keras.Model, distribution: Distribution, x: tf.data.Dataset, validation_data: tf.data.Dataset | None
        = None, epochs: int = 1, initial_epoch: int = 0, callbacks: list | None = None, verbose: int = 0,
        shuffle: bool = False) -> None:
    """Train like ``model.fit(x, validation_data=..., epochs=..., initial_epoch=..., callbacks=...)`` under the
    distribution: ``x`` and ``validation_data`` are datasets of global batches (each step's rows across the
    cluster); ``shuffle`` must be False (the dataset orders each epoch)."""
    del shuffle  # the batches come ordered from to_dataset
    strategy = distribution.strategy
    steps = int(x.cardinality())
    per_call = max(1, min(int(getattr(model, "steps_per_execution", 1) or 1), steps))
    train = _distributed_dataset(strategy, x)
    val = _distributed_dataset(strategy, validation_data) if validation_data is not None else None
    val_steps = int(validation_data.cardinality()) if validation_data is not None else 0
    _build_metrics(strategy, model, x.element_spec)
    train_steps = _steps_function(strategy, model, model.train_step)
    test_steps = _steps_function(strategy, model, model.test_step)
    callback_list = keras.callbacks.CallbackList(callbacks or [], add_history=False, add_progbar=verbose != 0,
                                                 model=model, verbose=verbose, epochs=epochs, steps=steps)
    model.stop_training = False
    callback_list.on_train_begin()
    training_logs: dict | None = None
    for epoch in range(initial_epoch, epochs):
        model.reset_metrics()
        callback_list.on_epoch_begin(epoch)
        logs: dict = {}
        iterator = iter(train)
        done = 0
        while done < steps:
            count = min(per_call, steps - done)
            callback_list.on_train_batch_begin(done)
            logs = train_steps(iterator, tf.constant(count))
            done += count
            callback_list.on_train_batch_end(done - 1, logs)
            if model.stop_training:
                break
        epoch_logs = dict(logs)
        if val is not None:
            model.reset_metrics()
            callback_list.on_test_begin()
            val_logs: dict = {}
            val_iterator = iter(val)
            done = 0
            while done < val_steps:
                count = min(per_call, val_steps - done)
                callback_list.on_test_batch_begin(done)
                val_logs = test_steps(val_iterator, tf.constant(count))
                done += count
                callback_list.on_test_batch_end(done - 1, val_logs)
            callback_list.on_test_end(val_logs)
            epoch_logs.update({f"val_{name}": value for name, value in val_logs.items()})
        callback_list.on_epoch_end(epoch, epoch_logs)
        training_logs = epoch_logs
        if model.stop_training:
            break
    callback_list.on_train_end(logs=training_logs)


def _build_metrics(strategy: tf.distribute.Strategy, model: keras.Model, spec: Any) -> None:
    """Create every metric's variables before the step loop: Keras builds some (F1, R2) on their first update, and
    a ``tf.function`` cannot lift such initialisers out of its loop when a strategy has several local replicas.
    One evaluation step on a one-row batch whose row weights are all zero, then the metrics are reset."""
    def zeros(tensor_spec: tf.TensorSpec) -> tf.Tensor:
        shape = [1 if size is None else size for size in tensor_spec.shape]
        return tf.fill(shape, "") if tensor_spec.dtype == tf.string else tf.zeros(shape, tensor_spec.dtype)

    strategy.run(model.test_step, args=(tf.nest.map_structure(zeros, spec),))
    model.reset_metrics()


def _distributed_dataset(strategy: tf.distribute.Strategy, dataset: tf.data.Dataset) -> Any:
    replicas = int(strategy.num_replicas_in_sync)

    def parts(context: tf.distribute.InputContext) -> tf.data.Dataset:
        local = replicas // context.num_input_pipelines
        first = context.input_pipeline_id * local
        if local == 1:
            return dataset.map(lambda *batch: replica_part(batch, first, replicas))
        # several replicas in this process (mirrored): its replicas' parts, one element each, in replica order
        return dataset.flat_map(lambda *batch: tf.data.Dataset.range(local).map(
            lambda k: replica_part(batch, first + k, replicas)))

    return strategy.distribute_datasets_from_function(parts)


def _steps_function(strategy: tf.distribute.Strategy, model: keras.Model, step: Callable) -> Callable:
    """A ``tf.function`` running ``count`` steps on the replicas, returning the logs: the metrics read across all
    replicas (global), the other values (loss weights, learning rate) from the first replica (all hold the same)."""

    def run(iterator: Any) -> dict:
        return strategy.run(lambda batch: step(batch), args=(next(iterator),))

    @tf.function
    def steps(iterator: Any, count: tf.Tensor) -> dict:
        outputs = run(iterator)
        for _ in tf.range(count - 1):
            outputs = run(iterator)
        logs = {name: strategy.experimental_local_results(value)[0] for name, value in outputs.items()}
        logs.update(model.get_metrics_result())
        return logs

    return steps
