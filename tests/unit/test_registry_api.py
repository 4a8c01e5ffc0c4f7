"""The admin HTTP API over a real sqlite registry, through FastAPI's TestClient."""

from __future__ import annotations

import shutil
import sqlite3
import time
import warnings
from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi import FastAPI

with warnings.catch_warnings():
    warnings.simplefilter("ignore")
    from fastapi.testclient import TestClient

from contracts.settings import RegistrySettings
from domain_registry import open_registry
from domain_registry.api import build_router, install_error_handlers
from domain_registry.app import create_admin_app
from domain_registry.base import ModelVersion, Registry
from domain_registry.redis_store import RedisRegistry
from domain_registry.sqlite_store import SqliteRegistry
from tests.fixtures.redis_server import free_port
from tests.support.fake_version import publish_fake

TOKEN = "s3cret-token-0123456789abcdef"
AUTH = {"Authorization": f"Bearer {TOKEN}"}


@pytest.fixture()
def registry(tmp_path: Path) -> Iterator[Registry]:
    reg = open_registry(f"sqlite://{tmp_path}/registry.db")
    yield reg
    reg.close()


def make_client(registry: Registry, handlers: bool = True) -> TestClient:
    app = FastAPI()
    if handlers:
        install_error_handlers(app)
    app.include_router(build_router(lambda: registry, TOKEN))
    return TestClient(app)


@pytest.fixture()
def client(registry: Registry) -> TestClient:
    return make_client(registry)


def register(registry: Registry, *versions: str, root: Path | None = None) -> None:
    """Register versions: published for real under ``root`` (promotable), else pointing nowhere."""
    for v in versions:
        if root is not None:
            publish_fake(root, v, registry)
        else:
            registry.register_model(ModelVersion(id=v, created_at=time.time(), artifact_uri=f"file:///a/{v}"))


@pytest.mark.parametrize(("headers", "status", "code"), [
    ({}, 401, "unauthorized"),
    ({"Authorization": TOKEN}, 401, "unauthorized"),
    ({"Authorization": "Basic abc"}, 401, "unauthorized"),
    ({"Authorization": "Bearer "}, 401, "unauthorized"),
    ({"Authorization": "Bearer wrong"}, 403, "forbidden"),
    ({"Authorization": f"Bearer {TOKEN}x"}, 403, "forbidden"),
])
def test_writes_need_the_bearer_token(client: TestClient, registry: Registry, headers: dict[str, str],
                                      status: int, code: str) -> None:
    registry.create_domain("comedy")
    register(registry, "v1")
    for method, path, body in [("post", "/v1/domains", {"id": "drama"}), ("patch", "/v1/domains/comedy", {}),
                               ("delete", "/v1/domains/comedy", None), ("post", "/v1/models/v1/promote", None),
                               ("post", "/v1/models/rollback", None)]:
        r = client.request(method, path, json=body, headers=headers)
        assert r.status_code == status, (method, path, r.text)
        assert r.json()["error"] == code and r.json()["detail"]
        if status == 401:
            assert r.headers["www-authenticate"] == "Bearer"
    assert registry.change_counter() == 2, "nothing was written"


def test_create_read_list(client: TestClient) -> None:
    r = client.post("/v1/domains", json={"id": "comedy", "display_name": "Comedy", "settings": {"dr_k": 3}},
                    headers=AUTH)
    assert r.status_code == 201
    assert r.json()["id"] == "comedy" and r.json()["status"] == "active" and r.json()["settings"] == {"dr_k": 3}
    assert client.post("/v1/domains", json={"id": "action"}, headers=AUTH).status_code == 201
    assert client.get("/v1/domains/comedy", headers=AUTH).json()["display_name"] == "Comedy"
    assert [d["id"] for d in client.get("/v1/domains", headers=AUTH).json()["domains"]] == ["action", "comedy"]
    assert client.get("/v1/changes", headers=AUTH).json() == {"change_counter": 2}


@pytest.mark.parametrize("bad_id", ["Comedy", "a b", "x" * 65, "-a", "ü"])
def test_invalid_ids_are_422_with_the_reason(client: TestClient, bad_id: str) -> None:
    r = client.post("/v1/domains", json={"id": bad_id}, headers=AUTH)
    assert r.status_code == 422
    assert r.json()["error"] == "data_error" and "slug" in r.json()["detail"]
    assert client.get(f"/v1/domains/{bad_id}", headers=AUTH).status_code == 422


