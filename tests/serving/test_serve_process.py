"""``mtl serve`` as a real process on a free 127.0.0.1 port, hit over real HTTP."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time

import httpx
import pytest
from conftest import ROOT


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.slow
def test_mtl_serve_over_http(exported_model: dict) -> None:
    port, grpc_port = _free_port(), _free_port()
    env = {**os.environ, "PYTHONPATH": str(ROOT), "TF_CPP_MIN_LOG_LEVEL": "2"}
    process = subprocess.Popen(
        [sys.executable, "-m", "mtl.cli", "serve", "--model_base_path", str(exported_model["base"]),
         "--model_name", "adult", "--rest_api_port", str(port), "--port", str(grpc_port)],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env=env)
    url = f"http://127.0.0.1:{port}/v1/models/adult"
    try:
        deadline = time.monotonic() + 90
        while True:
            assert process.poll() is None, process.stdout.read().decode()[-2000:]
            assert time.monotonic() < deadline, "server did not come up"
            try:
                if httpx.get(url, timeout=2).status_code == 200:
                    break
            except httpx.TransportError:
                time.sleep(0.3)
        assert httpx.get(url).json()["model_version_status"][0]["state"] == "AVAILABLE"
        rows = json.loads(exported_model["test_frame"].head(2).to_json(orient="records"))
        answer = httpx.post(f"{url}:predict", json={"instances": rows}, timeout=30)
        assert answer.status_code == 200
        assert len(answer.json()["predictions"]) == 2
        bad = httpx.post(f"{url}:predict", content=b"nope", timeout=30)
        assert bad.status_code == 400 and "error" in bad.json()
        assert httpx.post(f"{url}:predict", json={"inputs": {k: [v] for k, v in rows[0].items()}}).status_code == 200
        _grpc_predict(grpc_port, rows, answer.json()["predictions"])
        metrics = httpx.get(f"http://127.0.0.1:{port}/monitoring/prometheus/metrics").text
        def count(protocol: str, status: str) -> str:
            return (f'mtl_serve_requests_total{{api="predict",model_name="adult",model_version="1",'
                    f'protocol="{protocol}",status="{status}"}}')

        assert f"{count('rest', 'OK')} 2.0" in metrics and f"{count('grpc', 'OK')} 1.0" in metrics
        assert f"{count('rest', 'INVALID_ARGUMENT')} 1.0" in metrics
        assert 'mtl_serve_request_latency_seconds_bucket{api="predict",le="+Inf",model_name="adult"' in metrics
    finally:
        process.kill()
        log = process.stdout.read().decode()
        process.wait(timeout=30)
    assert '127.0.0.1 "POST /v1/models/adult:predict" 200' in log  # the access log line
    assert "grpc predict ipv4:127.0.0.1:" in log


def _grpc_predict(port: int, rows: list[dict], expected: list[dict]) -> None:
    """The official TF Serving client stub against ``mtl serve``'s gRPC port."""
    import grpc
    import numpy as np
    import tensorflow as tf
    from tensorflow_serving.apis import predict_pb2, prediction_service_pb2_grpc

    request = predict_pb2.PredictRequest()
    request.model_spec.name = "adult"
    for name in rows[0]:
        values = [row[name] for row in rows]
        array = np.asarray(values, np.float32) if isinstance(values[0], float | int) else np.asarray(values, object)
        request.inputs[name].CopyFrom(tf.make_tensor_proto(array))
    with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
        answer = prediction_service_pb2_grpc.PredictionServiceStub(channel).Predict(request, timeout=30)
    np.testing.assert_allclose(tf.make_ndarray(answer.outputs["income"]), [p["income"] for p in expected], atol=1e-6)
