"""Hot reload under traffic: a promoted version is swapped in, a corrupted one is refused; always 200s."""

from __future__ import annotations

import time
import uuid
from pathlib import Path

from fastapi.testclient import TestClient

from contracts.manifest import SHARED_MODEL_FILE
from contracts.settings import load_settings
from domain_registry import open_registry
from feature_store import open_store
from serving.app import create_app
from tests.support.tiny_model import cached_tiny, publish_demo

MAX_REQUESTS = 3_000
MAX_SECONDS = 30.0


def test_reload_under_traffic(tmp_path: Path) -> None:
    tiny = cached_tiny("mlp", steps=8, delta_steps=4, n_domains=4)
    store = open_store(f"memory://reload-{uuid.uuid4().hex}")
    registry = open_registry(f"sqlite://{tmp_path}/registry.db")
    root = tmp_path / "art"
    publish_demo(tiny, root, store, registry, "v1")
    publish_demo(tiny, root, store, registry, "v2", parent="v1", promote=False)
    publish_demo(tiny, root, store, registry, "v3", parent="v2", promote=False)
    shared = root / "v3" / SHARED_MODEL_FILE
    shared.write_bytes(shared.read_bytes()[:-7] + b"corrupt")  # v3 no longer matches its manifest

    settings = load_settings(**{"artifacts_url": f"file://{root}", "serving.reload_poll_s": 0.02})
    app = create_app(settings, feature_store=store, registry=registry)
    body = {"user_id": "u3", "item_ids": ["i1", "i2", "i3"]}
    seen: list[str] = []
    statuses: set[int] = set()
    promoted: dict[str, int] = {}
    with TestClient(app) as client:
        deadline = time.monotonic() + MAX_SECONDS
        reference = client.post("/v1/domains/dom-1/ctr", json=body).json()["scores"]
        for k in range(MAX_REQUESTS):
            if time.monotonic() > deadline:
                break
            if k == 20:
                registry.promote("v2")
                promoted["v2"] = k
            if "v3" not in promoted and seen and seen[-1] == "v2":
                registry.promote("v3")
                promoted["v3"] = k
            r = client.post(f"/v1/domains/dom-{k % 4}/ctr", json=body)
            statuses.add(r.status_code)
            seen.append(r.json().get("model_version", "?"))
            if "v3" in promoted and k - promoted["v3"] > 200 and "version v3 refused" in (
                client.get("/readyz").json()["last_reload_error"] or ""
            ):
                break
        ready = client.get("/readyz").json()
        metrics = client.get("/metrics").text
        final = client.post("/v1/domains/dom-1/ctr", json=body).json()
    registry.close()
    assert statuses == {200}
    assert seen[0] == "v1" and "v2" in seen and "v3" not in seen
    assert seen.index("v2") >= promoted["v2"]  # never before the promotion
    assert all(v == "v2" for v in seen[seen.index("v2"):])  # never back, never v3
    assert ready["model_version"] == "v2" and "v3 refused" in ready["last_reload_error"]
    assert "mamdr_serving_reload_failures_total 1.0" in metrics
    assert 'mamdr_serving_reloads_total{result="ok"} 2.0' in metrics
    assert final["model_version"] == "v2" and final["scores"] == reference  # same weights, re-published


def test_a_transient_load_failure_heals_with_backoff(tmp_path: Path) -> None:
    """The live version's file is unreadable for a moment: serving retries (backoff) without a new promote."""
    tiny = cached_tiny("mlp", steps=8, delta_steps=4, n_domains=4)
    store = open_store(f"memory://reload-{uuid.uuid4().hex}")
    registry = open_registry(f"sqlite://{tmp_path}/registry.db")
    root = tmp_path / "art"
    publish_demo(tiny, root, store, registry, "v1")
    publish_demo(tiny, root, store, registry, "v2", parent="v1", promote=False)
    shared = root / "v2" / SHARED_MODEL_FILE
    hidden = shared.with_suffix(".away")
    shared.rename(hidden)  # e.g. a network file system not mounted yet
    settings = load_settings(**{"artifacts_url": f"file://{root}", "serving.reload_poll_s": 0.05,
                                "serving.reload_backoff_max_s": 0.2})
    with TestClient(create_app(settings, feature_store=store, registry=registry)) as client:
        registry.promote("v2")
        deadline = time.monotonic() + 20
        while client.get("/readyz").json()["last_reload_error"] is None and time.monotonic() < deadline:
            time.sleep(0.02)
        assert client.get("/readyz").json()["model_version"] == "v1"
        counter = registry.change_counter()
        time.sleep(0.5)
        hidden.rename(shared)  # back; the registry does not change again
        while client.get("/readyz").json()["model_version"] != "v2" and time.monotonic() < deadline:
            time.sleep(0.02)
        ready = client.get("/readyz").json()
        assert ready["model_version"] == "v2" and ready["last_reload_error"] is None
        assert registry.change_counter() == counter
        metrics = client.get("/metrics").text
        assert "mamdr_serving_reload_failures_total 1.0" in metrics  # one refused version, several attempts
        failed = next(float(line.split()[-1]) for line in metrics.splitlines()
                      if line.startswith('mamdr_serving_reloads_total{result="failed"}'))
        assert failed >= 2
    registry.close()
