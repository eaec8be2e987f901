"""A TF Serving-compatible REST server (a plain ASGI app on uvicorn), with TF Serving's gRPC API beside it.

Follows TF Serving's REST API: model status, metadata and ``:predict`` with ``instances`` (row format) or
``inputs`` (columnar format); every error is ``{"error": "..."}`` with a 4xx status and never stops the server.
The models and versions served, and their lifecycle, are ``mtl.serving._versions``'s; the gRPC services are
``mtl.serving._grpc``'s; request values become tensors only through ``LoadedModel.to_tensors``.
"""

from __future__ import annotations

import asyncio
import base64
import json
import logging
import re
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
import orjson

from mtl.errors import MtlError
from mtl.serving._loader import LoadedModel
from mtl.serving._monitoring import CONTENT_TYPE, METRICS_PATH, Metrics, RequestOutcome
from mtl.serving._signature import call_signature, check_signature_name, prepare
from mtl.serving._versions import ModelRegistry, ServingError

log = logging.getLogger("mtl.serve")

_MODEL = r"^/v1/models/(?P<name>[^/:]+)(?:/versions/(?P<version>[0-9]{1,18})|/labels/(?P<label>[^/:]+))?"
_GET = re.compile(_MODEL + r"(?P<metadata>/metadata)?$")
_POST = re.compile(_MODEL + r":(?P<verb>predict|classify|regress)$")

HTTP_STATUS = {"INVALID_ARGUMENT": 400, "FAILED_PRECONDITION": 400, "OUT_OF_RANGE": 400, "NOT_FOUND": 404,
               "ALREADY_EXISTS": 409, "PERMISSION_DENIED": 403, "RESOURCE_EXHAUSTED": 429, "UNIMPLEMENTED": 501,
               "UNAVAILABLE": 503, "DEADLINE_EXCEEDED": 504, "INTERNAL": 500, "UNKNOWN": 500}
DEFAULT_MAX_REQUEST_BYTES = 16 * 1024 * 1024
DEFAULT_MAX_HEADER_BYTES = 16 * 1024
MAX_INTEGER_DIGITS = 4300  # Python's own limit for int(); a longer JSON integer is a malformed body


class BadRequest(Exception):
    """A request the server answers with ``{"error": message}`` and ``status``."""

    def __init__(self, message: str, status: int = 400) -> None:
        super().__init__(message)
        self.status = status


# ----------------------------------------------------------------------------- JSON in
def _stdlib_int(text: str) -> int:
    if len(text.lstrip("-")) > MAX_INTEGER_DIGITS:
        raise ValueError(f"integer of {len(text)} digits")
    return int(text)


def loads(raw: bytes) -> Any:
    """Parse a JSON body; a client's malformed JSON is a ``BadRequest``, never a server error.

    orjson is the fast path. A body it refuses goes through the standard library, which also reads what JSON
    allows and orjson does not hold as a double: ``NaN``/``Infinity`` tokens (TF Serving accepts them) and numbers
    beyond a double (``1e999``, a 400-digit integer), so that such a value reaches the raw-value rule and gets the
    same error, naming its column and row, as on every other path. Limits: integers of at most
    ``MAX_INTEGER_DIGITS`` digits, nesting within the recursion limit, no lone surrogates."""
    try:
        return orjson.loads(raw)
    except orjson.JSONDecodeError:
        pass
    try:
        body = json.loads(raw, parse_int=_stdlib_int)
        json.dumps(body, ensure_ascii=False, allow_nan=True).encode("utf-8")  # lone surrogates fail here
    except RecursionError:
        raise BadRequest("JSON Parse error: nested too deeply") from None
    except (ValueError, UnicodeError) as exc:
        raise BadRequest(f"JSON Parse error: {str(exc)[:200]}") from None
    return body


def _decode_b64(value: Any, where: str) -> Any:
    """TF Serving's ``{"b64": "..."}`` (bytes in JSON) becomes ``bytes``, at any depth; other values stay."""
    if isinstance(value, dict):
        if set(value) == {"b64"} and isinstance(value["b64"], str):
            try:
                return base64.b64decode(value["b64"], validate=True)
            except ValueError:
                raise BadRequest(f"{where}: invalid base64 in 'b64'") from None
        return value
    if isinstance(value, list):
        return [_decode_b64(v, where) for v in value]
    return value


