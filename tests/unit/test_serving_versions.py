"""Version per request: a pinned version serves its own scores (exactly) while another is live, on both protocols
and through the header; unknown or rolled-back versions are 404; a canary takes a stable hash slice of users;
request metrics carry the version label, bounded by the versions held."""

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
from serving.versions import canary_slice
from tests.support.tiny_model import TinyModel, cached_tiny, publish_demo
from tests.support.waiting import wait_until

ITEMS = ["i1", "i2", "i3"]


def _settings(root: Path, **extra: object):
    return load_settings(**{"artifacts_url": f"file://{root}", "serving.reload_poll_s": 0.05, **extra})


def _wait(predicate, timeout_s: float = 20.0) -> None:
    wait_until(predicate, timeout_s)


def _v1(client: TestClient, user: str, version: str | None = None, header: str | None = None,
        domain: str = "dom-1") -> dict:
    body = {"user_id": user, "item_ids": ITEMS, **({"model_version": version} if version else {})}
    r = client.post(f"/v1/domains/{domain}/ctr", json=body, headers={"X-Model-Version": header} if header else {})
    assert r.status_code == 200, r.text
    return r.json()


def _infer(users: list[str]) -> dict:
    name, shape = ("user_id", [1]) if len(users) == 1 else ("user_ids", [len(users)])
    return {"inputs": [{"name": name, "shape": shape, "datatype": "BYTES", "data": users},
                       {"name": "item_ids", "shape": [3], "datatype": "BYTES", "data": ITEMS}]}


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Path, object, object, TinyModel, dict]]:
    """v1 scored while live (the reference), then v2 promoted over it and v3 published as a candidate."""
    tiny = cached_tiny("mlp", steps=8, delta_steps=4, n_domains=4)
    tmp = tmp_path_factory.mktemp("versions")
    store = open_store(f"memory://versions-{uuid.uuid4().hex}")
    registry = open_registry(f"sqlite://{tmp}/registry.db")
    root = tmp / "art"
    publish_demo(tiny, root, store, registry, "v1")
    with TestClient(create_app(_settings(root), feature_store=store, registry=registry)) as client:
        reference = {u: _v1(client, u) for u in tiny.user_ids[:4]}
    assert {r["model_version"] for r in reference.values()} == {"v1"}
    saved = {slot: {n: t.clone() for n, t in tiny.params.delta(slot).items()} for slot in tiny.domains.values()}
    try:  # other θi, so every version scores differently (the cached tiny model is restored after)
        for step, (version, promote) in enumerate((("v2", True), ("v3", False)), start=1):
            for slot, old in saved.items():
                tiny.params.set_delta(slot, {n: t + 0.05 * step for n, t in old.items()})
            publish_demo(tiny, root, store, registry, version, parent="v1", promote=promote)
    finally:
        for slot, old in saved.items():
            tiny.params.set_delta(slot, old)
    yield root, store, registry, tiny, reference
    registry.close()


def test_a_pinned_version_serves_its_own_scores_while_another_is_live(world) -> None:
    root, store, registry, _, reference = world
    with TestClient(create_app(_settings(root), feature_store=store, registry=registry)) as client:
        for user, want in reference.items():
            live = _v1(client, user)
            assert live["model_version"] == "v2" and live["scores"] != want["scores"]
            assert _v1(client, user, version="v1") == want  # body field: exactly v1's scores
            assert _v1(client, user, header="v1") == want  # header
            assert _v1(client, user, version="v1", header="v1") == want  # both, agreeing
            for path, body in (("/v2/models/dom-1/versions/v1/infer", _infer([user])),
                               ("/v2/models/dom-1/infer", {**_infer([user]), "parameters": {"model_version": "v1"}})):
                r = client.post(path, json=body)
                assert r.status_code == 200, r.text
                assert r.json()["model_version"] == "v1" and r.json()["outputs"][0]["data"] == want["scores"]
        assert client.get("/readyz").json()["versions_held"] == ["v1"]
        assert client.get("/v2/models/dom-1").json()["versions"] == ["v2", "v1"]
        assert client.get("/v2/models/dom-1/versions/v1/ready").json() == {"name": "dom-1", "ready": True}


def test_unknown_rolled_back_and_conflicting_versions_are_refused(world) -> None:
    root, store, registry, tiny, _ = world
    with TestClient(create_app(_settings(root), feature_store=store, registry=registry)) as client:
        user = tiny.user_ids[0]
        r = client.post("/v1/domains/dom-1/ctr", json={"user_id": user, "item_ids": ITEMS, "model_version": "v9"})
        assert r.status_code == 404 and r.json()["error"] == "model_version_not_found"
        assert "'v9' is not published" in r.json()["detail"]
        r = client.post("/v2/models/dom-1/versions/v9/infer", json=_infer([user]))
        assert r.status_code == 404 and r.json()["error"].startswith("model_version_not_found: model version 'v9'")
        assert client.get("/v2/models/dom-1/versions/v9").status_code == 404
        r = client.post("/v1/domains/dom-1/ctr", json={"user_id": user, "item_ids": ITEMS, "model_version": "v1"},
                        headers={"X-Model-Version": "v3"})
        assert r.status_code == 422 and "must agree" in r.json()["detail"]
        assert _v1(client, user, version="v3")["model_version"] == "v3"  # a candidate can be pinned
    with TestClient(create_app(_settings(root, **{"serving.max_extra_versions": 0}), feature_store=store,
                               registry=registry)) as client:
        r = client.post("/v1/domains/dom-1/ctr", json={"user_id": "u1", "item_ids": ITEMS, "model_version": "v1"})
        assert r.status_code == 404 and "max_extra_versions = 0" in r.json()["detail"]


