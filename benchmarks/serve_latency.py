"""Serving latency: ``mtl serve`` over REST and gRPC against a direct call of the loaded signature, in one run.

Measures p50/p99 latency of a single-row predict and rows/s at batch 1, 32 and 256 for: the direct signature call
(``tf.saved_model.load(...).signatures["serving_default"]`` called eagerly, what a Python user writes), the session
call the server itself makes in process (``LoadedModel.runner``, no transport: the server's floor), REST (row format
``instances`` and columnar ``inputs``, one ``httpx.Client`` with keep-alive) and gRPC (TF Serving's
``PredictionServiceStub``), the paths taking turns call by call so that a change in the machine's load hits all of
them alike; then 200 concurrent single-row gRPC clients against the server with batching off and on (throughput and
p99), and the batching server's RSS up to ``--memory-requests`` requests (100k: the issue's "flat memory" check);
with ``--text-rows N`` (or ``--text-model``) the batching comparison again on a MiniLM text model.
The servers run as separate processes (``mtl serve`` on free 127.0.0.1 ports); client and server share the machine's
cores. The direct call includes building its arrays and ``tf.constant``; the REST and gRPC times run from sending a
request body the client encoded beforehand (JSON bytes, a ``PredictRequest``) to its decoded answer, and the client's
own encoding time is printed beside them.

    python benchmarks/serve_latency.py                      # trains a small model on Adult (1 epoch), exports it
    python benchmarks/serve_latency.py --model exports/adult --requests 500
    python benchmarks/serve_latency.py --text-rows 400     # and batching on a MiniLM model trained on 400 reviews
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
sys.path.insert(0, str(Path(__file__).resolve().parent))

from _host import machine  # noqa: E402


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


MODEL_NAME = "served"  # the name every model is served under here
BATCHING = ("max_batch_size { value: 256 }\nbatch_timeout_micros { value: 2000 }\n"
            "max_enqueued_batches { value: 1000 }\nnum_batch_threads { value: 2 }\n")


def _export_text_model(tmp: Path, rows: int) -> Path:
    """``configs/womens_clothing.yaml`` (all-MiniLM-L6-v2 and four task heads) trained for one epoch on ``rows``
    reviews with the backbone frozen (the served graph is the same size either way), exported."""
    import yaml

    import mtl
    from mtl.config import config_from_dict
    from mtl.data import read_table
    from mtl.export import export_run

    frame = read_table(dataset="womens_clothing")[0].sample(rows, random_state=0)
    frame.to_csv(tmp / "reviews.csv", index=False)
    raw = yaml.safe_load((Path(__file__).resolve().parents[1] / "configs" / "womens_clothing.yaml").read_text())
    raw["data"].pop("dataset")
    raw["data"]["path"] = str(tmp / "reviews.csv")
    raw["model"]["backbone"]["trainable"] = False
    raw["training"].update(epochs=1, verbose=0)
    result = mtl.train(config_from_dict(raw), tmp / "text-run")
    export_run(result.run_dir, tmp / "text-exports", "reviews")
    return tmp / "text-exports" / "reviews"


def _export_small_model(tmp: Path) -> Path:
    import mtl
    from mtl.export import export_run

    config = mtl.load_config(Path(__file__).resolve().parents[1] / "configs" / "default.yaml",
                             ["training.epochs=1", "training.verbose=0"])
    result = mtl.train(config, tmp / "run")
    export_run(result.run_dir, tmp / "exports", "adult")
    return tmp / "exports" / "adult"


def _rows(model, n: int) -> list[dict]:  # noqa: ANN001
    """``n`` plausible raw rows: numeric 20..69, categorical values cycled through the training vocabulary."""
    vocab = {f.input_name: f.vocabulary_ for f in model.features.values() if hasattr(f, "vocabulary_")}
    return [{name: float(20 + i % 50) if kind == "float" else vocab[name][i % len(vocab[name])]
             for name, kind in model.inputs.items()} for i in range(n)]


def _time_in_turns(fns: dict, repeats: int) -> dict[str, np.ndarray]:  # noqa: ANN001
    """Seconds per call of each function, the functions called in turn (a, b, c, a, b, c, ...) after one warm-up
    call each (tracing, connection), so that the machine's load falls on all of them alike."""
    for fn in fns.values():
        fn()
    out = {name: np.empty(repeats) for name in fns}
    for i in range(repeats):
        for name, fn in fns.items():
            start = time.perf_counter()
            fn()
            out[name][i] = time.perf_counter() - start
    return out


