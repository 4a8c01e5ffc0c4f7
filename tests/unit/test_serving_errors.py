"""Error mapping of the scoring endpoint: 404, 410, 413, 422, 503 + Retry-After; 500 (logged) only for a bug."""

from __future__ import annotations

import json
import uuid
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from contracts.settings import load_settings
from domain_registry import open_registry
from feature_store import open_store
from serving.app import create_app
from tests.fixtures.redis_server import free_port
from tests.support.tiny_model import cached_tiny, publish_demo
from tests.support.waiting import wait_until


@pytest.fixture(scope="module")
def tiny():
    return cached_tiny("mlp", steps=8, delta_steps=4, n_domains=4)


def _settings(root: Path, **extra: object):
    return load_settings(**{"artifacts_url": f"file://{root}", "serving.reload_poll_s": 0.05,
                            "serving.max_items": 5, **extra})


def _wait(predicate, timeout_s: float = 10.0) -> None:
    wait_until(predicate, timeout_s)


def test_client_errors(tiny, tmp_path: Path) -> None:
    store = open_store(f"memory://errors-{uuid.uuid4().hex}")
    registry = open_registry(f"sqlite://{tmp_path}/registry.db")
    publish_demo(tiny, tmp_path / "art", store, registry)
    with TestClient(create_app(_settings(tmp_path / "art"), feature_store=store, registry=registry)) as client:
        ok = {"user_id": "u1", "item_ids": ["i1"]}
        cases = [
            ("unknown", ok, 404, "not registered"),
            ("NOT A SLUG", ok, 404, "not registered"),
            ("dom-0", {"user_id": "u1", "item_ids": []}, 422, "item_ids"),
            ("dom-0", {"user_id": "u1"}, 422, "item_ids: Field required"),
            ("dom-0", {"user_id": "", "item_ids": ["i1"]}, 422, "user_id"),
            ("dom-0", {"user_id": "u1", "item_ids": ["i1"], "extra": 1}, 422, "extra"),
            ("dom-0", {"user_id": "u1", "item_ids": [f"i{k}" for k in range(6)]}, 422, "at most 5"),
            ("dom-0", {"user_id": 5, "item_ids": "i1"}, 422, "body"),
        ]
        for domain, body, status, reason in cases:
            r = client.post(f"/v1/domains/{domain}/ctr", json=body)
            assert r.status_code == status, (domain, body, r.text)
            assert reason in r.json()["detail"], r.text
        r = client.post("/v1/domains/dom-0/ctr", content=b"{not json", headers={"content-type": "application/json"})
        assert r.status_code == 422
        before = client.get("/metrics").text
        assert 'mamdr_serving_requests_total{domain="unknown",status="404",version="v1"} 2.0' in before
        # Retired: 410. Paused: still served (pausing stops training, not scoring).
        registry.update_domain("dom-1", status="retired")
        registry.update_domain("dom-2", status="paused")
        _wait(lambda: client.post("/v1/domains/dom-1/ctr", json=ok).status_code == 410)
        assert "retired" in client.post("/v1/domains/dom-1/ctr", json=ok).json()["detail"]
        assert client.post("/v1/domains/dom-2/ctr", json=ok).status_code == 200
        # A domain registered after the export has no delta: it is served by θS at once.
        registry.create_domain("fresh")
        _wait(lambda: client.post("/v1/domains/fresh/ctr", json=ok).status_code == 200)
        metrics = client.get("/metrics").text
        # Domain labels only from the registry: raw input never becomes a label.
        assert 'domain="NOT A SLUG"' not in metrics
        assert 'mamdr_serving_requests_total{domain="dom-1",status="410",version="v1"}' in metrics
        assert 'mamdr_serving_requests_total{domain="dom-0",status="422",version="none"}' in metrics
        assert 'mamdr_serving_model_version_info{version="v1"} 1.0' in metrics
        assert client.get("/openapi.json").json()["paths"]["/v1/domains/{domain}/ctr"]["post"]
    registry.close()


def test_feature_store_unreachable_is_503_with_retry_after(tiny, tmp_path: Path) -> None:
    store = open_store(f"memory://errors-{uuid.uuid4().hex}")
    registry = open_registry(f"sqlite://{tmp_path}/registry.db")
    publish_demo(tiny, tmp_path / "art", store, registry)
    # A real redis client pointed at a port where nothing listens.
    dead = open_store(f"redis://127.0.0.1:{free_port()}/0", load_settings().feature_store)
    with TestClient(create_app(_settings(tmp_path / "art"), feature_store=dead, registry=registry)) as client:
        r = client.post("/v1/domains/dom-0/ctr", json={"user_id": "u1", "item_ids": ["i1"]})
        assert r.status_code == 503, r.text
        assert int(r.headers["Retry-After"]) >= 1
        assert client.get("/readyz").status_code == 200  # the model is there; the store is not
    registry.close()


def test_not_ready_without_a_live_model(tmp_path: Path) -> None:
    store = open_store(f"memory://errors-{uuid.uuid4().hex}")
    registry = open_registry(f"sqlite://{tmp_path}/registry.db")
    registry.create_domain("dom-0")
    with TestClient(create_app(_settings(tmp_path / "art"), feature_store=store, registry=registry)) as client:
        assert client.get("/healthz").status_code == 200
        r = client.get("/readyz")
        assert r.status_code == 503 and r.json()["ready"] is False
        r = client.post("/v1/domains/dom-0/ctr", json={"user_id": "u1", "item_ids": ["i1"]})
        assert r.status_code == 503 and "Retry-After" in r.headers
    registry.close()