def test_a_rolled_back_version_is_refused_and_dropped(tmp_path: Path) -> None:
    tiny = cached_tiny("mlp", steps=8, delta_steps=4, n_domains=4)
    store = open_store(f"memory://rollback-{uuid.uuid4().hex}")
    registry = open_registry(f"sqlite://{tmp_path}/registry.db")
    try:
        publish_demo(tiny, tmp_path / "art", store, registry, "v1")
        publish_demo(tiny, tmp_path / "art", store, registry, "v2", parent="v1")
        with TestClient(create_app(_settings(tmp_path / "art"), feature_store=store, registry=registry)) as client:
            assert _v1(client, "u1")["model_version"] == "v2"
            assert _v1(client, "u1", version="v1")["model_version"] == "v1"
            registry.promote("v1")
            _wait(lambda: _v1(client, "u1")["model_version"] == "v1")
            assert _v1(client, "u1", version="v2")["model_version"] == "v2"  # v2 now held beside live v1
            registry.promote("v2")
            _wait(lambda: _v1(client, "u1")["model_version"] == "v2")
            registry.rollback()  # v2 rolled back, v1 live: a held v2 is dropped and no longer served
            _wait(lambda: _v1(client, "u1")["model_version"] == "v1" and "v2" not in
                  client.get("/readyz").json()["versions_held"])
            r = client.post("/v1/domains/dom-1/ctr", json={"user_id": "u1", "item_ids": ITEMS, "model_version": "v2"})
            assert r.status_code == 404 and "rolled back" in r.json()["detail"]
    finally:
        registry.close()


def test_a_canary_serves_a_stable_hash_slice_of_users(world) -> None:
    root, store, registry, tiny, reference = world
    assert canary_slice("u1", "v1") == pytest.approx(0.987123069186277)  # the same in every process and release
    fraction = 0.5
    settings = _settings(root, **{"serving.canary_version": "v1", "serving.canary_fraction": fraction})
    with TestClient(create_app(settings, feature_store=store, registry=registry)) as client:
        users = tiny.user_ids[:40]
        first = {u: _v1(client, u)["model_version"] for u in users}
        assert first == {u: "v1" if canary_slice(u, "v1") < fraction else "v2" for u in users}
        assert {u: _v1(client, u)["model_version"] for u in users} == first  # the same user, the same version
        assert 5 < sum(v == "v1" for v in first.values()) < 35
        for user, want in reference.items():  # the canary's users get exactly the canary's scores
            if first[user] == "v1":
                assert _v1(client, user) == want
        assert _v1(client, users[0], version="v2")["model_version"] == "v2"  # a pin overrides the canary
        r = client.post("/v2/models/dom-1/infer", json=_infer(users[:8]))
        assert r.status_code == 200, r.text
        rows = [first[u] for u in users[:8]]
        assert len(set(rows)) == 2, "the batch's users fall on both sides of the slice"
        assert r.json()["parameters"]["model_versions"] == rows  # each row says which version scored it
        data = r.json()["outputs"][0]["data"]
        assert [data[3 * k:3 * k + 3] for k in range(8)] == [_v1(client, u)["scores"] for u in users[:8]]
        metrics = client.get("/metrics").text
        assert 'mamdr_serving_requests_total{domain="dom-1",status="200",version="v1"}' in metrics
        assert 'mamdr_serving_requests_total{domain="dom-1",status="200",version="v2"}' in metrics


def test_request_metrics_carry_the_version_and_stay_bounded(world) -> None:
    root, store, registry, tiny, _ = world
    settings = _settings(root, **{"serving.max_extra_versions": 1})
    with TestClient(create_app(settings, feature_store=store, registry=registry)) as client:
        user = tiny.user_ids[0]
        _v1(client, user)
        _v1(client, user, version="v1")
        client.post("/v1/domains/dom-1/ctr", json={"user_id": user, "item_ids": ITEMS, "model_version": "v9"})
        metrics = client.get("/metrics").text
        for version in ("v1", "v2"):
            assert f'mamdr_serving_requests_total{{domain="dom-1",status="200",version="{version}"}} 1.0' in metrics
            assert f'mamdr_serving_request_latency_seconds_count{{domain="dom-1",version="{version}"}} 1.0' in metrics
        assert 'mamdr_serving_requests_total{domain="dom-1",status="404",version="none"} 1.0' in metrics
        _v1(client, user, version="v3")  # one extra version held: v3 replaces v1, v1's series go at the next scrape
        assert client.get("/readyz").json()["versions_held"] == ["v3"]
        metrics = client.get("/metrics").text
        assert 'version="v1"' not in metrics and 'version="v3"' in metrics