def _load() -> str:
    return "/".join(f"{x:.1f}" for x in os.getloadavg())


class Server:
    """``mtl serve`` in its own process, REST and gRPC on free ports."""

    def __init__(self, base: Path, *extra: str) -> None:
        import httpx

        self.rest, self.grpc = _free_port(), _free_port()
        env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
        self.process = subprocess.Popen(
            [sys.executable, "-m", "mtl.cli", "serve", "--model_base_path", str(base), "--model_name", MODEL_NAME,
             "--rest_api_port", str(self.rest), "--port", str(self.grpc), "--no-access_log", *extra],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env)
        self.url = f"http://127.0.0.1:{self.rest}/v1/models/{MODEL_NAME}"
        deadline = time.monotonic() + 180
        while True:
            try:
                if httpx.get(self.url, timeout=5).status_code == 200:
                    return
            except httpx.TransportError:
                pass
            if time.monotonic() > deadline or self.process.poll() is not None:
                raise SystemExit("the server did not come up")
            time.sleep(0.3)

    def rss_mib(self) -> float:
        import psutil

        return psutil.Process(self.process.pid).memory_info().rss / 2**20

    def cpu_seconds(self) -> float:
        """CPU time (user + system, every thread) the server process has used so far."""
        import psutil

        times = psutil.Process(self.process.pid).cpu_times()
        return times.user + times.system

    def concurrent(self, request, clients: int, seconds: float,  # noqa: ANN001
                   total: int | None = None) -> tuple[float, float, int, float]:
        """``_concurrent`` against this server, plus the server's CPU milliseconds per request answered."""
        before = self.cpu_seconds()
        rate, p99, count = asyncio.run(_concurrent(self.grpc, request, clients, seconds, total))
        return rate, p99, count, (self.cpu_seconds() - before) * 1e3 / max(count, 1)

    def stop(self) -> None:
        self.process.kill()
        self.process.wait(timeout=30)


def _grpc_request(model, rows: list[dict]):  # noqa: ANN001, ANN202
    import tensorflow as tf
    from tensorflow_serving.apis import predict_pb2

    request = predict_pb2.PredictRequest()
    request.model_spec.name = MODEL_NAME
    for name, kind in model.inputs.items():
        values = np.asarray([r[name] for r in rows], "float32" if kind == "float" else object)
        request.inputs[name].CopyFrom(tf.make_tensor_proto(values))
    return request


async def _concurrent(port: int, request, clients: int, seconds: float,  # noqa: ANN001
                      total: int | None = None) -> tuple[float, float, int]:
    """``(requests/s, p99 ms, requests)`` of ``clients`` concurrent single-row gRPC clients for ``seconds``
    (or, given ``total``, until that many requests are answered)."""
    import grpc
    from tensorflow_serving.apis import prediction_service_pb2_grpc

    latencies: list[float] = []
    async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
        stub = prediction_service_pb2_grpc.PredictionServiceStub(channel)
        await stub.Predict(request, timeout=60)
        stop = time.perf_counter() + seconds

        async def client() -> None:
            while (len(latencies) < total) if total is not None else (time.perf_counter() < stop):
                start = time.perf_counter()
                await stub.Predict(request, timeout=60)
                latencies.append(time.perf_counter() - start)

        begin = time.perf_counter()
        await asyncio.gather(*(client() for _ in range(clients)))
        elapsed = time.perf_counter() - begin
    return len(latencies) / elapsed, float(np.percentile(latencies, 99) * 1e3), len(latencies)