@pytest.mark.parametrize(("kwargs", "needle"), [
    ({"json": {}}, "body.id"),
    ({"json": {"id": "a", "colour": "red"}}, "colour"),
    ({"json": {"id": 5}}, "body.id"),
    ({"json": {"id": "a", "settings": [1, 2]}}, "settings"),
    ({"content": b"{not json", "headers": {"Content-Type": "application/json"}}, "body"),
])
def test_malformed_bodies_are_422(client: TestClient, kwargs: dict[str, object], needle: str) -> None:
    headers = {**AUTH, **kwargs.pop("headers", {})}  # type: ignore[dict-item]
    r = client.post("/v1/domains", headers=headers, **kwargs)  # type: ignore[arg-type]
    assert r.status_code == 422, r.text
    assert r.json()["error"] == "invalid_request" and needle in r.json()["detail"]


def test_duplicates_409_missing_404(client: TestClient) -> None:
    assert client.post("/v1/domains", json={"id": "comedy"}, headers=AUTH).status_code == 201
    r = client.post("/v1/domains", json={"id": "comedy"}, headers=AUTH)
    assert r.status_code == 409 and r.json() == {"error": "conflict", "detail": "domain 'comedy' already exists"}
    assert client.get("/v1/domains/nope", headers=AUTH).status_code == 404
    assert client.patch("/v1/domains/nope", json={"status": "paused"}, headers=AUTH).status_code == 404
    assert client.delete("/v1/domains/nope", headers=AUTH).status_code == 404


def test_patch_and_retire_keep_history(client: TestClient, registry: Registry) -> None:
    client.post("/v1/domains", json={"id": "comedy", "settings": {"dr_k": 3, "x": 1}}, headers=AUTH)
    r = client.patch("/v1/domains/comedy", json={"status": "paused", "settings": {"dr_k": 4, "x": None}},
                     headers=AUTH)
    assert r.status_code == 200 and r.json()["status"] == "paused" and r.json()["settings"] == {"dr_k": 4}
    assert client.patch("/v1/domains/comedy", json={"status": "gone"}, headers=AUTH).status_code == 422
    r = client.delete("/v1/domains/comedy", headers=AUTH)
    assert r.status_code == 200 and r.json()["status"] == "retired"
    kept = client.get("/v1/domains/comedy", headers=AUTH)
    assert kept.status_code == 200 and kept.json()["status"] == "retired" and kept.json()["settings"] == {"dr_k": 4}
    retired = client.get("/v1/domains", params={"status": "retired"}, headers=AUTH).json()["domains"]
    assert [d["id"] for d in retired] == ["comedy"]
    assert client.get("/v1/domains", params={"status": "active"}, headers=AUTH).json()["domains"] == []
    assert client.post("/v1/domains", json={"id": "comedy"}, headers=AUTH).status_code == 409
    assert client.patch("/v1/domains/comedy", json={"status": "active"}, headers=AUTH).status_code == 410
    assert client.delete("/v1/domains/comedy", headers=AUTH).status_code == 410
    actions = [e["action"] for e in client.get("/v1/audit", headers=AUTH).json()["entries"]]
    assert actions == ["domain.retire", "domain.update", "domain.create"]


