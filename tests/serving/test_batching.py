"""``--enable_batching``: concurrent requests merge into one signature call, each gets its own rows back."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from mtl.errors import MtlError
from mtl.serving import (
    Batcher,
    BatchingParameters,
    Metrics,
    ModelRegistry,
    ModelVersions,
    create_app,
    read_batching_parameters,
)


@pytest.fixture(scope="module")
def doubling(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An export base with one version whose output ``y`` is twice its input ``x`` (so rows can be told apart)."""
    import tensorflow as tf

    class Double(tf.Module):
        @tf.function(input_signature=[tf.TensorSpec([None], tf.float32, name="x")])
        def serve(self, x: tf.Tensor) -> dict:
            return {"y": 2.0 * x}

    base = tmp_path_factory.mktemp("batching") / "double"
    module = Double()
    tf.saved_model.save(module, str(base / "1"), signatures={"serving_default": module.serve})
    return base


def test_concurrent_requests_merge_into_one_call(doubling: Path) -> None:
    metrics = Metrics(access_log=False)
    # a batch runs when it is full (4 rows); the long timeout only bounds a batch that never fills
    batcher = Batcher(BatchingParameters(max_batch_size=4, batch_timeout_micros=60_000_000, num_batch_threads=1),
                      metrics)
    registry = ModelRegistry({"double": ModelVersions("double", doubling)})
    try:
        with TestClient(create_app(registry=registry, run=batcher)) as client:
            registry.start(watch=False)

            def predict(i: int) -> list:
                answer = client.post("/v1/models/double:predict", json={"instances": [float(i)]})
                assert answer.status_code == 200, answer.text
                return answer.json()["predictions"]

            with ThreadPoolExecutor(4) as pool:
                answers = list(pool.map(predict, range(4)))
    finally:
        batcher.stop()
    assert answers == [[0.0], [2.0], [4.0], [6.0]]
    exposition = metrics.exposition().decode()
    assert 'mtl_serve_batch_rows_count{model_name="double",model_version="1"} 1.0' in exposition
    assert 'mtl_serve_batch_rows_sum{model_name="double",model_version="1"} 4.0' in exposition


def test_a_request_larger_than_a_batch_runs_alone_and_a_bad_one_never_joins(doubling: Path) -> None:
    batcher = Batcher(BatchingParameters(max_batch_size=2, batch_timeout_micros=60_000_000, num_batch_threads=1))
    registry = ModelRegistry({"double": ModelVersions("double", doubling)})
    registry.start(watch=False)
    try:
        with TestClient(create_app(registry=registry, run=batcher)) as client:
            bodies = [{"instances": [1.0, 2.0, 3.0]}, {"instances": [5.0]}, {"instances": ["x"]}, {"instances": [7.0]}]
            with ThreadPoolExecutor(4) as pool:
                answers = list(pool.map(lambda b: client.post("/v1/models/double:predict", json=b), bodies))
    finally:
        batcher.stop()
    assert answers[0].json() == {"predictions": [2.0, 4.0, 6.0]}  # larger than a batch: runs alone
    assert answers[1].json() == {"predictions": [10.0]} and answers[3].json() == {"predictions": [14.0]}
    assert answers[2].status_code == 400


def test_batching_parameters_file(tmp_path: Path) -> None:
    path = tmp_path / "batching.config"
    path.write_text("# TF Serving's keys\nmax_batch_size { value: 128 }\nbatch_timeout_micros { value: 500 }\n"
                    "max_enqueued_batches { value: 32 }\nnum_batch_threads { value: 2 }\n"
                    "pad_variable_length_inputs: { value: 0 }\n")
    assert read_batching_parameters(path) == BatchingParameters(128, 500, 32, 2)
    assert read_batching_parameters(None) == BatchingParameters()
    for text, needle in [("max_batch_sise { value: 2 }", "unknown key 'max_batch_sise'"),
                         ("max_batch_size: 2", "expected 'key { value: N }'"),
                         ("max_batch_size { value: 0 }", "max_batch_size must be >= 1")]:
        path.write_text(text)
        with pytest.raises(MtlError, match="--batching_parameters_file") as info:
            read_batching_parameters(path)
        assert needle in str(info.value)


