"""Request metrics in Prometheus' text format (TF Serving's ``/monitoring/prometheus/metrics``) and the access log.

Counts, latency histograms and errors per protocol, API, model, version and status code, kept in a private
``prometheus_client`` registry so several servers in one process (tests) never share counters.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client import exposition as _exposition

access_log = logging.getLogger("mtl.serve.access")

METRICS_PATH = "/monitoring/prometheus/metrics"
CONTENT_TYPE = _exposition.CONTENT_TYPE_LATEST
LATENCY_BUCKETS = (0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0, 2.0, 5.0, 10.0)


@dataclass
class RequestOutcome:
    """What a request handler fills in while it runs: which model and version answered and the status code."""

    model: str = ""
    version: str = ""
    code: str = "OK"


@dataclass
class Metrics:
    """The server's request counters and histograms, and whether each request gets an access log line."""

    access_log: bool = True
    registry: CollectorRegistry = field(default_factory=CollectorRegistry)

    def __post_init__(self) -> None:
        labels = ["protocol", "api", "model_name", "model_version", "status"]
        self.requests = Counter("mtl_serve_requests", "Requests answered, by outcome", labels,
                                registry=self.registry)
        self.latency = Histogram("mtl_serve_request_latency_seconds", "Time from request to response",
                                 labels[:4], buckets=LATENCY_BUCKETS, registry=self.registry)
        self.batch_rows = Histogram("mtl_serve_batch_rows", "Rows per signature call when batching is on",
                                    ["model_name", "model_version"], registry=self.registry,
                                    buckets=(1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024, 4096))

    def record(self, protocol: str, api: str, outcome: RequestOutcome, seconds: float, detail: str = "") -> None:
        """Count one request; ``detail`` (client, method, path) goes to the access log line."""
        self.requests.labels(protocol, api, outcome.model, outcome.version, outcome.code).inc()
        self.latency.labels(protocol, api, outcome.model, outcome.version).observe(seconds)
        if self.access_log:
            access_log.info("%s %s %s %s/%s %s %.2fms", protocol, api, detail or "-", outcome.model or "-",
                            outcome.version or "-", outcome.code, seconds * 1e3)

    @contextmanager
    def track(self, protocol: str, api: str, detail: str = "") -> Iterator[RequestOutcome]:
        """Time the block and record it; the block sets ``model``, ``version`` and ``code`` on the outcome."""
        outcome = RequestOutcome()
        start = time.perf_counter()
        try:
            yield outcome
        except BaseException:
            if outcome.code == "OK":
                outcome.code = "INTERNAL"
            raise
        finally:
            self.record(protocol, api, outcome, time.perf_counter() - start, detail)

    def exposition(self) -> bytes:
        """The Prometheus text exposition of every metric."""
        return generate_latest(self.registry)


__all__ = ["CONTENT_TYPE", "METRICS_PATH", "Metrics", "RequestOutcome"]
