"""``mamdr domains|models ... --api URL`` against a running admin API gives the same JSON and exit codes as the
direct mode on the same registry; ``--output json`` round-trips into the registry's own models."""

from __future__ import annotations

import contextlib
import io
import json
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
import uvicorn

from contracts.settings import load_settings
from domain_registry.app import create_admin_app
from domain_registry.base import Domain, ModelVersion
from mamdr.cli import main
from serving.server import listening_socket
from tests.support.fake_version import publish_fake

TOKEN = "cli-api-" + uuid.uuid4().hex


def run(*argv: str) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = main(list(argv))
    return code, out.getvalue(), err.getvalue()


@pytest.fixture()
def service(tmp_path: Path) -> Iterator[tuple[str, str, Path]]:
    """A real admin API (uvicorn on a free loopback port) over a sqlite registry; bounded start and stop."""
    url = f"sqlite://{tmp_path}/registry.db"
    settings = load_settings(**{"registry.url": url, "registry.admin_token": TOKEN,
                                "artifacts_url": f"file://{tmp_path}/art"})
    sock = listening_socket("127.0.0.1", 0)
    server = uvicorn.Server(uvicorn.Config(create_admin_app(settings), log_level="warning", access_log=False))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started and time.monotonic() < deadline:
        time.sleep(0.02)
    assert server.started
    try:
        yield f"http://127.0.0.1:{sock.getsockname()[1]}", url, tmp_path
    finally:
        server.should_exit = True
        thread.join(timeout=15)
        sock.close()


def _strip(record: dict) -> dict:
    """What may differ between two registries that saw the same commands: times."""
    return {k: v for k, v in record.items() if not k.endswith("_at")}


def test_api_mode_matches_direct_mode(service, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    api, url, root = service
    monkeypatch.setenv("MAMDR_REGISTRY__ADMIN_TOKEN", TOKEN)
    other = f"sqlite://{tmp_path}/direct.db"
    script = [("domains", "add", "comedy", "--name", "Comedy", "--set", "dr_k=2"), ("domains", "add", "drama"),
              ("domains", "pause", "drama"), ("domains", "list"), ("domains", "show", "comedy"),
              ("domains", "resume", "drama"), ("domains", "retire", "drama"), ("domains", "list", "--status", "active")]
    for argv in script:
        via_api = run(*argv, "--api", api, "--output", "json")
        direct = run(*argv, "--registry", other, "--output", "json")
        assert via_api[0] == direct[0] == 0, (argv, via_api[2], direct[2])
        a, d = json.loads(via_api[1]), json.loads(direct[1])
        if isinstance(a, list):
            assert [_strip(x) for x in a] == [_strip(x) for x in d], argv
            [Domain.model_validate(x) for x in a]  # the JSON is the registry's own model
        else:
            assert _strip(a) == _strip(d), argv
            Domain.model_validate(a)
    for argv, code in ((("domains", "show", "nope"), 3), (("domains", "add", "comedy"), 3),
                       (("domains", "add", "Bad Id"), 3), (("models", "rollback"), 3)):
        assert run(*argv, "--api", api)[0] == code == run(*argv, "--registry", url)[0], argv

    # models: the service verifies promote/rollback exactly like the direct mode
    from domain_registry import open_registry

    with open_registry(url) as reg:
        publish_fake(root / "art", "v000001", reg)
        publish_fake(root / "art", "v000002", reg)
    assert run("models", "promote", "v000001", "--api", api)[0] == 0
    code, out, _ = run("models", "promote", "v000002", "--api", api, "--output", "json")
    assert code == 0 and ModelVersion.model_validate(json.loads(out)).status == "live"
    code, out, _ = run("models", "list", "--api", api, "--output", "json")
    assert [m["id"] for m in json.loads(out)] == ["v000002", "v000001"]
    code, out, _ = run("models", "rollback", "--api", api, "--output", "json")
    assert code == 0 and json.loads(out)["id"] == "v000001"
    assert json.loads(run("models", "show", "v000001", "--registry", url, "--output", "json")[1])["status"] == "live"


def test_api_mode_errors_are_one_line_with_their_exit_codes(service, monkeypatch: pytest.MonkeyPatch) -> None:
    api, _, _ = service
    monkeypatch.setenv("MAMDR_REGISTRY__ADMIN_TOKEN", "wrong-" + TOKEN)
    code, out, err = run("domains", "list", "--api", api)
    assert code == 5 and out == "" and err.startswith("mamdr: error:") and err.count("\n") == 1
    monkeypatch.delenv("MAMDR_REGISTRY__ADMIN_TOKEN")
    assert run("domains", "list", "--api", api)[0] == 2  # no token at all: a usage error
    monkeypatch.setenv("MAMDR_REGISTRY__ADMIN_TOKEN", TOKEN)
    assert run("domains", "list", "--api", "http://127.0.0.1:9")[0] == 4  # nothing listens: retry later
    assert run("domains", "list", "--api", api, "--registry", "sqlite:///x.db")[0] == 2
