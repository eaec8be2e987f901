"""A TF Serving-compatible REST server (FastAPI + uvicorn) for one model's export base.

Follows TF Serving's REST API: model status, metadata and ``:predict`` with ``instances`` (row format) or
``inputs`` (columnar format); every error is ``{"error": "..."}`` with a 4xx status and never stops the server.
Like TF Serving's default version policy, it serves the newest complete version of ``BASE/NAME`` and polls the
folder, so a newly exported version is served without a restart.
"""

from __future__ import annotations

import base64
import json
import logging
import re
import threading
from pathlib import Path
from typing import Any

import numpy as np
from fastapi import FastAPI, Request
from fastapi.responses import Response

from mtl.errors import MtlError
from mtl.features import shown
from mtl.serving.loader import LoadedModel, load, versions

log = logging.getLogger("mtl.serve")

_GET = re.compile(r"^models/(?P<name>[^/:]+)(?:/versions/(?P<version>[^/:]+)|/labels/(?P<label>[^/:]+))?"
                  r"(?P<metadata>/metadata)?$")
_POST = re.compile(r"^models/(?P<name>[^/:]+)(?:/versions/(?P<version>[^/:]+)|/labels/(?P<label>[^/:]+))?"
                   r":(?P<verb>predict|classify|regress)$")


class BadRequest(Exception):
    """A request the server answers with ``{"error": message}`` and ``status``."""

    def __init__(self, message: str, status: int = 400) -> None:
        super().__init__(message)
        self.status = status


class ModelWatcher:
    """Keeps the newest complete version of ``base_path`` loaded, checking for a new one every ``poll_seconds``."""

    def __init__(self, base_path: str | Path, poll_seconds: float = 1.0) -> None:
        self.base_path = Path(base_path)
        self.poll_seconds = poll_seconds
        self.current: LoadedModel | None = None
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def poll(self) -> None:
        """Load the newest version if it is newer than the one served; a broken version is logged and skipped."""
        found = versions(self.base_path)
        if not found or (self.current is not None and found[-1] <= self.current.version):
            return
        try:
            model = load(self.base_path, found[-1])
        except MtlError as exc:
            log.error("version %s not loaded: %s", found[-1], exc)
            return
        with self._lock:
            self.current = model
        log.info("serving version %d of %s", model.version, self.base_path)

    def start(self) -> None:
        self.poll()
        self._thread = threading.Thread(target=self._loop, name="mtl-version-poll", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)

    def _loop(self) -> None:
        while not self._stop.wait(self.poll_seconds):
            try:
                self.poll()
            except Exception:  # the poller must outlive any surprise on disk
                log.exception("polling %s failed", self.base_path)

    def get(self, version: str | None) -> LoadedModel:
        model = self.current
        if model is None:
            raise BadRequest(f"Servable not found for request: Latest({self.base_path.name})", 404)
        if version is not None and version != str(model.version):
            raise BadRequest(f"Servable not found for request: Specific({self.base_path.name}, {version})", 404)
        return model


# ----------------------------------------------------------------------------- request -> tensors
def _cell(value: Any, where: str) -> Any:
    """A JSON value as a raw cell: TF Serving's ``{"b64": ...}`` becomes the bytes it encodes; the rest is parsed by
    the feature's kind (the one raw-value rule, as in training and ``mtl predict``)."""
    if isinstance(value, dict) and set(value) == {"b64"} and isinstance(value["b64"], str):
        try:
            return base64.b64decode(value["b64"], validate=True)
        except ValueError:
            raise BadRequest(f"{where}: invalid base64 in 'b64'") from None
    return value


def _row_value(value: Any, feature: Any, where: str) -> Any:
    """One row's value of an input: a scalar (or a one-element list, shape ``(1,)``), or a list for a vector."""
    if feature.input_shape():
        return value
    value = value[0] if isinstance(value, list) and len(value) == 1 else value
    if isinstance(value, list | dict) and not (isinstance(value, dict) and set(value) == {"b64"}):
        raise BadRequest(f"{where}: input {feature.column!r} must be one value per row (ragged or nested)")
    return _cell(value, where)


def _tensors(model: LoadedModel, columns: dict[str, list]) -> dict[str, np.ndarray]:
    """Parse the request's columns (the one raw-value rule); values not seen in training are logged."""
    unseen: dict[str, int] = {}
    try:
        tensors = model.to_tensors(columns, where="request", unseen=unseen)
    except MtlError as exc:
        raise BadRequest(str(exc)) from None
    for column, count in unseen.items():
        log.info("version %s: column %r: %d value(s) not seen in training (out-of-vocabulary)", model.version,
                 column, count)
    return tensors


