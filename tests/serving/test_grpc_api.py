"""TF Serving's gRPC API, with the official ``tensorflow-serving-api`` stubs, against a real server on 127.0.0.1."""

from __future__ import annotations

import shutil

import grpc
import numpy as np
import pandas as pd
import pytest
import tensorflow as tf
from tensorflow_serving.apis import (
    get_model_metadata_pb2,
    get_model_status_pb2,
    model_service_pb2_grpc,
    predict_pb2,
    prediction_service_pb2_grpc,
)

from mtl.serving import ModelRegistry, ModelVersions, load, start_grpc_server, to_ndarray, to_tensor_proto

OUTPUTS = ["hours_per_week", "income", "income_label", "race", "race_classes"]


@pytest.fixture(scope="module")
def server(exported_model: dict, tmp_path_factory: pytest.TempPathFactory):  # noqa: ANN201
    base = tmp_path_factory.mktemp("grpc") / "adult"
    shutil.copytree(exported_model["base"], base)
    registry = ModelRegistry({"adult": ModelVersions("adult", base, labels={"stable": 1, "canary": 2})})
    registry.start(watch=False)
    grpc_server, port = start_grpc_server(registry, "127.0.0.1", 0)
    channel = grpc.insecure_channel(f"127.0.0.1:{port}")
    yield {"predict": prediction_service_pb2_grpc.PredictionServiceStub(channel),
           "models": model_service_pb2_grpc.ModelServiceStub(channel)}
    channel.close()
    grpc_server.stop(grace=None)


@pytest.fixture(scope="module")
def rows(exported_model: dict) -> pd.DataFrame:
    return exported_model["test_frame"].head(3).reset_index(drop=True)


def _request(rows: pd.DataFrame, name: str = "adult", **spec) -> predict_pb2.PredictRequest:  # noqa: ANN003
    request = predict_pb2.PredictRequest()
    request.model_spec.name = name
    for key, value in spec.items():
        if key == "version":
            request.model_spec.version.value = value
        else:
            setattr(request.model_spec, key, value)
    for column in rows.columns:
        values = rows[column].to_numpy()
        array = values.astype(np.float32) if values.dtype.kind in "fi" else values.astype(object)
        request.inputs[column].CopyFrom(tf.make_tensor_proto(array))
    return request


def _code(call, request) -> tuple[grpc.StatusCode, str]:  # noqa: ANN001
    with pytest.raises(grpc.RpcError) as info:
        call(request, timeout=30)
    return info.value.code(), info.value.details()


def test_predict_one_row_and_a_batch_equal_the_signature(server: dict, exported_model: dict,
                                                         rows: pd.DataFrame) -> None:
    expected = load(exported_model["version_dir"]).predict({c: rows[c].to_numpy() for c in rows.columns})
    batch = server["predict"].Predict(_request(rows), timeout=30)
    assert (batch.model_spec.name, batch.model_spec.version.value, batch.model_spec.signature_name) == (
        "adult", 1, "serving_default")
    assert sorted(batch.outputs) == OUTPUTS
    np.testing.assert_allclose(tf.make_ndarray(batch.outputs["income"]), expected["income"], atol=1e-6)
    np.testing.assert_allclose(tf.make_ndarray(batch.outputs["race"]), expected["race"], atol=1e-6)
    assert tf.make_ndarray(batch.outputs["race"]).shape == (3, 5)
    classes = [c.decode() for c in tf.make_ndarray(batch.outputs["race_classes"])[0]]
    assert classes == exported_model["result"].tasks["race"].classes_

    one = server["predict"].Predict(_request(rows.head(1), version=1, signature_name="serving_default"), timeout=30)
    np.testing.assert_allclose(tf.make_ndarray(one.outputs["income"]), expected["income"][:1], atol=1e-6)

    labelled = _request(rows.head(2), version_label="stable")
    labelled.output_filter.append("income")
    filtered = server["predict"].Predict(labelled, timeout=30)
    assert list(filtered.outputs) == ["income"] and filtered.model_spec.version.value == 1


def test_metadata_and_status(server: dict) -> None:
    request = get_model_metadata_pb2.GetModelMetadataRequest(metadata_field=["signature_def"])
    request.model_spec.name = "adult"
    answer = server["predict"].GetModelMetadata(request, timeout=30)
    assert answer.model_spec.name == "adult" and answer.model_spec.version.value == 1
    signatures = get_model_metadata_pb2.SignatureDefMap()
    assert answer.metadata["signature_def"].Unpack(signatures)
    serving = signatures.signature_def["serving_default"]
    assert serving.method_name == "tensorflow/serving/predict"
    assert serving.inputs["age"].dtype == tf.float32.as_datatype_enum
    assert serving.inputs["workclass"].dtype == tf.string.as_datatype_enum
    assert sorted(serving.outputs) == OUTPUTS

    status_request = get_model_status_pb2.GetModelStatusRequest()
    status_request.model_spec.name = "adult"
    status = server["models"].GetModelStatus(status_request, timeout=30)
    assert [(s.version, s.state, s.status.error_code) for s in status.model_version_status] == [
        (1, get_model_status_pb2.ModelVersionStatus.AVAILABLE, 0)]