def _name_first_odd_row(rows: list, names: list[str]) -> None:
    """Raise ``BadRequest`` naming the first row that is not an object with the same inputs as the first."""
    for i, row in enumerate(rows):
        if not isinstance(row, dict):
            raise BadRequest(f"instances[{i}]: expected an object like instances[0]")
        if len(row) != len(names) or any(n not in row for n in names):
            missing = [n for n in names if n not in row]
            extra = [k for k in row if k not in names]
            raise BadRequest(f"instances[{i}]: " + "; ".join(
                ([f"missing input(s) {missing}"] if missing else []) + (
                    [f"unknown input(s) {extra}"] if extra else [])) + " (every row names the same inputs)")


def parse_predict_body(raw: bytes, input_names: list[str]) -> tuple[dict[str, Any], str, str]:
    """``(columns, "row" | "columnar", signature_name)`` from a ``:predict`` body: the request's raw values per
    input name, no conversion (that is ``to_tensors``'s), or ``BadRequest`` naming what is wrong."""
    body = loads(raw)
    if not isinstance(body, dict):
        raise BadRequest("the request body must be a JSON object with 'instances' or 'inputs'")
    signature = body.get("signature_name", "")
    if not isinstance(signature, str):
        raise BadRequest("'signature_name' key must be a string value.")
    unknown = set(body) - {"instances", "inputs", "signature_name"}
    if unknown:
        raise BadRequest(f"unknown key(s) {sorted(unknown)}; expected 'instances' or 'inputs'")
    if ("instances" in body) == ("inputs" in body):
        raise BadRequest("Missing 'inputs' or 'instances' key" if "instances" not in body
                         else "Not both 'inputs' and 'instances' may be given")
    if "instances" in body:
        rows = body["instances"]
        if not isinstance(rows, list) or not rows:
            raise BadRequest("'instances' must be a non-empty list of rows")
        if not isinstance(rows[0], dict):
            if len(input_names) != 1 or any(isinstance(r, dict) for r in rows):
                raise BadRequest(f"instances[0]: expected an object with the named inputs {input_names}")
            columns: dict[str, Any] = {input_names[0]: rows}
        else:
            names = list(rows[0])
            first_keys = rows[0].keys()
            if not all(type(row) is dict and row.keys() == first_keys for row in rows):
                _name_first_odd_row(rows, names)
            columns = {n: [row[n] for row in rows] for n in names}
        style = "row"
    else:
        inputs = body["inputs"]
        if isinstance(inputs, list) and len(input_names) == 1:
            inputs = {input_names[0]: inputs}
        if not isinstance(inputs, dict) or not inputs:
            raise BadRequest(f"'inputs' must be an object mapping each input {input_names} to a list of values")
        columns, style = inputs, "columnar"
    if b'"b64"' in raw:
        columns = {n: _decode_b64(v, f"input {n!r}") for n, v in columns.items()}
    return columns, style, signature


# ----------------------------------------------------------------------------- JSON out
def _jsonable(array: np.ndarray) -> Any:
    """An output array as orjson takes it: numbers stay arrays, strings become ``str`` lists."""
    if array.dtype == object or array.dtype.kind == "S":
        return np.char.decode(array.astype("S"), "utf-8", errors="replace").tolist()
    if array.dtype.kind in "fiub" and array.flags.c_contiguous:
        return array
    return array.tolist()


def format_outputs(outputs: dict[str, np.ndarray], style: str) -> dict:
    """TF Serving's shapes: row format -> ``predictions`` (one element per row; an object per row when there are
    several named outputs), columnar -> ``outputs`` (an object of named outputs, or the bare value for one)."""
    names = sorted(outputs)
    if style == "row":
        if len(names) == 1:
            return {"predictions": _jsonable(outputs[names[0]])}
        lists = {n: outputs[n].tolist() if outputs[n].dtype.kind in "fiub" else _jsonable(outputs[n]) for n in names}
        rows = len(next(iter(lists.values())))
        return {"predictions": [{n: lists[n][i] for n in names} for i in range(rows)]}
    if len(names) == 1:
        return {"outputs": _jsonable(outputs[names[0]])}
    return {"outputs": {n: _jsonable(outputs[n]) for n in names}}


