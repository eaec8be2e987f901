"""Serving latency: ``mtl serve`` over HTTP against a direct call of the loaded signature, in the same run.

Measures p50/p99 latency of a single-row ``:predict`` and rows/s at batch 1, 32 and 256; the ratio server/direct
is the server's overhead (HTTP, JSON parsing and validation, response formatting). The server runs as a separate
process (``mtl serve`` on a free 127.0.0.1 port), the client is one ``httpx.Client`` with keep-alive.

    python benchmarks/serve_latency.py                      # trains a small model on Adult (1 epoch), exports it
    python benchmarks/serve_latency.py --model exports/adult --requests 500
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _export_small_model(tmp: Path) -> Path:
    import mtl
    from mtl.export import export_run

    config = mtl.load_config(Path(__file__).resolve().parents[1] / "configs" / "default.yaml",
                             ["training.epochs=1", "training.verbose=0"])
    result = mtl.train(config, tmp / "run")
    export_run(result.run_dir, tmp / "exports", "adult")
    return tmp / "exports" / "adult"


def _rows(model, n: int) -> list[dict]:  # noqa: ANN001
    """``n`` plausible raw rows: numeric 1..n, categorical values cycled through the training vocabulary."""
    vocab = model.metadata["features"]["categorical"]
    rows = []
    for i in range(n):
        row = {}
        for name, kind in model.inputs.items():
            row[name] = float(20 + i % 50) if kind == "float" else vocab[name][i % len(vocab[name])]
        rows.append(row)
    return rows


def _time(fn, repeats: int) -> np.ndarray:  # noqa: ANN001
    fn()  # warm-up (tracing, connection)
    out = np.empty(repeats)
    for i in range(repeats):
        start = time.perf_counter()
        fn()
        out[i] = time.perf_counter() - start
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", help="export base (BASE/NAME); default: train and export a small model")
    parser.add_argument("--requests", type=int, default=300, help="single-row requests to time")
    args = parser.parse_args()

    import httpx
    import tensorflow as tf

    from mtl.serving import load

    with tempfile.TemporaryDirectory(prefix="mtl-serve-bench-") as tmp:
        base = Path(args.model) if args.model else _export_small_model(Path(tmp))
        model = load(base)
        port = _free_port()
        env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
        server = subprocess.Popen([sys.executable, "-m", "mtl.cli", "serve", "--model_base_path", str(base),
                                   "--model_name", "adult", "--rest_api_port", str(port)],
                                  stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env)
        url = f"http://127.0.0.1:{port}/v1/models/adult"
        try:
            with httpx.Client(timeout=60) as client:
                deadline = time.monotonic() + 120
                while True:
                    try:
                        if client.get(url).status_code == 200:
                            break
                    except httpx.TransportError:
                        pass
                    if time.monotonic() > deadline or server.poll() is not None:
                        raise SystemExit("the server did not come up")
                    time.sleep(0.3)

                def direct(rows: list[dict]) -> None:
                    tensors = {n: tf.constant(np.asarray([r[n] for r in rows],
                                                         "float32" if k == "float" else object))
                               for n, k in model.inputs.items()}
                    model.signature(**tensors)

                def http(rows: list[dict]) -> None:
                    answer = client.post(f"{url}:predict", content=json.dumps({"instances": rows}))
                    assert answer.status_code == 200, answer.text

                print(f"model: {model.path}; {len(model.inputs)} inputs; {os.cpu_count()} CPUs; "
                      f"{args.requests} single-row requests")
                one = _rows(model, 1)
                served = _time(lambda: http(one), args.requests) * 1e3
                called = _time(lambda: direct(one), args.requests) * 1e3
                print("\n| single row | p50 ms | p99 ms |\n|---|---|---|")
                print(f"| `mtl serve` (HTTP) | {np.percentile(served, 50):.2f} | {np.percentile(served, 99):.2f} |")
                print(f"| direct signature call | {np.percentile(called, 50):.2f} | {np.percentile(called, 99):.2f} |")
                print(f"| ratio | {np.percentile(served, 50) / np.percentile(called, 50):.1f}x | "
                      f"{np.percentile(served, 99) / np.percentile(called, 99):.1f}x |")
                print("\n| batch | server rows/s | direct rows/s | ratio (direct / server) |\n|---|---|---|---|")
                for batch in (1, 32, 256):
                    rows = _rows(model, batch)
                    repeats = max(20, 2000 // batch)
                    s = batch / np.median(_time(lambda rows=rows: http(rows), repeats))
                    d = batch / np.median(_time(lambda rows=rows: direct(rows), repeats))
                    print(f"| {batch} | {s:,.0f} | {d:,.0f} | {d / s:.1f}x |")
        finally:
            server.kill()
            server.wait(timeout=30)


if __name__ == "__main__":
    main()