def test_every_error_code(server: dict, rows: pd.DataFrame) -> None:
    predict = server["predict"].Predict
    invalid, not_found = grpc.StatusCode.INVALID_ARGUMENT, grpc.StatusCode.NOT_FOUND
    assert _code(predict, predict_pb2.PredictRequest()) == (invalid, "Missing ModelSpec")
    assert _code(predict, _request(rows, "other")) == (not_found, "Servable not found for request: Latest(other)")
    assert _code(predict, _request(rows, version=9)) == (
        not_found, "Servable not found for request: Specific(adult, 9)")
    assert _code(predict, _request(rows, version_label="canary")) == (  # a label on a version not loaded
        not_found, "Servable not found for request: Specific(adult, 2)")
    assert _code(predict, _request(rows, version_label="nope")) == (
        invalid, "Unrecognized servable version label: nope")
    assert _code(predict, _request(rows, signature_name="nope")) == (
        grpc.StatusCode.FAILED_PRECONDITION, 'Serving signature key "nope" not found.')

    missing = _request(rows)
    del missing.inputs["age"]
    code, message = _code(predict, missing)
    assert code == invalid and "age" in message
    wrong_type = _request(rows)
    wrong_type.inputs["age"].CopyFrom(tf.make_tensor_proto(np.array([b"forty"] * 3, dtype=object)))
    code, message = _code(predict, wrong_type)
    assert code == invalid and "forty" in message
    wrong_shape = _request(rows)
    wrong_shape.inputs["age"].CopyFrom(tf.make_tensor_proto(np.ones((3, 2), np.float32)))
    assert _code(predict, wrong_shape)[0] == invalid
    corrupt = _request(rows)
    corrupt.inputs["age"].tensor_content = b"\x00" * 5  # 5 bytes for 3 floats
    code, message = _code(predict, corrupt)
    assert code == invalid and "age" in message
    unknown_output = _request(rows)
    unknown_output.output_filter.append("colour")
    code, message = _code(predict, unknown_output)
    assert code == invalid and message.startswith("output tensor alias not found in signature: colour")

    metadata = server["predict"].GetModelMetadata
    no_field = get_model_metadata_pb2.GetModelMetadataRequest()
    no_field.model_spec.name = "adult"
    assert _code(metadata, no_field)[0] == invalid
    other_field = get_model_metadata_pb2.GetModelMetadataRequest(metadata_field=["graph"])
    other_field.model_spec.name = "adult"
    assert _code(metadata, other_field) == (invalid, "Metadata field graph is not supported")
    unknown_model = get_model_metadata_pb2.GetModelMetadataRequest(metadata_field=["signature_def"])
    unknown_model.model_spec.name = "other"
    assert _code(metadata, unknown_model)[0] == not_found

    status = server["models"].GetModelStatus
    assert _code(status, get_model_status_pb2.GetModelStatusRequest()) == (invalid, "Missing ModelSpec")
    unknown = get_model_status_pb2.GetModelStatusRequest()
    unknown.model_spec.name = "other"
    assert _code(status, unknown) == (not_found, "Could not find any versions of model other")
    unknown.model_spec.name = "adult"
    unknown.model_spec.version.value = 9
    assert _code(status, unknown) == (not_found, "Could not find version 9 of model adult")
    assert server["predict"].Predict(_request(rows), timeout=30).outputs  # still serving


def test_classify_is_unimplemented_as_for_a_predict_only_model(server: dict) -> None:
    from tensorflow_serving.apis import classification_pb2

    request = classification_pb2.ClassificationRequest()
    request.model_spec.name = "adult"
    assert _code(server["predict"].Classify, request)[0] == grpc.StatusCode.UNIMPLEMENTED



def _float_val(values: list[float], shape: list[int]):  # noqa: ANN202
    """A float32 TensorProto written with ``float_val`` (as some clients write it) instead of ``tensor_content``."""
    proto = tf.make_tensor_proto(np.float32(0.0))
    proto.float_val[:] = values
    for size in shape:
        proto.tensor_shape.dim.add(size=size)
    return proto


@pytest.mark.parametrize("proto", [
    tf.make_tensor_proto(np.float32([1.5, -2.0, 3.25])), tf.make_tensor_proto(np.float32([[1.0], [2.0]])),
    tf.make_tensor_proto(np.float32(7.0)), tf.make_tensor_proto(np.zeros((0, 3), np.float32)),
    tf.make_tensor_proto(np.asarray([b"Private", b" x ", b"\xff"], dtype=object)),
    tf.make_tensor_proto(np.asarray([["a", "b"], ["c", "d"]], dtype=object)), tf.make_tensor_proto(np.int64([4, 5])),
    tf.make_tensor_proto(np.float64([0.1])), _float_val([1.0, 2.0], [2]), _float_val([3.0], [1, 3]),
], ids=["floats", "column", "scalar", "empty", "bytes", "strings-2d", "int64", "float64", "float_val", "padded"])
def test_request_tensors_read_as_tf_make_ndarray_reads_them(proto) -> None:  # noqa: ANN001
    ours, theirs = to_ndarray(proto), tf.make_ndarray(proto)
    assert (ours.dtype, ours.shape) == (theirs.dtype, theirs.shape)
    np.testing.assert_array_equal(ours, theirs)
    if ours.dtype == np.float32:
        back = tf.make_ndarray(to_tensor_proto(ours))
        assert (back.dtype, back.shape) == (ours.dtype, ours.shape)
        np.testing.assert_array_equal(back, ours)