def dumps(payload: Any, outputs: dict[str, np.ndarray] | None = None) -> bytes:
    """JSON bytes; ``NaN``/``Infinity`` are written as tokens, as TF Serving writes them (orjson would write null)."""
    finite = outputs is None or all(a.dtype.kind not in "fc" or np.isfinite(a).all() for a in outputs.values())
    if finite:
        return orjson.dumps(payload, option=orjson.OPT_SERIALIZE_NUMPY)
    return json.dumps(payload, allow_nan=True, separators=(",", ":"),
                      default=lambda a: a.tolist()).encode()


def status_json(entries: list[dict]) -> dict:
    """TF Serving's ``model_version_status`` JSON."""
    return {"model_version_status": [
        {"version": str(e["version"]), "state": e["state"],
         "status": {"error_code": e["error_code"], "error_message": e["error_message"]}} for e in entries]}


def signature_metadata(signature_defs: dict) -> dict:
    """The ``signature_def`` map of the served MetaGraph as TF Serving prints it."""
    from google.protobuf import json_format

    signatures = {key: json_format.MessageToDict(value, always_print_fields_with_no_presence=True,
                                                 preserving_proto_field_name=True)
                  for key, value in signature_defs.items()}
    return {"signature_def": {"signature_def": signatures}}


# ----------------------------------------------------------------------------- the app
class RestApp:
    """The ASGI app: TF Serving's REST routes, ``/monitoring/prometheus/metrics``, limits and the access log."""

    def __init__(self, registry: ModelRegistry, *, owns_registry: bool = True, watch: bool = True,
                 run: Any = call_signature, metrics: Metrics | None = None,
                 max_request_bytes: int = DEFAULT_MAX_REQUEST_BYTES,
                 max_header_bytes: int = DEFAULT_MAX_HEADER_BYTES, threads: int = 64) -> None:
        self.registry = registry
        self.owns_registry = owns_registry
        self.watch = watch
        self.run = run
        self.metrics = metrics or Metrics(access_log=False)
        self.max_request_bytes = max_request_bytes
        self.max_header_bytes = max_header_bytes
        self._executor = ThreadPoolExecutor(max_workers=threads, thread_name_prefix="mtl-rest")

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] == "lifespan":
            await self._lifespan(receive, send)
        elif scope["type"] == "http":
            await self._http(scope, receive, send)

    async def _lifespan(self, receive: Any, send: Any) -> None:
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                if self.owns_registry:
                    await asyncio.get_running_loop().run_in_executor(None, self.registry.start, self.watch)
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                if self.owns_registry:
                    self.registry.stop()
                self._executor.shutdown(wait=False)
                await send({"type": "lifespan.shutdown.complete"})
                return

    async def _http(self, scope: dict, receive: Any, send: Any) -> None:
        start = time.perf_counter()
        method, path = scope["method"], scope["path"]
        api = "predict" if method == "POST" else "metadata" if path.endswith("/metadata") else "status"
        if path == METRICS_PATH:
            api = "metrics"
        outcome = RequestOutcome()
        headers: list[tuple[bytes, bytes]] = []
        try:
            size = len(scope.get("raw_path") or b"") + len(scope.get("query_string") or b"") + sum(
                len(k) + len(v) + 4 for k, v in scope["headers"])
            if size > self.max_header_bytes:
                headers.append((b"connection", b"close"))
                raise BadRequest(f"request line and headers of {size} bytes exceed the limit of "
                                 f"{self.max_header_bytes}", 431)
            if method == "GET" and path == METRICS_PATH:
                status, body, content_type = 200, self.metrics.exposition(), CONTENT_TYPE.encode()
            elif method == "GET":
                status, body, content_type = 200, self._get(path, outcome), b"application/json"
            elif method == "POST":
                raw = await self._read_body(scope, receive)
                body = await asyncio.get_running_loop().run_in_executor(self._executor, self._post, path, raw,
                                                                        outcome)
                status, content_type = 200, b"application/json"
            else:
                raise BadRequest(f"Unsupported HTTP method {method[:10]}", 405)
        except ServingError as exc:
            outcome.code = exc.code
            status, body, content_type = HTTP_STATUS.get(exc.code, 500), dumps({"error": str(exc)}), b"application/json"
        except BadRequest as exc:
            outcome.code = {404: "NOT_FOUND", 413: "RESOURCE_EXHAUSTED", 431: "RESOURCE_EXHAUSTED"}.get(
                exc.status, "INVALID_ARGUMENT")
            status, body, content_type = exc.status, dumps({"error": str(exc)}), b"application/json"
        except Exception as exc:  # a real server fault: detail in the log, a short message to the client
            log.exception("%s %s failed", method, path[:200])
            outcome.code = "INTERNAL"
            status, content_type = 500, b"application/json"
            body = dumps({"error": f"internal error ({type(exc).__name__}); see the server log"})
        headers += [(b"content-type", content_type), (b"content-length", str(len(body)).encode())]
        client = scope.get("client")
        self.metrics.record("rest", api, outcome, time.perf_counter() - start,  # counted before the client sees it
                            f"{client[0] if client else '-'} \"{method} {path[:200]}\" {status}")
        await send({"type": "http.response.start", "status": status, "headers": headers})
        await send({"type": "http.response.body", "body": body})

    async def _read_body(self, scope: dict, receive: Any) -> bytes:
        for key, value in scope["headers"]:
            if key == b"content-length" and value.isdigit() and int(value) > self.max_request_bytes:
                raise BadRequest(f"request body of {int(value)} bytes is larger than the limit of "
                                 f"{self.max_request_bytes}", 413)
        chunks, size = [], 0
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                raise BadRequest("the client disconnected", 400)
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > self.max_request_bytes:
                raise BadRequest(f"request body is larger than the limit of {self.max_request_bytes} bytes", 413)
            chunks.append(chunk)
            if not message.get("more_body", False):
                return b"".join(chunks)

    def _resolve(self, match: re.Match, outcome: RequestOutcome) -> tuple[int, LoadedModel, dict]:
        outcome.model = match["name"]
        version = int(match["version"]) if match["version"] is not None else None
        number, model, signature_defs = self.registry.model(match["name"]).resolve(version, match["label"])
        outcome.version = str(number)
        return number, model, signature_defs

    def _get(self, path: str, outcome: RequestOutcome) -> bytes:
        match = _GET.match(path)
        if match is None:
            raise BadRequest(f"Malformed request: GET {path[:200]}", 404)
        if match["metadata"]:
            number, _, signature_defs = self._resolve(match, outcome)
            spec = {"name": match["name"], "signature_name": "", "version": str(number)}
            return dumps({"model_spec": spec, "metadata": signature_metadata(signature_defs)})
        outcome.model = match["name"]
        name = match["name"]
        if name not in self.registry.models:
            raise ServingError("NOT_FOUND", f"Could not find any versions of model {name}")
        model = self.registry.models[name]
        version = int(match["version"]) if match["version"] is not None else None
        if match["label"] is not None:
            version = model.resolve(None, match["label"])[0]
        return dumps(status_json(model.status(version)))

    def _post(self, path: str, raw: bytes, outcome: RequestOutcome) -> bytes:
        match = _POST.match(path)
        if match is None:
            raise BadRequest(f"Malformed request: POST {path[:200]}", 404)
        _, model, signature_defs = self._resolve(match, outcome)
        if match["verb"] != "predict":
            raise BadRequest(f"this model has only a predict signature; :{match['verb']} needs a signature with "
                             f"method tensorflow/serving/{match['verb']}")
        columns, style, signature = parse_predict_body(raw, list(model.inputs))
        check_signature_name(signature, signature_defs)
        outputs = self.run(model, prepare(model, columns, "instances" if style == "row" else "inputs"))
        return dumps(format_outputs(outputs, style), outputs)