def test_promote_and_rollback(client: TestClient, registry: Registry, tmp_path: Path) -> None:
    register(registry, "v1", "v2", root=tmp_path / "art")
    assert client.get("/v1/models", headers=AUTH).json()["live"] is None
    assert client.post("/v1/models/rollback", headers=AUTH).status_code == 409
    r = client.post("/v1/models/v1/promote", headers={**AUTH, "X-Actor": "alice"})
    assert r.status_code == 200 and r.json()["status"] == "live"
    assert client.post("/v1/models/v2/promote", headers=AUTH).json()["id"] == "v2"
    listing = client.get("/v1/models", headers=AUTH).json()
    assert listing["live"] == "v2"
    assert [(m["id"], m["status"]) for m in listing["models"]] == [("v2", "live"), ("v1", "superseded")]
    r = client.post("/v1/models/rollback", headers=AUTH)
    assert r.status_code == 200 and r.json()["id"] == "v1"
    assert registry.get_model("v2").status == "rolled_back"
    assert client.post("/v1/models/v9/promote", headers=AUTH).status_code == 404
    assert client.post("/v1/models/bad%20id/promote", headers=AUTH).status_code == 422
    assert client.get("/v1/models", params={"limit": 0}, headers=AUTH).status_code == 422
    entries = client.get("/v1/audit", params={"limit": 3}, headers=AUTH).json()["entries"]
    assert [(e["action"], e["target"]) for e in entries] == [
        ("model.rollback", "v1"), ("model.promote", "v2"), ("model.promote", "v1")]
    assert entries[2]["actor"] == "api:alice" and entries[1]["actor"] == "api"


def test_router_maps_errors_without_app_handlers(registry: Registry) -> None:
    client = make_client(registry, handlers=False)
    r = client.get("/v1/domains/nope", headers=AUTH)
    assert r.status_code == 404 and r.json()["error"] == "not_found"
    assert client.post("/v1/domains", json={}, headers=AUTH).status_code == 422
    assert client.post("/v1/domains", json={"id": "a"}).status_code == 401


def test_backend_outage_is_503_with_retry_after() -> None:
    down = RedisRegistry(f"redis://127.0.0.1:{free_port()}/0", socket_timeout_s=0.2)
    client = make_client(down)
    for r in (client.get("/v1/domains", headers=AUTH), client.post("/v1/domains", json={"id": "a"}, headers=AUTH),
              client.get("/v1/changes", headers=AUTH)):
        assert r.status_code == 503 and r.headers["retry-after"] == "1"
        assert r.json()["error"] == "backend_unavailable"


def test_locked_sqlite_is_503_not_500(tmp_path: Path) -> None:
    path = tmp_path / "registry.db"
    reg = SqliteRegistry(path, busy_timeout_s=0.1)
    blocker = sqlite3.connect(str(path), isolation_level=None)
    blocker.execute("BEGIN IMMEDIATE")  # another writer holds the write lock
    try:
        r = make_client(reg).post("/v1/domains", json={"id": "comedy"}, headers=AUTH)
        assert r.status_code == 503 and "retry" in r.json()["detail"]
    finally:
        blocker.execute("ROLLBACK")
        blocker.close()
    assert make_client(reg).post("/v1/domains", json={"id": "comedy"}, headers=AUTH).status_code == 201
    reg.close()


@pytest.mark.parametrize("token", [None, "", "  ", "admin", "password-123", " " * 30 + "short"])
def test_no_usable_token_disables_the_admin_api(registry: Registry, token: str | None,
                                                caplog: pytest.LogCaptureFixture) -> None:
    app = FastAPI()
    install_error_handlers(app)
    with caplog.at_level("WARNING"):
        app.include_router(build_router(lambda: registry, token))
    assert "MAMDR_REGISTRY__ADMIN_TOKEN" in caplog.text and "openssl rand" in caplog.text
    client = TestClient(app)
    for method, path in [("get", "/v1/domains"), ("post", "/v1/domains"), ("get", "/v1/models"),
                         ("get", "/v1/audit"), ("post", "/v1/models/v1/promote"), ("delete", "/v1/domains/a")]:
        for headers in ({}, {"Authorization": f"Bearer {token}"}, AUTH):
            r = client.request(method, path, headers=headers, json={"id": "x"} if method == "post" else None)
            assert r.status_code == 404, (method, path, r.text)
            assert r.json()["error"] == "admin_disabled" and "MAMDR_REGISTRY__ADMIN_TOKEN" in r.json()["detail"]
    assert registry.change_counter() == 0
    assert not [p for p in app.openapi()["paths"] if p.startswith("/v1")], "disabled routes are not advertised"


def test_reads_need_the_token(client: TestClient, registry: Registry) -> None:
    registry.create_domain("comedy")
    for path in ("/v1/models", "/v1/audit", "/v1/domains", "/v1/domains/comedy", "/v1/changes"):
        assert client.get(path).status_code == 401, path
        assert client.get(path, headers={"Authorization": "Bearer nope"}).status_code == 403, path
        assert client.get(path, headers=AUTH).status_code == 200, path