def parse_body(raw: bytes, model: LoadedModel) -> tuple[dict[str, np.ndarray], str]:
    """``(tensors, "row" | "columnar")`` from a predict body, or ``BadRequest``. Inputs are named by column or by
    signature input name; rows are numbered from 1 in errors."""
    try:
        body = json.loads(raw)
    except (ValueError, UnicodeDecodeError) as exc:
        raise BadRequest(f"JSON Parse error: {exc}") from None
    except RecursionError:
        raise BadRequest("JSON Parse error: nested too deeply") from None
    if not isinstance(body, dict):
        raise BadRequest("the request body must be a JSON object with 'instances' or 'inputs'")
    signature = body.get("signature_name", "serving_default")
    if signature != "serving_default":
        raise BadRequest(f"Serving signature name: \"{shown(signature)}\" not found in signature def")
    unknown = set(body) - {"instances", "inputs", "signature_name"}
    if unknown:
        raise BadRequest(f"unknown key(s) {sorted(shown(k) for k in unknown)}; expected 'instances' or 'inputs'")
    if ("instances" in body) == ("inputs" in body):
        raise BadRequest("Missing 'inputs' or 'instances' key" if "instances" not in body
                         else "Not both 'inputs' and 'instances' may be given")
    features = list(model.features.values())
    if "instances" in body:
        rows = body["instances"]
        if not isinstance(rows, list) or not rows:
            raise BadRequest("'instances' must be a non-empty list of rows")
        if len(features) == 1 and not all(isinstance(r, dict) for r in rows):
            rows = [{features[0].column: r} for r in rows]
        names: list[str] | None = None
        columns: dict[str, list] = {}
        for i, row in enumerate(rows):
            if not isinstance(row, dict):
                raise BadRequest(f"instances[{i}]: expected an object with the named inputs {list(model.features)}")
            if names is None:
                try:
                    model.check_columns(list(row), where=f"instances[{i}]")
                except MtlError as exc:
                    raise BadRequest(str(exc)) from None
                names = list(row)
                columns = {n: [] for n in names}
            elif set(row) != set(names):
                raise BadRequest(f"instances[{i}]: names the inputs {sorted(row)}, the first instance {sorted(names)}")
            for n in names:
                columns[n].append(_row_value(row[n], model._feature_of(n), f"instances[{i}]"))
        return _tensors(model, columns), "row"
    inputs = body["inputs"]
    if len(features) == 1 and isinstance(inputs, list):
        inputs = {features[0].column: inputs}
    if not isinstance(inputs, dict):
        raise BadRequest(f"'inputs' must be an object mapping each input {list(model.features)} to a list of values")
    try:
        model.check_columns(list(inputs), where="inputs")
    except MtlError as exc:
        raise BadRequest(str(exc)) from None
    lengths = {n: len(inputs[n]) if isinstance(inputs[n], list) else -1 for n in inputs}
    if any(v < 0 for v in lengths.values()):
        raise BadRequest(f"every input must be a list of values, one per row; not a list: "
                         f"{[n for n, v in lengths.items() if v < 0]}")
    if len(set(lengths.values())) != 1 or 0 in lengths.values():
        raise BadRequest(f"inputs must all have the same, non-zero number of rows (ragged): {lengths}")
    columns = {n: [_row_value(v, model._feature_of(n), f"inputs[{n!r}]") for v in inputs[n]] for n in inputs}
    return _tensors(model, columns), "columnar"


# ----------------------------------------------------------------------------- tensors -> response
def _jsonable(array: np.ndarray) -> list:
    if array.dtype == object or array.dtype.kind == "S":
        return np.vectorize(lambda b: b.decode() if isinstance(b, bytes) else str(b), otypes=[object])(array).tolist()
    return array.tolist()


def format_outputs(outputs: dict[str, np.ndarray], style: str) -> dict:
    """TF Serving's shapes: row format -> ``predictions`` (one element per row; an object per row when there are
    several named outputs), columnar -> ``outputs`` (an object of named outputs, or the bare value for one)."""
    names = sorted(outputs)
    if style == "row":
        if len(names) == 1:
            return {"predictions": _jsonable(outputs[names[0]])}
        lists = {n: _jsonable(outputs[n]) for n in names}
        rows = len(next(iter(lists.values())))
        return {"predictions": [{n: lists[n][i] for n in names} for i in range(rows)]}
    if len(names) == 1:
        return {"outputs": _jsonable(outputs[names[0]])}
    return {"outputs": {n: _jsonable(outputs[n]) for n in names}}


def _dumps(payload: Any) -> bytes:
    """JSON that may hold ``NaN`` / ``Infinity`` tokens, as TF Serving writes them."""
    return json.dumps(payload, allow_nan=True, separators=(",", ":")).encode()


def _json(payload: Any, status: int = 200) -> Response:
    return Response(_dumps(payload), status_code=status, media_type="application/json")


def _status(model: LoadedModel) -> dict:
    return {"model_version_status": [{"version": str(model.version), "state": "AVAILABLE",
                                      "status": {"error_code": "OK", "error_message": ""}}]}