def create_app(base_path: str | Path | None = None, model_name: str | None = None, poll_seconds: float = 1.0,
               max_request_bytes: int = DEFAULT_MAX_REQUEST_BYTES, watch: bool = True, *,
               registry: ModelRegistry | None = None, run: Any = call_signature, metrics: Metrics | None = None,
               max_header_bytes: int = DEFAULT_MAX_HEADER_BYTES) -> RestApp:
    """The ASGI app serving ``base_path``'s versions as ``model_name`` (or the models of ``registry``); an app
    given a ``base_path`` owns its registry and starts it on start-up (polling the disk if ``watch``)."""
    if registry is None:
        if base_path is None:
            raise ValueError("create_app needs a base_path or a registry")
        registry = ModelRegistry.for_base_path(base_path, model_name, poll_seconds)
        owns = True
    else:
        owns = False
    return RestApp(registry, owns_registry=owns, watch=watch, run=run, metrics=metrics,
                   max_request_bytes=max_request_bytes, max_header_bytes=max_header_bytes)


def _check_port_free(host: str, port: int, where: str = "--rest_api_port") -> None:
    """A taken REST (or gRPC) port is a one-line error before any model loads (uvicorn would only log it and exit 1;
    gRPC would log its own lines after the models loaded)."""
    import socket

    try:
        with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET) as probe:
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            probe.bind((host, port))
    except OSError as exc:
        raise MtlError(f"cannot listen on {host}:{port}: {exc.strerror or exc}", where=where) from None


