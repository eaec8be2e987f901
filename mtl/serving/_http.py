"""uvicorn's HTTP/1.1 protocol with the limits a server facing hostile clients needs.

uvicorn (0.54) has a keep-alive timer that every received byte resets and nothing else: a client trickling header
bytes, or connecting and sending nothing, holds a socket for ever. This protocol adds, per connection:

- an idle timeout (no request in progress: from accept, or after a response),
- a header timeout (the first byte of a request to the end of its headers),
- a body timeout (the end of the headers to the end of the body),
- a cap on open connections (one more gets a 503 and is closed),

and leaves the header size to h11's limit on an incomplete request (bytes trickled in) together with the app's check
of the complete headers (bytes sent at once), so the limit holds however the bytes arrive.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import h11
from uvicorn.protocols.http.h11_impl import H11Protocol

log = logging.getLogger("mtl.serve")

_BUSY = b'{"error": "too many open connections; try again later"}'
BUSY_RESPONSE = (b"HTTP/1.1 503 Service Unavailable\r\ncontent-type: application/json\r\nconnection: close\r\n"
                 b"content-length: " + str(len(_BUSY)).encode() + b"\r\n\r\n" + _BUSY)


def default_max_connections() -> int:
    """Half the process's open-file limit (the rest is for models, logs and gRPC), between 16 and 1024."""
    try:
        import resource

        soft = resource.getrlimit(resource.RLIMIT_NOFILE)[0]
    except (ImportError, ValueError, OSError):
        return 256
    if soft == resource.RLIM_INFINITY:
        return 1024
    return max(16, min(1024, soft // 2))


def hardened_protocol(header_timeout: float, body_timeout: float, idle_timeout: float,
                      max_connections: int) -> type[H11Protocol]:
    """An ``H11Protocol`` subclass with these limits, for ``uvicorn.Config(http=...)``."""

    class HardenedH11Protocol(H11Protocol):
        _timer: asyncio.TimerHandle | None = None
        _phase = "idle"  # idle -> headers -> body -> app -> idle ...

        def connection_made(self, transport: Any) -> None:  # noqa: ANN401
            super().connection_made(transport)
            if len(self.connections) > max_connections:
                log.warning("refused a connection: %d open (limit %d)", len(self.connections) - 1, max_connections)
                transport.write(BUSY_RESPONSE)
                transport.close()
                return
            self._arm(idle_timeout, "idle")

        def connection_lost(self, exc: Exception | None) -> None:
            self._cancel()
            super().connection_lost(exc)

        def data_received(self, data: bytes) -> None:
            if self._phase == "idle":
                self._arm(header_timeout, "headers")
            super().data_received(data)
            state = self.conn.their_state
            if state is h11.SEND_BODY and self._phase == "headers":
                self._arm(body_timeout, "body")
            elif state is not h11.IDLE and state is not h11.SEND_BODY and self._phase in ("headers", "body"):
                self._cancel()
                self._phase = "app"  # the request is in; the app takes its time

        def on_response_complete(self) -> None:
            super().on_response_complete()
            if not self.transport.is_closing():
                self._arm(idle_timeout, "idle")

        def timeout_keep_alive_handler(self) -> None:
            """uvicorn's own timer (reset by every byte) is replaced by the timers above."""

        def _arm(self, seconds: float, phase: str) -> None:
            self._cancel()
            self._phase = phase
            self._timer = self.loop.call_later(seconds, self._expire)

        def _cancel(self) -> None:
            if self._timer is not None:
                self._timer.cancel()
                self._timer = None

        def _expire(self) -> None:
            self._timer = None
            if not self.transport.is_closing():
                log.info("closed a connection from %s: %s timeout", self.client, self._phase)
                self.transport.close()

    return HardenedH11Protocol


__all__ = ["BUSY_RESPONSE", "default_max_connections", "hardened_protocol"]
