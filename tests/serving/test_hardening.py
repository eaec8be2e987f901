"""``mtl serve`` against hostile clients, as a real process on 127.0.0.1 with short limits.

Every socket test is bounded in count (a few sockets) and in time (socket timeouts of 30 s that the server's 1-2 s
limits must beat); a test fails if the server keeps a socket open that it should have closed.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest
from conftest import ROOT

BOUND = 30.0  # seconds a client waits for the server to act; the server's limits are 1-2 s


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory, markers: dict, put_marker):  # noqa: ANN001, ANN201
    base = tmp_path_factory.mktemp("hardening") / "m"
    base.mkdir()
    put_marker(markers, base, "1", 1)
    port = _free_port()
    env = {**os.environ, "PYTHONPATH": str(ROOT), "TF_CPP_MIN_LOG_LEVEL": "2"}
    process = subprocess.Popen(
        [sys.executable, "-m", "mtl.cli", "serve", "--model_base_path", str(base), "--rest_api_port", str(port),
         "--port", "0", "--http_header_timeout_seconds", "1", "--http_body_timeout_seconds", "1",
         "--http_idle_timeout_seconds", "2", "--max_connections", "6", "--max_header_bytes", "4096",
         "--no-access_log"],
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=env)
    url = f"http://127.0.0.1:{port}/v1/models/m"
    deadline = time.monotonic() + 120
    while True:
        assert process.poll() is None, process.stderr.read().decode()[-2000:]
        assert time.monotonic() < deadline, "server did not come up"
        try:
            if httpx.get(url, timeout=2).status_code == 200:
                break
        except httpx.TransportError:
            time.sleep(0.3)
    yield {"port": port, "url": url}
    process.kill()
    process.wait(timeout=30)


def _connect(port: int) -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", port), timeout=BOUND)
    sock.settimeout(BOUND)
    return sock


def _closed_by_server(sock: socket.socket) -> bytes:
    """Read until the server closes the connection; returns what it sent (a socket timeout fails the test)."""
    received = b""
    while True:
        try:
            chunk = sock.recv(65536)
        except ConnectionResetError:
            return received
        if not chunk:
            return received
        received += chunk


def _alive(server: dict) -> None:
    answer = httpx.post(f"{server['url']}:predict", json={"instances": [1.0]}, timeout=BOUND)
    assert answer.status_code == 200 and answer.json() == {"predictions": [1.0]}


def test_an_idle_socket_is_closed(server: dict) -> None:
    with _connect(server["port"]) as sock:
        assert _closed_by_server(sock) == b""
    _alive(server)


def test_trickled_headers_are_cut_off(server: dict) -> None:
    with _connect(server["port"]) as sock:
        sock.sendall(b"POST /v1/models/m:predict HTTP/1.1\r\nhost: x\r\n")
        closed = False
        for _ in range(40):  # one header byte every 0.25 s, for at most 10 s
            try:
                sock.sendall(b"x")
            except (BrokenPipeError, ConnectionResetError):
                closed = True
                break
            time.sleep(0.25)
        if not closed:
            closed = _closed_by_server(sock) == b""
        assert closed
    _alive(server)


def test_a_body_that_never_comes_is_cut_off(server: dict) -> None:
    with _connect(server["port"]) as sock:
        sock.sendall(b"POST /v1/models/m:predict HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\n"
                     b"content-length: 1000\r\n\r\n{\"instances\": [")
        answer = _closed_by_server(sock)
        assert b" 200 " not in answer
    _alive(server)


@pytest.mark.parametrize("chunk", [None, 1024])
def test_oversized_headers_are_refused_however_they_arrive(server: dict, chunk: int | None) -> None:
    request = (b"GET /v1/models/m HTTP/1.1\r\nhost: x\r\nx-big: " + b"a" * 80_000 + b"\r\n\r\n")
    with _connect(server["port"]) as sock:
        try:
            if chunk is None:
                sock.sendall(request)
            else:
                for i in range(0, len(request), chunk):
                    sock.sendall(request[i:i + chunk])
        except (BrokenPipeError, ConnectionResetError):
            pass  # refused before it was all sent
        answer = _closed_by_server(sock)
    status = int(answer.split(b" ", 2)[1]) if answer.startswith(b"HTTP/1.1") else None
    assert status in (None, 400, 431)
    _alive(server)


def test_the_connection_cap_answers_503_and_recovers(server: dict) -> None:
    sockets = [_connect(server["port"]) for _ in range(6)]
    try:
        with _connect(server["port"]) as extra:
            answer = _closed_by_server(extra)
        assert answer.startswith(b"HTTP/1.1 503") and b"too many open connections" in answer
    finally:
        for sock in sockets:
            sock.close()
    deadline = time.monotonic() + BOUND
    while True:  # the server sees the closes on its next loop turn
        try:
            _alive(server)
            break
        except (AssertionError, httpx.TransportError):
            assert time.monotonic() < deadline
            time.sleep(0.2)


@pytest.mark.parametrize("body", [
    b'{"instances": [' + b"9" * 401 + b"]}",
    b'{"instances": ["\\ud800"]}',
    b"[" * 100_000 + b"]" * 100_000,
    b'{"instances": [NaN, ' + b"9" * 401 + b"]}",
    b'{"instances": [NaN, "\\ud800"]}',
    b'{"x": NaN, "instances": ' + b"[" * 100_000 + b"]" * 100_000 + b"}",
    b'{"instances": [1.0, "' + b"\xff\xfe" + b'"]}',
])
def test_the_former_500_bodies_are_400_with_one_line_and_no_path(server: dict, body: bytes) -> None:
    answer = httpx.post(f"{server['url']}:predict", content=body, timeout=BOUND)
    assert answer.status_code == 400, answer.text
    error = answer.json()["error"]
    assert "\n" not in error and "/tmp" not in error and str(Path.home()) not in error
    assert len(json.dumps(answer.json())) < 1000
