"""Request limits of a real ``mamdr serve`` process on 127.0.0.1: body size (413 before parsing, with and
without Content-Length, every route), header timeout, concurrency (503), and memory under 10 × 50 MB bodies.

``python -m pytest -q -s tests/unit/test_serving_limits.py -k rss`` prints the RSS figures.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.fixtures.redis_server import free_port

REPO = Path(__file__).resolve().parents[2]
MAX_BODY = 256 * 1024
MB = 1 << 20


class Server:
    def __init__(self, port: int, proc: subprocess.Popen[bytes], log: Path) -> None:
        self.port, self.proc, self.log = port, proc, log

    def rss(self) -> int:
        for line in Path(f"/proc/{self.proc.pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
        raise AssertionError("no VmRSS")

    def connect(self) -> socket.socket:
        return socket.create_connection(("127.0.0.1", self.port), timeout=30)


def start_server(tmp_path: Path, **env: str) -> Server:
    port = free_port()
    log = tmp_path / f"serve-{port}.log"
    environ = {**{k: v for k, v in os.environ.items() if not k.startswith("MAMDR_")},
               "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1",
               "MAMDR_REGISTRY__ADMIN_TOKEN": "a-real-token-0123456789",
               "MAMDR_SERVING__MAX_BODY_BYTES": str(MAX_BODY), **env}
    proc = subprocess.Popen(
        [sys.executable, "-m", "mamdr.cli", "serve", "--host", "127.0.0.1", "--port", str(port),
         "--feature-store", f"memory://limits-{port}", "--registry", f"sqlite://{tmp_path}/registry-{port}.db",
         "--artifacts", str(tmp_path / "art")],
        cwd=REPO, env=environ, stdout=log.open("wb"), stderr=subprocess.STDOUT,
    )
    server = Server(port, proc, log)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise AssertionError(f"server exited: {log.read_text()}")
        try:
            status, _, _ = request(server, b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
            if status == 200:
                return server
        except OSError:
            time.sleep(0.1)
    proc.kill()
    raise AssertionError(f"server did not start: {log.read_text()}")


def stop(server: Server) -> None:
    server.proc.terminate()
    try:
        server.proc.wait(10)
    except subprocess.TimeoutExpired:
        server.proc.kill()
        server.proc.wait()


def read_response(sock: socket.socket) -> tuple[int, dict[str, str], bytes]:
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(65536)
        if not chunk:
            raise ConnectionError(f"closed before a response: {data!r}")
        data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    headers = {k.strip().lower(): v.strip() for k, _, v in (line.partition(":") for line in lines[1:])}
    length = int(headers.get("content-length", "0"))
    while len(body) < length:
        chunk = sock.recv(65536)
        if not chunk:
            break
        body += chunk
    return int(lines[0].split()[1]), headers, body[:length]


def request(server: Server, raw: bytes) -> tuple[int, dict[str, str], bytes]:
    with server.connect() as sock:
        sock.sendall(raw)
        return read_response(sock)


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    srv = start_server(tmp_path_factory.mktemp("limits"), MAMDR_SERVING__HEADER_TIMEOUT_S="1")
    yield srv
    stop(srv)


def _post_head(path: str, extra: str) -> bytes:
    return (f"POST {path} HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            f"Authorization: Bearer a-real-token-0123456789\r\n{extra}\r\n").encode()


@pytest.mark.parametrize("path", ["/v1/domains/dom-0/ctr", "/v1/domains", "/healthz"])
def test_413_with_content_length_before_reading_the_body(server: Server, path: str) -> None:
    with server.connect() as sock:
        sock.sendall(_post_head(path, f"Content-Length: {MAX_BODY + 1}\r\n"))  # no body sent at all
        status, headers, body = read_response(sock)
    assert status == 413, body
    assert headers["connection"] == "close", "the rest of the body is never read"
    assert json.loads(body)["error"] == "payload_too_large" and str(MAX_BODY) in json.loads(body)["detail"]


@pytest.mark.parametrize("path", ["/v1/domains/dom-0/ctr", "/v1/domains"])
def test_413_for_a_chunked_body_without_content_length(server: Server, path: str) -> None:
    chunk = b"x" * 65536
    with server.connect() as sock:
        sock.sendall(_post_head(path, "Transfer-Encoding: chunked\r\n"))
        try:
            for _ in range(2 * MAX_BODY // len(chunk)):
                sock.sendall(b"%x\r\n%s\r\n" % (len(chunk), chunk))
            sock.sendall(b"0\r\n\r\n")
        except OSError:
            pass  # the server may answer and close before the rest is sent
        status, _, body = read_response(sock)
    assert status == 413, body
    assert json.loads(body)["error"] == "payload_too_large"


def test_small_bodies_pass_and_errors_keep_one_shape(server: Server) -> None:
    body = b'{"user_id": "u1", "item_ids": ["i1"]}'
    status, _, data = request(server, _post_head("/v1/domains/dom-0/ctr", f"Content-Length: {len(body)}\r\n") + body)
    assert status == 503 and set(json.loads(data)) == {"error", "detail"}  # no model yet; not a 413
    status, _, data = request(server, b"GET /nowhere HTTP/1.1\r\nHost: x\r\n\r\n")
    assert status == 404 and json.loads(data)["error"] == "not_found"
    status, _, data = request(server, _post_head("/v1/domains", "Content-Length: 3\r\n") + b"{x}")
    assert status == 422 and json.loads(data)["error"] == "invalid_request"


def test_slow_headers_are_cut_off(server: Server) -> None:
    with server.connect() as sock:
        sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n")  # headers never finished
        started = time.monotonic()
        sock.settimeout(10)
        assert sock.recv(100) == b"", "the server closes the connection"
        assert 0.8 < time.monotonic() - started < 5
    with server.connect() as sock:  # a silent connection is closed too
        started = time.monotonic()
        sock.settimeout(10)
        assert sock.recv(100) == b""
        assert time.monotonic() - started < 5


def test_concurrency_limit_answers_503(tmp_path: Path) -> None:
    srv = start_server(tmp_path, MAMDR_SERVING__MAX_CONCURRENCY="2")
    try:
        idle = [srv.connect(), srv.connect()]  # uvicorn counts open connections
        time.sleep(0.3)
        status, _, _ = request(srv, b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        assert status == 503
        for sock in idle:
            sock.close()
        time.sleep(0.3)
        assert request(srv, b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")[0] == 200
    finally:
        stop(srv)


def _send_big(port: int, size: int, chunked: bool, results: list[object], sent: list[int]) -> None:
    """Send a ``size``-byte body whatever the server answers early (an adversarial client), then read."""
    block = b"0" * MB
    sent_here = 0
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=60) as sock:
            head = "Transfer-Encoding: chunked\r\n" if chunked else f"Content-Length: {size}\r\n"
            sock.sendall(_post_head("/v1/domains/dom-0/ctr", head))
            try:
                for _ in range(size // MB):
                    sock.sendall(b"%x\r\n%s\r\n" % (MB, block) if chunked else block)
                    sent_here += MB
                if chunked:
                    sock.sendall(b"0\r\n\r\n")
            except OSError:
                pass  # closed by the server after its 413
            results.append(read_response(sock)[0])
    except OSError as exc:
        results.append(exc)
    sent.append(sent_here)


def test_rss_stays_bounded_under_10_concurrent_50mb_bodies(tmp_path: Path) -> None:
    srv = start_server(tmp_path)
    try:
        time.sleep(1.0)
        idle = srv.rss()
        peak = idle
        results: list[object] = []
        sent: list[int] = []
        threads = [threading.Thread(target=_send_big, args=(srv.port, 50 * MB, k % 2 == 1, results, sent))
                   for k in range(10)]
        started = time.monotonic()
        for t in threads:
            t.start()
        while any(t.is_alive() for t in threads):
            peak = max(peak, srv.rss())
            time.sleep(0.01)
            assert time.monotonic() - started < 120, "bounded test: the clients did not finish"
        for t in threads:
            t.join()
        after = srv.rss()
        print(f"\nRSS idle {idle / MB:.1f} MB, peak under 10 x 50 MB bodies {peak / MB:.1f} MB "
              f"(+{(peak - idle) / MB:.1f} MB), after {after / MB:.1f} MB; {time.monotonic() - started:.1f}s; "
              f"answers {sorted(map(str, results))}; the clients got {sum(sent) / MB:.0f} MB into the socket "
              "before the server answered 413 and closed")
        assert peak - idle < 50 * MB
        assert all(r == 413 for r in results if isinstance(r, int)), results
        assert sum(r == 413 for r in results if isinstance(r, int)) >= 5, results
        assert request(srv, b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")[0] == 200
    finally:
        stop(srv)
