"""KServe Open Inference Protocol v2 conformance: health, readiness, metadata, infer (one user, a batch of
users with shared or per-user candidates), and every error in the v2 shape ``{"error": "..."}`` with a 4xx."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from contracts.settings import load_settings
from domain_registry import open_registry
from feature_store import open_store
from serving.app import create_app
from tests.support.tiny_model import TinyModel, cached_tiny, publish_demo


@pytest.fixture(scope="module")
def tiny() -> TinyModel:
    return cached_tiny("mlp", steps=8, delta_steps=4, n_domains=4)


def _settings(root: Path, **extra: object):
    return load_settings(**{"artifacts_url": f"file://{root}", "serving.reload_poll_s": 0.05,
                            "serving.max_items": 5, "serving.max_batch": 4, **extra})


@pytest.fixture(scope="module")
def client(tiny: TinyModel, tmp_path_factory: pytest.TempPathFactory) -> Iterator[TestClient]:
    tmp = tmp_path_factory.mktemp("serving-v2")
    store = open_store(f"memory://v2-{uuid.uuid4().hex}")
    registry = open_registry(f"sqlite://{tmp}/registry.db")
    publish_demo(tiny, tmp / "art", store, registry)
    registry.create_domain("gone")
    registry.update_domain("gone", status="retired")
    with TestClient(create_app(_settings(tmp / "art"), feature_store=store, registry=registry)) as c:
        yield c
    registry.close()


def _bytes(name: str, values: list, shape: list[int] | None = None) -> dict:
    return {"name": name, "shape": shape or [len(values)], "datatype": "BYTES", "data": values}


def _v1(client: TestClient, domain: str, user: str, items: list[str]) -> dict:
    r = client.post(f"/v1/domains/{domain}/ctr", json={"user_id": user, "item_ids": items})
    assert r.status_code == 200, r.text
    return r.json()


def test_health_server_and_model_metadata(client: TestClient) -> None:
    assert client.get("/v2/health/live").json() == {"live": True}
    ready = client.get("/v2/health/ready")
    assert ready.status_code == 200 and ready.json() == {"ready": True}
    assert client.get("/v2").json()["name"] == "mamdr"
    meta = client.get("/v2/models/dom-1")
    assert meta.status_code == 200, meta.text
    body = meta.json()
    assert body["name"] == "dom-1" and body["versions"] == ["v1"] and body["platform"] == "onnxruntime_onnx"
    assert {(t["name"], t["datatype"]) for t in body["inputs"]} == {
        ("user_id", "BYTES"), ("user_ids", "BYTES"), ("item_ids", "BYTES")}
    assert [(t["name"], t["datatype"]) for t in body["outputs"]] == [("scores", "FP32")]
    r = client.get("/v2/models/dom-1/ready")
    assert r.status_code == 200 and r.json() == {"name": "dom-1", "ready": True}


def test_infer_one_user_equals_the_per_domain_endpoint(client: TestClient) -> None:
    items = ["i3", "i9", "i4"]
    body = {"id": "req-7", "inputs": [_bytes("user_id", ["u5"]), _bytes("item_ids", items)],
            "outputs": [{"name": "scores", "parameters": {"binary_data": False}}]}
    def answered() -> float:
        from prometheus_client.parser import text_string_to_metric_families

        families = {f.name: f for f in text_string_to_metric_families(client.get("/metrics").text)}
        return sum(s.value for s in families["mamdr_serving_requests"].samples
                   if s.labels == {"domain": "dom-2", "status": "200", "version": "v1"})

    before = answered()
    r = client.post("/v2/models/dom-2/infer", json=body)
    assert r.status_code == 200, r.text
    assert answered() == before + 1, "a v2 infer counts in the same requests series as the per-domain endpoint"
    out = r.json()
    assert out["model_name"] == "dom-2" and out["model_version"] == "v1" and out["id"] == "req-7"
    [scores] = out["outputs"]
    assert scores["name"] == "scores" and scores["datatype"] == "FP32" and scores["shape"] == [3]
    assert scores["data"] == _v1(client, "dom-2", "u5", items)["scores"]
    # the tritonclient JSON body carries shape [1, 1] for one user, and no outputs (all of them)
    r = client.post("/v2/models/dom-2/infer", json={"inputs": [_bytes("user_id", [["u5"]], [1, 1]),
                                                               _bytes("item_ids", items)]})
    assert r.status_code == 200 and r.json()["outputs"][0]["data"] == scores["data"]


def test_infer_a_batch_of_users_keeps_their_order(client: TestClient) -> None:
    users = ["u7", "stranger", "u1", "u7"]
    shared = ["i1", "i2", "new-item"]
    r = client.post("/v2/models/dom-0/infer", json={"inputs": [_bytes("user_ids", users), _bytes("item_ids", shared)]})
    assert r.status_code == 200, r.text
    out = r.json()
    assert out["outputs"][0]["shape"] == [4, 3]
    data = out["outputs"][0]["data"]
    for k, user in enumerate(users):
        assert data[3 * k:3 * k + 3] == _v1(client, "dom-0", user, shared)["scores"], user
    assert out["parameters"]["cold_users"] == ["stranger"] and out["parameters"]["cold_items"] == ["new-item"]
    # one row of candidates per user, flat or nested
    rows = [["i1", "i2"], ["i3", "i4"], ["i5", "i6"]]
    for items in ([i for row in rows for i in row], rows):
        r = client.post("/v2/models/dom-3/infer", json={"inputs": [
            _bytes("user_ids", users[:3]), {"name": "item_ids", "shape": [3, 2], "datatype": "BYTES", "data": items}]})
        assert r.status_code == 200, r.text
        assert r.json()["outputs"][0]["shape"] == [3, 2]
        want = [s for user, row in zip(users[:3], rows, strict=True) for s in _v1(client, "dom-3", user, row)["scores"]]
        assert r.json()["outputs"][0]["data"] == want


def _infer(*inputs: dict, **extra: object) -> dict:
    return {"inputs": list(inputs), **extra}


BAD_BODIES = [
    (_infer(_bytes("item_ids", ["i1"])), "exactly one of user_id"),
    (_infer(_bytes("user_id", ["u1"]), _bytes("user_ids", ["u1"]), _bytes("item_ids", ["i1"])), "exactly one"),
    (_infer(_bytes("user_id", ["u1"])), "item_ids is required"),
    (_infer(_bytes("user_id", ["u1"]), _bytes("item_ids", ["i1"]), _bytes("item_ids", ["i2"])), "twice"),
    (_infer(_bytes("user_id", ["u1"]), _bytes("items", ["i1"])), "unknown input"),
    (_infer(_bytes("user_id", ["u1"]), _bytes("item_ids", ["i1"]), outputs=[{"name": "logits"}]), "unknown output"),
    (_infer(_bytes("user_id", ["u1"]), {"name": "item_ids", "shape": [1], "datatype": "FP32", "data": [1.0]}),
     "BYTES"),
    (_infer(_bytes("user_id", ["u1"]), _bytes("item_ids", ["i1", "i2"], [3])), "3 values"),
    (_infer(_bytes("user_id", ["u1"]), _bytes("item_ids", ["i1"], [-1])), "negative"),
    (_infer(_bytes("user_id", ["u1", "u2"]), _bytes("item_ids", ["i1"])), "shape [1]"),
    (_infer(_bytes("user_id", [7]), _bytes("item_ids", ["i1"])), "strings"),
    (_infer(_bytes("user_id", [""]), _bytes("item_ids", ["i1"])), "strings"),
    (_infer(_bytes("user_id", ["u1"]), _bytes("item_ids", [])), "empty"),
    (_infer(_bytes("user_ids", []), _bytes("item_ids", ["i1"])), "empty"),
    (_infer(_bytes("user_id", ["u1"]), _bytes("item_ids", [f"i{k}" for k in range(6)])), "at most 5"),
    (_infer(_bytes("user_ids", [f"u{k}" for k in range(5)]), _bytes("item_ids", ["i1"])), "at most 4"),
    (_infer(_bytes("user_ids", ["u1", "u2"]), _bytes("item_ids", ["i1", "i2", "i3"], [3, 1])), "one row per user"),
    ({"inputs": []}, "inputs"),
    ({"inputs": [{"name": "user_id"}]}, "inputs.0"),
    ({"inputs": [_bytes("user_id", ["u1"])], "extra": 1}, "extra"),
    ([1, 2], "body"),
]


@pytest.mark.parametrize(("body", "reason"), BAD_BODIES)
def test_bad_infer_bodies_are_422_in_the_v2_error_shape(client: TestClient, body: object, reason: str) -> None:
    r = client.post("/v2/models/dom-0/infer", json=body)
    assert r.status_code == 422, r.text
    assert set(r.json()) == {"error"} and reason in r.json()["error"], r.text


def test_other_errors_are_4xx_in_the_v2_error_shape(client: TestClient) -> None:
    ok = _infer(_bytes("user_id", ["u1"]), _bytes("item_ids", ["i1"]))
    cases = [
        (client.post("/v2/models/nope/infer", json=ok), 404, "not registered"),
        (client.get("/v2/models/nope"), 404, "not registered"),
        (client.get("/v2/models/nope/ready"), 404, "not registered"),
        (client.post("/v2/models/gone/infer", json=ok), 410, "retired"),
        (client.get("/v2/models/gone/ready"), 410, "retired"),
        (client.post("/v2/models/dom-0/infer", content=b"{not json", headers={"content-type": "application/json"}),
         422, "json"),
        (client.get("/v2/models/dom-0/infer"), 405, "POST"),
        (client.get("/v2/models/dom-0/versions/v1/stats"), 404, "no such path"),
        (client.post("/v2/models/dom-0/infer", content=b"x" * (2 << 20)), 413, "max_body_bytes"),
    ]
    for r, status, reason in cases:
        assert r.status_code == status, r.text
        assert set(r.json()) == {"error"} and reason in r.json()["error"].lower() + r.json()["error"], r.text
    metrics = client.get("/metrics").text
    assert 'mamdr_serving_requests_total{domain="gone",status="410",version="v1"}' in metrics
    assert 'mamdr_serving_requests_total{domain="unknown",status="404",version="v1"}' in metrics


def test_not_ready_before_a_model_is_published(tmp_path: Path) -> None:
    store = open_store(f"memory://v2-{uuid.uuid4().hex}")
    registry = open_registry(f"sqlite://{tmp_path}/registry.db")
    registry.create_domain("comedy")
    with TestClient(create_app(_settings(tmp_path / "art"), feature_store=store, registry=registry)) as client:
        assert client.get("/v2/health/live").status_code == 200
        r = client.get("/v2/health/ready")
        assert r.status_code == 503 and r.json() == {"ready": False}
        for r in (client.get("/v2/models/comedy/ready"),
                  client.post("/v2/models/comedy/infer",
                              json=_infer(_bytes("user_id", ["u1"]), _bytes("item_ids", ["i1"])))):
            assert r.status_code == 503 and "Retry-After" in r.headers, r.text
            assert set(r.json()) == {"error"} and "no model version" in r.json()["error"]
    registry.close()
