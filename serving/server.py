"""Run the app under uvicorn on a listening socket the app creates itself, with request limits.

The socket gets ``TCP_NODELAY`` (inherited by accepted connections on Linux). No ``SO_REUSEPORT``: processes
sharing a port would each answer ``/metrics`` and ``/readyz`` for themselves, so a scrape would see one
random process; scale with replicas (one process per pod) instead. Measured on the 2-core dev machine
(docs/performance.md, "Serving"): letting ``uvicorn --workers`` create the socket lost TCP_NODELAY and
added ~44 ms per request.

Limits (``ServingSettings``, all bounded):

- ``max_body_bytes``: every route, 413 before parsing (``contracts.http.BodyLimitMiddleware``: the
  ``Content-Length`` is checked first, a chunked body is counted as it streams). uvicorn itself reads
  at most ~64 KiB ahead of the app (flow control), so a rejected body is never buffered whole.
- ``header_timeout_s``: what uvicorn offers is ``timeout_keep_alive`` (idle time *between*
  requests, armed only after a response) and, for h11 only, ``h11_max_incomplete_event_size`` (header
  bytes). Nothing times out a client that opens a connection and trickles its request line and
  headers (slowloris), so :class:`HeaderTimeoutProtocol` (httptools) closes a connection whose
  headers are not complete ``header_timeout_s`` after the connection or the request began.
  httptools caps header size itself (llhttp, 80 KiB by default).
- ``keep_alive_timeout_s``: uvicorn ``timeout_keep_alive``.
- ``max_concurrency``: uvicorn ``limit_concurrency``: once that many connections are open or requests
  in flight, new requests get 503 (uvicorn's own plain-text body, before the app sees them).
"""

from __future__ import annotations

import asyncio
import socket
from typing import Any

from contracts.errors import ConfigError
from contracts.settings import Settings


def listening_socket(host: str, port: int, backlog: int = 2048) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        sock.bind((host, port))
        sock.listen(backlog)
        sock.set_inheritable(True)
    except OSError as exc:
        sock.close()
        raise ConfigError(f"cannot listen on {host}:{port}: {exc.strerror}; pick another --port") from None
    return sock


def header_timeout_protocol(timeout_s: float) -> type | str:
    """uvicorn's httptools protocol, closing connections whose request headers take over ``timeout_s``
    ("auto" when httptools is not installed: uvicorn then uses h11 without a header timeout)."""
    try:
        from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol
    except ImportError:  # pragma: no cover - httptools is a serving dependency
        return "auto"

    class HeaderTimeoutProtocol(HttpToolsProtocol):
        header_timeout_s = float(timeout_s)
        _header_timer: asyncio.TimerHandle | None = None

        def _arm_header_timer(self) -> None:
            if self._header_timer is None:
                self._header_timer = self.loop.call_later(self.header_timeout_s, self._header_timeout)

        def _cancel_header_timer(self) -> None:
            if self._header_timer is not None:
                self._header_timer.cancel()
                self._header_timer = None

        def _header_timeout(self) -> None:
            self._header_timer = None
            if not self.transport.is_closing():
                self.logger.info("closing a connection whose request headers took over %.1fs",
                                 self.header_timeout_s)
                self.transport.close()

        def connection_made(self, transport: Any) -> None:
            super().connection_made(transport)
            self._arm_header_timer()  # the first request line and headers must arrive in time

        def on_message_begin(self) -> None:
            super().on_message_begin()
            self._arm_header_timer()

        def on_headers_complete(self) -> None:
            self._cancel_header_timer()
            super().on_headers_complete()

        def connection_lost(self, exc: Exception | None) -> None:
            self._cancel_header_timer()
            super().connection_lost(exc)

    return HeaderTimeoutProtocol


def uvicorn_config(settings: Settings, app: Any) -> Any:
    import uvicorn

    serving = settings.serving
    return uvicorn.Config(
        app, log_level=settings.log_level.lower(), access_log=False, loop="auto",
        http=header_timeout_protocol(serving.header_timeout_s), timeout_graceful_shutdown=5,
        timeout_keep_alive=serving.keep_alive_timeout_s, limit_concurrency=serving.max_concurrency,
    )


def serve(settings: Settings, sock: socket.socket | None = None) -> None:
    """Blocking: serve until SIGINT/SIGTERM."""
    import uvicorn

    from serving.app import create_app

    sock = sock or listening_socket(settings.serving.host, settings.serving.port)
    uvicorn.Server(uvicorn_config(settings, create_app(settings))).run(sockets=[sock])