def test_promote_refuses_a_corrupted_version(client: TestClient, registry: Registry, tmp_path: Path) -> None:
    register(registry, "v1", "v2", "v3", "v4", root=tmp_path / "art")
    assert client.post("/v1/models/v1/promote", headers=AUTH).status_code == 200
    # v2: a delta's bytes changed after publication.
    (tmp_path / "art" / "v2" / "deltas" / "comedy.onnx").write_bytes(b"garbage")
    # v3: the manifest edited after publication (still a valid manifest, checksums intact).
    manifest = tmp_path / "art" / "v3" / "manifest.json"
    manifest.write_text(manifest.read_text().replace('"events_included": 0', '"events_included": 7'))
    # v4: the folder is gone.
    shutil.rmtree(tmp_path / "art" / "v4")
    register(registry, "v5")  # registered, never published (artifact_uri points nowhere)
    for version, reason in [("v2", "sha256"), ("v3", "recorded at publish"), ("v4", "manifest.json"),
                            ("v5", "manifest.json")]:
        r = client.post(f"/v1/models/{version}/promote", headers=AUTH)
        assert r.status_code == 409, (version, r.text)
        assert r.json()["error"] == "integrity_error" and reason in r.json()["detail"], r.text
        assert "cannot go live" in r.json()["detail"]
    assert registry.live_model().id == "v1"  # type: ignore[union-attr]
    assert [e.action for e in registry.audit(100)].count("model.promote") == 1


def test_rollback_refuses_a_corrupted_target(client: TestClient, registry: Registry, tmp_path: Path) -> None:
    register(registry, "v1", "v2", root=tmp_path / "art")
    assert client.post("/v1/models/v1/promote", headers=AUTH).status_code == 200
    assert client.post("/v1/models/v2/promote", headers=AUTH).status_code == 200
    (tmp_path / "art" / "v1" / "shared.onnx").write_bytes(b"not onnx")
    r = client.post("/v1/models/rollback", headers=AUTH)
    assert r.status_code == 409 and "v1" in r.json()["detail"] and "sha256" in r.json()["detail"], r.text
    assert registry.live_model().id == "v2"  # type: ignore[union-attr]


def test_one_error_shape_everywhere_and_documented(client: TestClient) -> None:
    for r in (client.get("/nope"), client.put("/v1/domains", headers=AUTH), client.get("/v1/domains"),
              client.post("/v1/domains", content=b"{", headers={**AUTH, "Content-Type": "application/json"})):
        assert set(r.json()) == {"error", "detail"}, r.text
    assert client.get("/nope").json()["error"] == "not_found"
    r = client.put("/v1/domains", headers=AUTH)
    assert r.status_code == 405 and r.json()["error"] == "method_not_allowed"
    assert r.headers["allow"] == "GET, POST", "every method of the path, not one route's"
    schema = client.app.openapi()  # type: ignore[attr-defined]
    assert "HTTPValidationError" not in str(schema)
    for path, ops in schema["paths"].items():
        for method, op in ops.items():
            for code in ("401", "403", "422"):
                ref = op["responses"][code]["content"]["application/json"]["schema"]["$ref"]
                assert ref.endswith("/ErrorBody"), (path, method, code)


def test_admin_app_runs_on_its_own(tmp_path: Path) -> None:
    settings = RegistrySettings(url=f"sqlite://{tmp_path}/admin.db", admin_token=TOKEN)  # type: ignore[arg-type]
    with TestClient(create_admin_app(settings)) as client:
        assert client.get("/healthz").json() == {"status": "ok", "change_counter": 0}
        assert client.post("/v1/domains", json={"id": "comedy"}, headers=AUTH).status_code == 201
        wrong = {"Authorization": "Bearer wrong-token-0123456789abcdef"}
        assert client.post("/v1/domains", json={"id": "x"}, headers=wrong).status_code == 403
        assert client.get("/healthz").json()["change_counter"] == 1
    with open_registry(settings.url) as reg:
        assert reg.get_domain("comedy").status == "active"
