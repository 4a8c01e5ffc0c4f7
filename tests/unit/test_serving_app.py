"""The serving app over the memory:// store and a sqlite registry: parity with torch, errors, metrics."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch
from fastapi.testclient import TestClient

from contracts.settings import Settings, load_settings
from domain_registry import open_registry
from feature_store import open_store
from serving.app import create_app
from tests.support.tiny_model import TinyModel, cached_tiny, publish_demo
from trainer.export.view import build_view_module, domain_view_arrays

N_REQUESTS = 1_050  # parity: at least 1,000 requests in total


@pytest.fixture(scope="module")
def tiny() -> TinyModel:
    return cached_tiny("mlp", steps=8, delta_steps=4, n_domains=4)


def settings_for(root: Path, **extra: object) -> Settings:
    return load_settings(**{"artifacts_url": f"file://{root}", "serving.reload_poll_s": 0.05, **extra})


@pytest.fixture(scope="module")
def published(tiny: TinyModel, tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Path, object, object]]:
    """One export shared by this module's apps (each app has its own metrics)."""
    tmp = tmp_path_factory.mktemp("serving-app")
    store = open_store(f"memory://serving-{uuid.uuid4().hex}")
    registry = open_registry(f"sqlite://{tmp}/registry.db")
    publish_demo(tiny, tmp / "art", store, registry, "v1")
    yield tmp / "art", store, registry
    registry.close()


@pytest.fixture(params=["feed", "session"])
def served(published, request: pytest.FixtureRequest) -> Iterator[tuple[TestClient, object]]:
    root, store, registry = published
    app = create_app(settings_for(root, **{"serving.composition": request.param}),
                     feature_store=store, registry=registry)
    with TestClient(app) as client:
        yield client, registry


def torch_scores(tiny: TinyModel, slot: int, users: list[int], items: list[int]) -> np.ndarray:
    """The torch model with Θ_slot = θS + θ_slot, one batch for many requests."""
    n = len(items)
    with torch.no_grad():
        return torch.sigmoid(tiny.params.forward_domain(
            slot, torch.tensor(users), torch.tensor(items), torch.full((n,), slot)
        )).numpy()


