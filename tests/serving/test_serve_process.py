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
    port = _free_port()
    env = {**os.environ, "PYTHONPATH": str(ROOT), "TF_CPP_MIN_LOG_LEVEL": "2"}
    process = subprocess.Popen(
        [sys.executable, "-m", "mtl.cli", "serve", "--model_base_path", str(exported_model["base"]),
         "--model_name", "adult", "--rest_api_port", str(port)],
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
    finally:
        process.kill()
        process.wait(timeout=30)