def test_a_full_batch_queue_is_unavailable_over_grpc(doubling: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """With the one batch thread busy and ``max_enqueued_batches`` batches waiting, the next request gets TF
    Serving's ``UNAVAILABLE``; the waiting ones are then answered."""
    import threading

    import grpc
    import numpy as np
    import tensorflow as tf
    from tensorflow_serving.apis import predict_pb2, prediction_service_pb2_grpc

    from mtl.serving import _batching, start_grpc_server

    started, release = threading.Event(), threading.Event()
    real_call = _batching.call_signature

    def held_call(model, tensors):  # noqa: ANN001, ANN202
        started.set()
        release.wait(timeout=60)
        return real_call(model, tensors)

    monkeypatch.setattr(_batching, "call_signature", held_call)
    batcher = Batcher(BatchingParameters(max_batch_size=1, batch_timeout_micros=0, max_enqueued_batches=1,
                                         num_batch_threads=1))
    registry = ModelRegistry({"double": ModelVersions("double", doubling)})
    registry.start(watch=False)
    server, port = start_grpc_server(registry, "127.0.0.1", 0, run=batcher)
    channel = grpc.insecure_channel(f"127.0.0.1:{port}")
    try:
        predict = prediction_service_pb2_grpc.PredictionServiceStub(channel).Predict

        def request(x: float) -> predict_pb2.PredictRequest:
            message = predict_pb2.PredictRequest()
            message.model_spec.name = "double"
            message.inputs["x"].CopyFrom(tf.make_tensor_proto(np.float32([x])))
            return message

        running = predict.future(request(1.0), timeout=60)
        assert started.wait(timeout=60)  # the batch thread holds request 1
        waiting = predict.future(request(2.0), timeout=60)
        while batcher._queued_rows < 1:  # request 2 is queued (no time limit: it gets there or the test hangs)
            threading.Event().wait(0.01)
        with pytest.raises(grpc.RpcError) as refused:
            predict(request(3.0), timeout=60)
        assert refused.value.code() == grpc.StatusCode.UNAVAILABLE
        assert "queue" in refused.value.details()
        release.set()
        assert tf.make_ndarray(running.result().outputs["y"]).tolist() == [2.0]
        assert tf.make_ndarray(waiting.result().outputs["y"]).tolist() == [4.0]
    finally:
        release.set()
        channel.close()
        server.stop(grace=None)
        batcher.stop()
        registry.stop()


def test_a_larger_request_waiting_between_two_that_merge_loses_none(doubling: Path,
                                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    """Queue [1 row, 3 rows, 1 row] with ``max_batch_size`` 2: the two single rows merge past the larger request,
    and every request is answered (taking the second single row out of the queue once compared the requests' arrays,
    which raised for the 3-row one and lost the first)."""
    import threading

    import numpy as np

    from mtl.serving import _batching, load

    started, release = threading.Event(), threading.Event()
    real_call = _batching.call_signature

    def held_call(model, tensors):  # noqa: ANN001, ANN202
        started.set()
        release.wait(timeout=60)
        return real_call(model, tensors)

    monkeypatch.setattr(_batching, "call_signature", held_call)
    model = load(doubling)
    batcher = Batcher(BatchingParameters(max_batch_size=2, batch_timeout_micros=0, num_batch_threads=1))
    pool = ThreadPoolExecutor(4)
    try:
        inputs = [[1.0], [3.0], [5.0, 6.0, 7.0], [9.0]]
        answers = [pool.submit(batcher, model, {"x": np.float32(inputs[0])})]
        assert started.wait(timeout=60)  # the batch thread holds the first request
        queued = 0
        for values in inputs[1:]:  # queued in this order while the batch thread is held
            answers.append(pool.submit(batcher, model, {"x": np.float32(values)}))
            queued += len(values)
            while batcher._queued_rows < queued:
                threading.Event().wait(0.01)
        release.set()
        assert [a.result(timeout=60)["y"].tolist() for a in answers] == [[2.0 * v for v in x] for x in inputs]
    finally:
        release.set()
        batcher.stop()  # a request lost by the batch thread is then run alone, so no thread is left waiting
        pool.shutdown(wait=True)
