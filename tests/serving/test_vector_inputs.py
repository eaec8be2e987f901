"""An input of rank 2 (``[None, d]``, e.g. an embedding column) travels as a list per row over REST and as an
``[n, d]`` TensorProto over gRPC; the serving layer passes it to ``to_tensors`` whole and checks the shape."""

from __future__ import annotations

import grpc
import numpy as np
import pytest
import tensorflow as tf
from fastapi.testclient import TestClient
from tensorflow_serving.apis import predict_pb2, prediction_service_pb2_grpc

from mtl.serving import ModelRegistry, ModelVersions, create_app, start_grpc_server


@pytest.fixture(scope="module")
def registry(tmp_path_factory: pytest.TempPathFactory) -> ModelRegistry:
    class Sum(tf.Module):
        @tf.function(input_signature=[tf.TensorSpec([None, 3], tf.float32, name="v")])
        def serve(self, v: tf.Tensor) -> dict:
            return {"total": tf.reduce_sum(v, axis=1)}

    base = tmp_path_factory.mktemp("vector") / "sum"
    module = Sum()
    tf.saved_model.save(module, str(base / "1"), signatures={"serving_default": module.serve})
    registry = ModelRegistry({"sum": ModelVersions("sum", base)})
    registry.start(watch=False)
    return registry


def test_rest_rows_and_columns_of_vectors(registry: ModelRegistry) -> None:
    with TestClient(create_app(registry=registry)) as client:
        rows = client.post("/v1/models/sum:predict", json={"instances": [{"v": [1, 2, 3]}, {"v": [4, 5, 6]}]})
        assert rows.status_code == 200, rows.text
        assert rows.json() == {"predictions": [6.0, 15.0]}
        columns = client.post("/v1/models/sum:predict", json={"inputs": {"v": [[1, 1, 1], [2, 2, 2]]}})
        assert columns.json() == {"outputs": [3.0, 6.0]}
        unnamed = client.post("/v1/models/sum:predict", json={"instances": [[1, 0, 0]]})
        assert unnamed.json() == {"predictions": [1.0]}
        wrong = client.post("/v1/models/sum:predict", json={"instances": [{"v": [1, 2]}]})
        assert wrong.status_code == 400
        assert wrong.json()["error"] == "instances: column 'v', row 1: a list of 2 numbers; this feature takes 3"


def test_grpc_matrix_tensor(registry: ModelRegistry) -> None:
    server, port = start_grpc_server(registry, "127.0.0.1", 0)
    try:
        with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
            stub = prediction_service_pb2_grpc.PredictionServiceStub(channel)
            request = predict_pb2.PredictRequest()
            request.model_spec.name = "sum"
            request.inputs["v"].CopyFrom(tf.make_tensor_proto(np.arange(6, dtype=np.float32).reshape(2, 3)))
            answer = stub.Predict(request, timeout=30)
            np.testing.assert_allclose(tf.make_ndarray(answer.outputs["total"]), [3.0, 12.0])
            request.inputs["v"].CopyFrom(tf.make_tensor_proto(np.ones(3, np.float32)))
            with pytest.raises(grpc.RpcError) as info:
                stub.Predict(request, timeout=30)
            assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
            assert "column 'v', row 1: " in info.value.details() and "is not a list of numbers" in info.value.details()
    finally:
        server.stop(grace=None)


def test_rank_is_read_from_the_signature(registry: ModelRegistry) -> None:
    from mtl.serving import input_shapes

    _, model, _ = registry.model("sum").resolve()
    assert input_shapes(model) == {"v": (None, 3)}
