"""The trainer's one HTTP port: ``/metrics`` for Prometheus and ``/healthz`` for the liveness probe.

A TCP check on the metrics port passes while the training loop is hung (the server runs in its own thread), so
``/healthz`` answers 503 once the loop has not beaten its :class:`Heartbeat` for ``trainer.liveness_timeout_s``
(longer than the slowest round: a round beats when it starts and when it ends).
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable, Iterable
from socketserver import ThreadingMixIn
from typing import Any
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

from prometheus_client import CollectorRegistry, make_wsgi_app


class Heartbeat:
    """When the training loop last made progress (monotonic seconds)."""

    def __init__(self) -> None:
        self._at = time.monotonic()

    def beat(self) -> None:
        self._at = time.monotonic()

    def age_s(self) -> float:
        return time.monotonic() - self._at


class _Server(ThreadingMixIn, WSGIServer):
    daemon_threads = True


class _QuietHandler(WSGIRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:
        pass  # probes every few seconds would flood the log


def health_app(registry: CollectorRegistry, heartbeat: Heartbeat, timeout_s: float) -> Callable[..., Iterable[bytes]]:
    metrics = make_wsgi_app(registry)

    def app(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        if environ.get("PATH_INFO") != "/healthz":
            return metrics(environ, start_response)
        age = heartbeat.age_s()
        alive = age <= timeout_s
        body = json.dumps({"alive": alive, "seconds_since_progress": round(age, 3), "timeout_s": timeout_s})
        status = "200 OK" if alive else "503 Service Unavailable"
        start_response(status, [("Content-Type", "application/json")])
        return [body.encode()]

    return app


def serve(registry: CollectorRegistry, heartbeat: Heartbeat, timeout_s: float, host: str, port: int) -> _Server:
    """Start the endpoint in a daemon thread; ``.server_address`` has the bound port (``port=0``: a free one)."""
    server = make_server(host, port, health_app(registry, heartbeat, timeout_s), _Server, handler_class=_QuietHandler)
    threading.Thread(target=server.serve_forever, name="trainer-metrics", daemon=True).start()
    return server