def serve(base_path: str | Path | None = None, model_name: str | None = None, port: int = 8501,
          host: str = "127.0.0.1", poll_seconds: float = 1.0, max_request_bytes: int = DEFAULT_MAX_REQUEST_BYTES, *,
          grpc_port: int | None = 8500, model_config_file: str | Path | None = None, enable_batching: bool = False,
          batching_parameters_file: str | Path | None = None, access_log: bool = True,
          max_header_bytes: int = DEFAULT_MAX_HEADER_BYTES, header_timeout: float = 10.0,
          body_timeout: float = 60.0, idle_timeout: float = 15.0, max_connections: int | None = None) -> None:
    """Run REST on ``host:port`` and gRPC on ``host:grpc_port`` (``None``: no gRPC) until interrupted."""
    import uvicorn

    from mtl.serving._batching import Batcher, read_batching_parameters
    from mtl.serving._grpc import start_grpc_server
    from mtl.serving._http import default_max_connections, hardened_protocol

    if model_config_file is not None:
        if base_path is not None or model_name is not None:
            raise MtlError("--model_config_file names the models and their paths; drop --model_base_path and "
                           "--model_name", where="mtl serve")
        registry = ModelRegistry.from_config_file(model_config_file, poll_seconds)
    elif base_path is not None:
        base = Path(base_path)
        if not base.is_dir():
            raise MtlError(f"{base} is not a folder", where="--model_base_path")
        registry = ModelRegistry.for_base_path(base, model_name, poll_seconds)
    else:
        raise MtlError("give --model_base_path (one model) or --model_config_file (several)", where="mtl serve")
    if batching_parameters_file is not None and not enable_batching:
        raise MtlError("--batching_parameters_file needs --enable_batching", where="mtl serve")
    _check_port_free(host, port)
    if grpc_port:
        _check_port_free(host, grpc_port, "--port")
    metrics = Metrics(access_log=access_log)
    batcher = Batcher(read_batching_parameters(batching_parameters_file), metrics) if enable_batching else None
    run = batcher if batcher is not None else call_signature
    registry.start(watch=True)
    grpc_server = None
    try:
        if grpc_port is not None:
            grpc_server, bound = start_grpc_server(registry, host, grpc_port, run, metrics)
            log.info("gRPC (TF Serving's PredictionService, ModelService) on %s:%d", host, bound)
        app = RestApp(registry, owns_registry=False, run=run, metrics=metrics, max_request_bytes=max_request_bytes,
                      max_header_bytes=max_header_bytes)
        for name in registry.models:
            log.info("REST on http://%s:%d/v1/models/%s", host, port, name)
        protocol = hardened_protocol(header_timeout, body_timeout, idle_timeout,
                                     max_connections or default_max_connections())
        config = uvicorn.Config(app, host=host, port=port, log_level="warning", http=protocol, lifespan="on",
                                h11_max_incomplete_event_size=max_header_bytes, access_log=False)
        uvicorn.Server(config).run()
    finally:
        if grpc_server is not None:
            grpc_server.stop(grace=2)
        if batcher is not None:
            batcher.stop()
        registry.stop()


__all__ = ["BadRequest", "RestApp", "create_app", "dumps", "format_outputs", "loads", "parse_predict_body", "serve"]