def test_http_scores_equal_torch_for_every_domain(served, tiny: TinyModel) -> None:
    client, _ = served
    rng = np.random.default_rng(7)
    domains = list(tiny.domains.items())
    got: dict[int, list[float]] = {slot: [] for _, slot in domains}
    asked: dict[int, tuple[list[int], list[int]]] = {slot: ([], []) for _, slot in domains}
    for k in range(N_REQUESTS // 2):  # two strategies x 525 = 1,050 requests
        domain, slot = domains[k % len(domains)]
        user = int(rng.integers(len(tiny.user_ids)))
        items = rng.integers(len(tiny.item_ids), size=int(rng.integers(1, 30))).tolist()
        r = client.post(f"/v1/domains/{domain}/ctr",
                        json={"user_id": tiny.user_ids[user], "item_ids": [tiny.item_ids[i] for i in items]})
        assert r.status_code == 200, r.text
        body = r.json()
        assert body["model_version"] == "v1" and body["cold_user"] is False and body["cold_items"] == []
        assert len(body["scores"]) == len(items)
        got[slot] += body["scores"]
        asked[slot][0].extend([user] * len(items))
        asked[slot][1].extend(items)
    for slot, (users, items) in asked.items():
        np.testing.assert_allclose(got[slot], torch_scores(tiny, slot, users, items), atol=1e-5, rtol=0)
    # Domains really differ (θi is not zero): the same request scores differently per domain.
    payload = {"user_id": "u1", "item_ids": ["i1", "i2", "i3"]}
    per_domain = {d: tuple(client.post(f"/v1/domains/{d}/ctr", json=payload).json()["scores"]) for d in tiny.domains}
    assert len(set(per_domain.values())) == len(per_domain)


def test_cold_user_and_items_use_the_documented_fallback(served, tiny: TinyModel) -> None:
    client, _ = served
    r = client.post("/v1/domains/dom-2/ctr", json={"user_id": "stranger", "item_ids": ["i5", "new-item", "i6"]})
    assert r.status_code == 200
    body = r.json()
    assert body["cold_user"] is True and body["cold_items"] == ["new-item"]
    model = tiny.params.model
    mean_u = model.user_embedding.weight.detach().mean(0)
    mean_i = model.item_embedding.weight.detach().mean(0)
    ue = mean_u.expand(3, -1)
    ie = torch.stack([model.item_embedding.weight[5].detach(), mean_i, model.item_embedding.weight[6].detach()])
    slot = tiny.domains["dom-2"]
    # Reference: the torch model with Θ_dom-2 scoring the mean vectors (not ONNX).
    view = build_view_module(model, domain_view_arrays(tiny.params, slot))
    with torch.no_grad():
        want = torch.sigmoid(view(ue, ie))
    np.testing.assert_allclose(body["scores"], want.numpy(), atol=1e-5)
    metrics = client.get("/metrics").text
    assert 'mamdr_serving_cold_users_total{domain="dom-2"} 1.0' in metrics
    assert 'mamdr_serving_cold_items_total{domain="dom-2"} 1.0' in metrics


def test_metrics_have_process_series_and_counters_that_only_grow(served) -> None:
    from prometheus_client.parser import text_string_to_metric_families

    client, _ = served
    for domain in ("dom-1", "dom-2", "dom-1"):
        assert client.post(f"/v1/domains/{domain}/ctr", json={"user_id": "u1", "item_ids": ["i1"]}).status_code == 200
    families = {f.name: f for f in text_string_to_metric_families(client.get("/metrics").text)}
    assert {"process_cpu_seconds", "process_resident_memory_bytes", "python_gc_objects_collected"} <= set(families)
    assert families["mamdr_serving_composer_misses"].type == "counter"
    first = next(s.value for s in families["mamdr_serving_composer_misses"].samples if s.name.endswith("_total"))
    client.post("/v1/domains/dom-0/ctr", json={"user_id": "u1", "item_ids": ["i1"]})
    again = {f.name: f for f in text_string_to_metric_families(client.get("/metrics").text)}
    second = next(s.value for s in again["mamdr_serving_composer_misses"].samples if s.name.endswith("_total"))
    assert second >= first


def test_two_serving_processes_cannot_share_one_port() -> None:
    """Without SO_REUSEPORT a second process fails to bind instead of splitting /metrics and /readyz."""
    from contracts.errors import ConfigError
    from serving.server import listening_socket

    first = listening_socket("127.0.0.1", 0)
    try:
        port = first.getsockname()[1]
        with pytest.raises(ConfigError, match="pick another --port"):
            listening_socket("127.0.0.1", port).close()
    finally:
        first.close()


def test_a_registry_that_comes_back_empty_is_an_outage_not_unknown_domains(published) -> None:
    """Redis back empty after an outage: serving keeps its known domains and model, answers 503 (retry) for a
    domain it cannot check, and /readyz says why; it never turns every domain into 404."""
    from serving.reload import Reloader

    root, store, registry = published
    app = create_app(settings_for(root), feature_store=store, registry=registry)
    with TestClient(app) as client:
        body = {"user_id": "u1", "item_ids": ["i1"]}
        assert client.post("/v1/domains/dom-1/ctr", json=body).status_code == 200
        state = app.state.serving
        # what a Redis registry looks like after it came back empty: counter reset, no domains, no model
        state.registry = type("Wiped", (), {"change_counter": lambda self: 0, "list_domains": lambda self: [],
                                            "live_model": lambda self: None})()
        Reloader(state).poll_once()
        assert client.post("/v1/domains/dom-1/ctr", json=body).status_code == 200  # known: still served
        r = client.post("/v1/domains/brand-new/ctr", json=body)
        assert r.status_code == 503 and r.json()["error"] == "backend_unavailable" and "Retry-After" in r.headers
        ready = client.get("/readyz")
        assert ready.status_code == 503 and "came back empty" in ready.json()["last_reload_error"]
        state.registry = registry  # restored
        state.domains = replace(state.domains, counter=-1)
        Reloader(state).poll_once()
        assert client.get("/readyz").status_code == 200
        assert client.post("/v1/domains/brand-new/ctr", json=body).status_code == 404