def test_collected_embedding_version_falls_back_to_the_current_one(tiny, tmp_path: Path) -> None:
    from trainer.feature_sync import sync_embeddings

    store = open_store(f"memory://errors-{uuid.uuid4().hex}")
    registry = open_registry(f"sqlite://{tmp_path}/registry.db")
    publish_demo(tiny, tmp_path / "art", store, registry)  # pins embedding version emb-1
    sync_embeddings(tiny.params.model, tiny.user_ids, tiny.item_ids, store, "emb-2")
    assert store.gc(1) == ["emb-1"]
    with TestClient(create_app(_settings(tmp_path / "art"), feature_store=store, registry=registry)) as client:
        r = client.post("/v1/domains/dom-0/ctr", json={"user_id": "u1", "item_ids": ["i1"]})
        assert r.status_code == 200, r.text
        assert r.json()["degraded"] is True, "a response scored with fallback embeddings says so"
        metrics = client.get("/metrics").text
        assert "mamdr_serving_feature_version_fallbacks_total 1.0" in metrics
        assert 'mamdr_serving_degraded_responses_total{domain="dom-0"} 1.0' in metrics
    registry.close()


def test_an_unexpected_exception_is_500_and_logged(tiny, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                   caplog: pytest.LogCaptureFixture) -> None:
    import serving.batching

    store = open_store(f"memory://errors-{uuid.uuid4().hex}")
    registry = open_registry(f"sqlite://{tmp_path}/registry.db")
    publish_demo(tiny, tmp_path / "art", store, registry)

    def broken(*args: object, **kwargs: object) -> None:
        raise ZeroDivisionError("injected bug")

    monkeypatch.setattr(serving.batching, "score_many", broken)
    with TestClient(create_app(_settings(tmp_path / "art"), feature_store=store, registry=registry)) as client:
        with caplog.at_level("ERROR", logger="contracts.http"):
            r = client.post("/v1/domains/dom-0/ctr", json={"user_id": "u1", "item_ids": ["i1"]})
        assert r.status_code == 500, r.text
        assert r.json()["error"] == "internal_error" and "ZeroDivisionError" in r.json()["detail"]
        assert "injected bug" not in r.json()["detail"], "internals stay in the log"
        logged = [rec for rec in caplog.records if "unexpected error in POST /v1/domains/dom-0/ctr" in rec.message]
        assert logged and logged[0].exc_info is not None, "logged with its traceback"
        metrics = client.get("/metrics").text
        assert 'mamdr_serving_requests_total{domain="dom-0",status="500",version="v1"} 1.0' in metrics
        assert client.get("/healthz").status_code == 200, "a bug is not an outage"
    registry.close()


def test_serving_refuses_a_manifest_edited_after_publication(tiny, tmp_path: Path) -> None:
    store = open_store(f"memory://errors-{uuid.uuid4().hex}")
    registry = open_registry(f"sqlite://{tmp_path}/registry.db")
    publish_demo(tiny, tmp_path / "art", store, registry)
    publish_demo(tiny, tmp_path / "art", store, registry, "v2", parent="v1", promote=False)
    manifest = tmp_path / "art" / "v2" / "manifest.json"
    manifest.write_text(manifest.read_text().replace('"events_included": 0', '"events_included": 999'))
    with TestClient(create_app(_settings(tmp_path / "art"), feature_store=store, registry=registry)) as client:
        assert client.get("/readyz").json()["model_version"] == "v1"
        registry.promote("v2")  # straight to the store: what an attacker with registry access could do
        _wait(lambda: client.get("/readyz").json()["last_reload_error"] is not None)
        ready = client.get("/readyz").json()
        assert ready["model_version"] == "v1" and "recorded at publish" in ready["last_reload_error"]
        assert "mamdr_serving_reload_failures_total 1.0" in client.get("/metrics").text
        r = client.post("/v1/domains/dom-0/ctr", json={"user_id": "u1", "item_ids": ["i1"]})
        assert r.status_code == 200 and r.json()["model_version"] == "v1"
    registry.close()


def test_one_documented_error_shape(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    store = open_store(f"memory://errors-{uuid.uuid4().hex}")
    registry = open_registry(f"sqlite://{tmp_path}/registry.db")
    with caplog.at_level("WARNING"):
        app = create_app(_settings(tmp_path / "art"), feature_store=store, registry=registry)
    assert "admin API disabled" in caplog.text and "MAMDR_REGISTRY__ADMIN_TOKEN" in caplog.text
    with TestClient(app) as client:
        for r, status, code in [
            (client.get("/nope"), 404, "not_found"),
            (client.get("/v1/domains/dom-0/ctr"), 405, "method_not_allowed"),
            (client.get("/v1/models"), 404, "admin_disabled"),
            (client.post("/v1/domains/dom-0/ctr", content=b"x" * (2 << 20)), 413, "payload_too_large"),
        ]:
            assert r.status_code == status and r.json()["error"] == code and r.json()["detail"], r.text
            assert set(r.json()) == {"error", "detail"}
        schema = client.get("/openapi.json").json()
    assert "HTTPValidationError" not in json.dumps(schema)
    for path, ops in schema["paths"].items():
        for method, op in ops.items():
            codes = set(op["responses"])
            assert {"413", "422", "500", "503"} <= codes, (path, method)
            for code, spec in op["responses"].items():
                if code.startswith(("4", "5")) and path not in ("/readyz", "/v2/health/ready"):
                    body = "/V2ErrorBody" if path.startswith("/v2") else "/ErrorBody"
                    assert spec["content"]["application/json"]["schema"]["$ref"].endswith(body), (path, code)
    assert {"404", "410"} <= set(schema["paths"]["/v1/domains/{domain}/ctr"]["post"]["responses"])
    registry.close()
