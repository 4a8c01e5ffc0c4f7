"""Run the app under uvicorn on a listening socket the app creates itself.

The socket gets ``TCP_NODELAY`` (inherited by accepted connections on Linux). No ``SO_REUSEPORT``: processes
sharing a port would each answer ``/metrics`` and ``/readyz`` for themselves, so a scrape would see one
random process; scale with replicas (one process per pod) instead. Measured on the 2-core dev machine
(docs/performance.md, "Serving"): letting ``uvicorn --workers`` create the socket lost TCP_NODELAY and
added ~44 ms per request.
"""

from __future__ import annotations

import socket

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


def serve(settings: Settings, sock: socket.socket | None = None) -> None:
    """Blocking: serve until SIGINT/SIGTERM."""
    import uvicorn

    from serving.app import create_app

    sock = sock or listening_socket(settings.serving.host, settings.serving.port)
    config = uvicorn.Config(
        create_app(settings), log_level=settings.log_level.lower(), access_log=False,
        loop="auto", http="auto", timeout_graceful_shutdown=5,
    )
    uvicorn.Server(config).run(sockets=[sock])
