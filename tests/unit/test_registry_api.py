"""The admin HTTP API over a real sqlite registry, through FastAPI's TestClient."""

from __future__ import annotations

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

from contracts.errors import ConfigError
from contracts.settings import RegistrySettings
from domain_registry import open_registry
from domain_registry.api import build_router, install_error_handlers
from domain_registry.app import create_admin_app
from domain_registry.base import ModelVersion, Registry
from domain_registry.redis_store import RedisRegistry
from domain_registry.sqlite_store import SqliteRegistry
from tests.fixtures.redis_server import free_port

TOKEN = "s3cret-token"
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


def register(registry: Registry, *versions: str) -> None:
    for v in versions:
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
    assert client.get("/v1/domains/comedy").json()["display_name"] == "Comedy"
    assert [d["id"] for d in client.get("/v1/domains").json()["domains"]] == ["action", "comedy"]
    assert client.get("/v1/changes").json() == {"change_counter": 2}


@pytest.mark.parametrize("bad_id", ["Comedy", "a b", "x" * 65, "-a", "ü"])
def test_invalid_ids_are_422_with_the_reason(client: TestClient, bad_id: str) -> None:
    r = client.post("/v1/domains", json={"id": bad_id}, headers=AUTH)
    assert r.status_code == 422
    assert r.json()["error"] == "data_error" and "slug" in r.json()["detail"]
    assert client.get(f"/v1/domains/{bad_id}").status_code == 422


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
    assert client.get("/v1/domains/nope").status_code == 404
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
    kept = client.get("/v1/domains/comedy")
    assert kept.status_code == 200 and kept.json()["status"] == "retired" and kept.json()["settings"] == {"dr_k": 4}
    assert [d["id"] for d in client.get("/v1/domains", params={"status": "retired"}).json()["domains"]] == ["comedy"]
    assert client.get("/v1/domains", params={"status": "active"}).json()["domains"] == []
    assert client.post("/v1/domains", json={"id": "comedy"}, headers=AUTH).status_code == 409
    assert client.patch("/v1/domains/comedy", json={"status": "active"}, headers=AUTH).status_code == 410
    assert client.delete("/v1/domains/comedy", headers=AUTH).status_code == 410
    actions = [e["action"] for e in client.get("/v1/audit").json()["entries"]]
    assert actions == ["domain.retire", "domain.update", "domain.create"]


def test_promote_and_rollback(client: TestClient, registry: Registry) -> None:
    register(registry, "v1", "v2")
    assert client.get("/v1/models").json()["live"] is None
    assert client.post("/v1/models/rollback", headers=AUTH).status_code == 409
    r = client.post("/v1/models/v1/promote", headers={**AUTH, "X-Actor": "alice"})
    assert r.status_code == 200 and r.json()["status"] == "live"
    assert client.post("/v1/models/v2/promote", headers=AUTH).json()["id"] == "v2"
    listing = client.get("/v1/models").json()
    assert listing["live"] == "v2"
    assert [(m["id"], m["status"]) for m in listing["models"]] == [("v2", "live"), ("v1", "superseded")]
    r = client.post("/v1/models/rollback", headers=AUTH)
    assert r.status_code == 200 and r.json()["id"] == "v1"
    assert registry.get_model("v2").status == "rolled_back"
    assert client.post("/v1/models/v9/promote", headers=AUTH).status_code == 404
    assert client.post("/v1/models/bad%20id/promote", headers=AUTH).status_code == 422
    assert client.get("/v1/models", params={"limit": 0}).status_code == 422
    entries = client.get("/v1/audit", params={"limit": 3}).json()["entries"]
    assert [(e["action"], e["target"]) for e in entries] == [
        ("model.rollback", "v1"), ("model.promote", "v2"), ("model.promote", "v1")]
    assert entries[2]["actor"] == "api:alice" and entries[1]["actor"] == "api"


def test_router_maps_errors_without_app_handlers(registry: Registry) -> None:
    client = make_client(registry, handlers=False)
    r = client.get("/v1/domains/nope")
    assert r.status_code == 404 and r.json()["error"] == "not_found"
    assert client.post("/v1/domains", json={}, headers=AUTH).status_code == 422
    assert client.post("/v1/domains", json={"id": "a"}).status_code == 401


def test_backend_outage_is_503_with_retry_after() -> None:
    down = RedisRegistry(f"redis://127.0.0.1:{free_port()}/0", socket_timeout_s=0.2)
    client = make_client(down)
    for r in (client.get("/v1/domains"), client.post("/v1/domains", json={"id": "a"}, headers=AUTH),
              client.get("/v1/changes")):
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


def test_empty_token_is_refused() -> None:
    with pytest.raises(ConfigError):
        build_router(lambda: None, "")  # type: ignore[arg-type,return-value]


def test_admin_app_runs_on_its_own(tmp_path: Path) -> None:
    settings = RegistrySettings(url=f"sqlite://{tmp_path}/admin.db", admin_token=TOKEN)  # type: ignore[arg-type]
    with TestClient(create_admin_app(settings)) as client:
        assert client.get("/healthz").json() == {"status": "ok", "change_counter": 0}
        assert client.post("/v1/domains", json={"id": "comedy"}, headers=AUTH).status_code == 201
        assert client.post("/v1/domains", json={"id": "x"}, headers={"Authorization": "Bearer change-me"}
                           ).status_code == 403
        assert client.get("/healthz").json()["change_counter"] == 1
    with open_registry(settings.url) as reg:
        assert reg.get_domain("comedy").status == "active"