class PeakRss:
    """The highest RSS of a process, sampled every 0.2 s in a thread while the block runs."""

    def __init__(self, pid: int) -> None:
        import psutil

        self.process, self.peak, self._stop = psutil.Process(pid), 0.0, threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)

    def _sample(self) -> None:
        while not self._stop.is_set():
            self.peak = max(self.peak, self.process.memory_info().rss / 2**20)
            self._stop.wait(0.2)

    def __enter__(self) -> PeakRss:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", help="export base (BASE/NAME); default: train and export a small model")
    parser.add_argument("--requests", type=int, default=300, help="single-row requests to time per path")
    parser.add_argument("--clients", type=int, default=200, help="concurrent clients for the batching comparison")
    parser.add_argument("--seconds", type=float, default=20.0, help="duration of each concurrent run")
    parser.add_argument("--memory-requests", type=int, default=100_000,
                        help="requests the batching server answers in all before its last RSS reading")
    parser.add_argument("--text-model", help="export base of a text model for a second batching comparison")
    parser.add_argument("--text-rows", type=int, default=0,
                        help="train and export configs/womens_clothing.yaml's model on this many reviews (frozen "
                             "MiniLM, 1 epoch) for a second batching comparison; 0: none unless --text-model")
    args = parser.parse_args()

    import grpc
    import httpx
    import tensorflow as tf
    from tensorflow_serving.apis import prediction_service_pb2_grpc

    from mtl.serving import load

    with tempfile.TemporaryDirectory(prefix="mtl-serve-bench-") as tmp:
        base = Path(args.model) if args.model else _export_small_model(Path(tmp))
        model = load(base)
        signature = tf.saved_model.load(str(model.path)).signatures["serving_default"]
        info = machine()
        print(f"model: {model.path}; {len(model.inputs)} inputs; {info['cpu']}, {info['cores']}; {info['date']}; "
              f"{args.requests} single-row requests per path; load average (1/5/15 min) at start {_load()}")
        server = Server(base)
        try:
            rss_start = server.rss_mib()
            served = 0
            channel = grpc.insecure_channel(f"127.0.0.1:{server.grpc}")
            stub = prediction_service_pb2_grpc.PredictionServiceStub(channel)
            with httpx.Client(timeout=60) as client, PeakRss(server.process.pid) as peak_off:
                def paths(rows: list[dict]) -> dict:
                    """The four ways to predict these rows; the clients' request bodies are encoded here, once."""
                    row_body = json.dumps({"instances": rows}).encode()
                    column_body = json.dumps({"inputs": {n: [r[n] for r in rows] for n in model.inputs}}).encode()
                    request = _grpc_request(model, rows)

                    def direct() -> None:
                        tensors = {n: tf.constant(np.asarray([r[n] for r in rows], "float32" if k == "float" else
                                                             object)) for n, k in model.inputs.items()}
                        {k: v.numpy() for k, v in signature(**tensors).items()}

                    def session() -> None:
                        model.runner({n: np.asarray([r[n] for r in rows], "float32" if k == "float" else object)
                                      for n, k in model.inputs.items()})

                    def rest(body: bytes) -> None:
                        answer = client.post(f"{server.url}:predict", content=body)
                        assert answer.status_code == 200, answer.text
                        answer.json()

                    return {"direct signature call": direct, "session call in process (the server's)": session,
                            "REST, row format": lambda: rest(row_body),
                            "REST, columnar format": lambda: rest(column_body),
                            "gRPC (PredictionServiceStub)": lambda: stub.Predict(request, timeout=60)}

                one = _rows(model, 1)
                timings = {n: t * 1e3 for n, t in _time_in_turns(paths(one), args.requests).items()}
                served += 3 * (args.requests + 1)
                p50_direct = np.percentile(timings["direct signature call"], 50)
                print("\n| single row | p50 ms | p99 ms | p50 / direct |\n|---|---|---|---|")
                for name, ms in timings.items():
                    print(f"| {name} | {np.percentile(ms, 50):.2f} | {np.percentile(ms, 99):.2f} | "
                          f"{np.percentile(ms, 50) / p50_direct:.2f}x |")
                names = list(paths(one))
                print("\n| batch | " + " | ".join(f"{n} rows/s" for n in names) +
                      " | REST rows / direct | REST columnar / direct | gRPC / direct |\n" +
                      "|---" * (len(names) + 4) + "|")
                for batch in (1, 32, 256):
                    rows = _rows(model, batch)
                    repeats = max(20, 2000 // batch)
                    rates = {name: batch / np.median(t) for name, t in _time_in_turns(paths(rows), repeats).items()}
                    served += 3 * (repeats + 1)
                    d = rates["direct signature call"]
                    print(f"| {batch} | " + " | ".join(f"{r:,.0f}" for r in rates.values()) +
                          f" | {rates['REST, row format'] / d:.0%} | {rates['REST, columnar format'] / d:.0%} | "
                          f"{rates['gRPC (PredictionServiceStub)'] / d:.0%} |")
                rows = _rows(model, 256)
                encode = _time_in_turns({
                    "JSON rows": lambda: json.dumps({"instances": rows}).encode(),
                    "JSON columns": lambda: json.dumps({"inputs": {n: [r[n] for r in rows] for n in model.inputs}}),
                    "PredictRequest (tf.make_tensor_proto)": lambda: _grpc_request(model, rows)}, 50)
                print("\nclient-side encoding of a 256-row request (not in the times above): " + ", ".join(
                    f"{name} {np.median(t) * 1e3:.2f} ms" for name, t in encode.items()))
                channel.close()
                request = _grpc_request(model, one)
                unbatched = server.concurrent(request, args.clients, args.seconds)
                served += unbatched[2]
            rss_end = server.rss_mib()
        finally:
            server.stop()
        params = Path(tmp) / "batching.config"
        params.write_text(BATCHING)
        batching = Server(base, "--enable_batching", "--batching_parameters_file", str(params))
        try:
            rss_batching_start = batching.rss_mib()
            with PeakRss(batching.process.pid) as peak_on:
                batched = batching.concurrent(request, args.clients, args.seconds)
                rss_after_timed = batching.rss_mib()
                more = max(0, args.memory_requests - batched[2])
                extra = asyncio.run(_concurrent(batching.grpc, request, args.clients, 0, total=more)) if more else \
                    (0.0, 0.0, 0)
                rss_batching_end = batching.rss_mib()
        finally:
            batching.stop()
        print(f"\n| {args.clients} concurrent single-row gRPC clients, {args.seconds:.0f} s | requests/s | p99 ms | "
              "server CPU ms per request |\n|---|---|---|---|")
        print(f"| batching off | {unbatched[0]:,.0f} | {unbatched[1]:.1f} | {unbatched[3]:.2f} |")
        print(f"| batching on (max_batch_size 256, batch_timeout_micros 2000) | {batched[0]:,.0f} | "
              f"{batched[1]:.1f} | {batched[3]:.2f} |")
        print(f"| on / off | {batched[0] / unbatched[0]:.1f}x | | {batched[3] / unbatched[3]:.2f}x |")
        total = batched[2] + extra[2]
        print(f"\nserver RSS, batching off: {rss_start:.0f} MiB after start-up, {rss_end:.0f} MiB after {served:,} "
              f"requests ({(rss_end / rss_start - 1):+.1%}), peak {peak_off.peak:.0f} MiB")
        print(f"server RSS, batching on: {rss_batching_start:.0f} MiB after start-up, {rss_after_timed:.0f} MiB after "
              f"{batched[2]:,} requests, {rss_batching_end:.0f} MiB after {total:,} requests "
              f"({(rss_batching_end / rss_batching_start - 1):+.1%} from start-up, "
              f"{(rss_batching_end / rss_after_timed - 1):+.1%} over the last {extra[2]:,}), "
              f"peak {peak_on.peak:.0f} MiB")
        if args.text_model or args.text_rows:
            _text_batching(args, Path(tmp), params)
        print(f"load average (1/5/15 min) at the end: {_load()}")


def _text_batching(args: argparse.Namespace, tmp: Path, params: Path) -> None:
    """The batching comparison again on a model whose signature call, not the server's per-request Python,
    costs the most: MiniLM and four heads, one real review per request."""
    from mtl.data import read_table
    from mtl.serving import load

    base = Path(args.text_model) if args.text_model else _export_text_model(tmp, args.text_rows)
    model = load(base)
    texts = read_table(dataset="womens_clothing")[0]["review_text"].dropna()
    words = texts.str.split().str.len()
    review = texts[words == int(words.median())].iloc[0]  # a review of the median length in words
    request = _grpc_request(model, [{name: review for name in model.inputs}])
    results = {}
    for label, extra in (("off", ()), ("on", ("--enable_batching", "--batching_parameters_file", str(params)))):
        server = Server(base, *extra)
        try:
            results[label] = server.concurrent(request, args.clients, args.seconds)
        finally:
            server.stop()
    print(f"\ntext model ({model.path}; one review of {int(words.median())} words per request):\n"
          f"| {args.clients} concurrent single-row gRPC clients, {args.seconds:.0f} s | requests/s | p99 ms | "
          "server CPU ms per request |\n|---|---|---|---|")
    for label, (rate, p99, _, cpu) in results.items():
        print(f"| batching {label} | {rate:,.0f} | {p99:.1f} | {cpu:.2f} |")
    print(f"| on / off | {results['on'][0] / results['off'][0]:.1f}x | | {results['on'][3] / results['off'][3]:.2f}x |")


if __name__ == "__main__":
    main()