def signature_metadata(model: LoadedModel) -> dict:
    """The ``signature_def`` map of the served MetaGraph as TF Serving prints it (from ``saved_model.pb``)."""
    from google.protobuf import json_format
    from tensorflow.core.protobuf import saved_model_pb2

    proto = saved_model_pb2.SavedModel()
    proto.ParseFromString((model.path / "saved_model.pb").read_bytes())
    graph = next(g for g in proto.meta_graphs if "serve" in g.meta_info_def.tags)
    signatures = {
        key: json_format.MessageToDict(value, always_print_fields_with_no_presence=True,
                                       preserving_proto_field_name=True)
        for key, value in graph.signature_def.items()
    }
    return {"signature_def": {"signature_def": signatures}}


# ----------------------------------------------------------------------------- the app
def create_app(base_path: str | Path, model_name: str | None = None, poll_seconds: float = 1.0,
               max_request_bytes: int = 16 * 1024 * 1024, watch: bool = True) -> FastAPI:
    """The FastAPI app serving ``base_path``'s newest version as ``model_name``; ``watch`` starts the poller."""
    from contextlib import asynccontextmanager

    base = Path(base_path)
    name = model_name or base.name
    watcher = ModelWatcher(base, poll_seconds)

    @asynccontextmanager
    async def lifespan(app: FastAPI):  # noqa: ANN202
        if watch:
            watcher.start()
        else:
            watcher.poll()
        yield
        watcher.stop()

    app = FastAPI(title=f"mtl serve: {name}", lifespan=lifespan, docs_url=None, redoc_url=None, openapi_url=None)
    app.state.watcher = watcher

    def model_for(match: re.Match) -> LoadedModel:
        if match["name"] != name:
            raise BadRequest(f"Servable not found for request: Latest({match['name']})", 404)
        if match["label"] is not None:
            raise BadRequest(f"Unrecognized servable version label: {match['label']}", 404)
        return watcher.get(match["version"])

    @app.exception_handler(BadRequest)
    async def bad_request(_: Request, exc: BadRequest) -> Response:
        return _json({"error": str(exc)}, exc.status)

    @app.exception_handler(Exception)
    async def unexpected(_: Request, exc: Exception) -> Response:
        log.exception("request failed")
        return _json({"error": f"internal error: {type(exc).__name__}: {exc}"}, 500)

    @app.get("/v1/{path:path}")
    def get(path: str) -> Response:
        match = _GET.match(path)
        if match is None:
            raise BadRequest(f"Malformed request: GET /v1/{path}", 404)
        model = model_for(match)
        if match["metadata"]:
            spec = {"name": name, "signature_name": "", "version": str(model.version)}
            return _json({"model_spec": spec, "metadata": signature_metadata(model)})
        return _json(_status(model))

    @app.post("/v1/{path:path}")
    async def post(path: str, request: Request) -> Response:
        match = _POST.match(path)
        if match is None:
            raise BadRequest(f"Malformed request: POST /v1/{path}", 404)
        length = request.headers.get("content-length")
        if length is not None and length.isdigit() and int(length) > max_request_bytes:
            raise BadRequest(f"request body of {length} bytes is larger than the limit of {max_request_bytes}", 413)
        raw = bytearray()
        async for chunk in request.stream():
            raw.extend(chunk)
            if len(raw) > max_request_bytes:
                raise BadRequest(f"request body is larger than the limit of {max_request_bytes} bytes", 413)
        model = model_for(match)
        if match["verb"] != "predict":
            raise BadRequest(f"this model has only a predict signature; :{match['verb']} needs a signature with "
                             f"method tensorflow/serving/{match['verb']}")
        from starlette.concurrency import run_in_threadpool

        return await run_in_threadpool(_predict, model, bytes(raw))

    def _predict(model: LoadedModel, raw: bytes) -> Response:
        tensors, style = parse_body(raw, model)
        import tensorflow as tf

        result = model.signature(**{k: tf.constant(v) for k, v in tensors.items()})
        return _json(format_outputs({k: v.numpy() for k, v in result.items()}, style))

    return app


def serve(base_path: str | Path, model_name: str | None = None, port: int = 8501, host: str = "127.0.0.1",
          poll_seconds: float = 1.0, max_request_bytes: int = 16 * 1024 * 1024) -> None:
    """Run the server until interrupted (``mtl serve``)."""
    import uvicorn

    base = Path(base_path)
    if not base.is_dir():
        raise MtlError(f"{base} is not a folder", where="--model_base_path")
    if not versions(base):
        log.warning("%s holds no version yet; waiting for one", base)
    app = create_app(base, model_name, poll_seconds, max_request_bytes)
    log.info("serving %s as %r on http://%s:%d/v1/models/%s", base, model_name or base.name, host, port,
             model_name or base.name)
    uvicorn.run(app, host=host, port=port, log_level="warning", timeout_keep_alive=5)


__all__ = ["BadRequest", "ModelWatcher", "create_app", "format_outputs", "parse_body", "serve"]
