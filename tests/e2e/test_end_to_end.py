"""The product path with real Kafka and Redis: replay → trainer rounds → versions → HTTP scores → a new
domain onboarded → its clicks → its delta → its scores change → rollback restores the old scores exactly.

The trainer (``mamdr trainer run``) and serving (``mamdr serve``) run as the real commands in
subprocesses. The trainer runs twice with ``--idle-exit``: over the benchmark clicks (a round per 1,500
events, the rest at the idle exit), then, restarted from the live checkpoint and its offsets, over the new
domain's clicks, which were all produced before it started, so they make exactly one version.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import httpx
import pytest

from contracts.artifacts import read_manifest
from domain_registry import open_registry
from mamdr import devstack
from stream import open_stream

pytestmark = pytest.mark.timeout(300)

DOMAINS = ("comedy", "drama", "horror", "sci-fi")
NEW = "western"
ROUND = 1500
TOKEN = "e2e-admin-token-0123456789"


def _events() -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    from trainer.data import benchmark_events

    main: list[dict[str, Any]] = []
    new: list[dict[str, Any]] = []
    for e in benchmark_events("ml-latest-small", seed=0):
        if e["domain"] in DOMAINS and len(main) < 2 * ROUND:
            main.append(e)
        elif e["domain"] == NEW and len(new) < ROUND:
            new.append(e)
        if len(main) == 2 * ROUND and len(new) == ROUND:
            break
    assert len(main) == 2 * ROUND and len(new) == ROUND
    return main, new


def _produce(url: str, events: list[dict[str, Any]]) -> None:
    with open_stream(url) as stream, stream.producer() as producer:
        for e in events:
            producer.send(json.dumps(e).encode())
        producer.flush()


def _sample(events: list[dict[str, Any]], domain: str) -> dict[str, Any]:
    rows = [e for e in events if e["domain"] == domain]
    return {"user_id": rows[0]["user_id"], "item_ids": list(dict.fromkeys(e["item_id"] for e in rows))[:6]}


def _wait(check: Any, timeout_s: float, what: str) -> Any:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        value = check()
        if value:
            return value
        time.sleep(0.2)
    raise AssertionError(f"timed out after {timeout_s:.0f} s waiting for {what}")


def test_stream_train_serve_onboard_rollback(kafka_topic: Any, redis_url: str, tmp_path: Path) -> None:
    t0 = time.monotonic()
    main, new = _events()
    artifacts = tmp_path / "artifacts"
    registry = open_registry(redis_url)
    for d in DOMAINS:
        registry.create_domain(d, actor="e2e")
    env = {"MAMDR_REGISTRY__ADMIN_TOKEN": TOKEN, "OMP_NUM_THREADS": "1", "MAMDR_SERVING__RELOAD_POLL_S": "0.2"}
    backends = ["--feature-store", redis_url, "--registry", redis_url, "--artifacts", f"file://{artifacts}"]

    def run_trainer(round_events: int) -> Any:
        return devstack.start_process("trainer", devstack.mamdr_argv(
            "trainer", "run", "--stream", kafka_topic.url, "--group", kafka_topic.group, *backends,
            "--emb-dim", "16", "--hidden", "32,16", "--round-events", str(round_events), "--round-seconds", "3600",
            "--inner-batches", "4", "--dr-k", "2", "--idle-exit", "8"), tmp_path, env, die_with_parent=True)

    port = devstack.free_port()
    serving = devstack.start_process("serving", devstack.mamdr_argv("serve", *backends, "--port", str(port)),
                                     tmp_path, env, die_with_parent=True)
    http = httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=20)

    def live_after(n_events: int) -> str | None:
        live = registry.live_model()
        if live is None:
            return None
        manifest = read_manifest(artifacts / live.id)
        return live.id if sum(manifest.offsets.values()) == n_events else None

    def served(version: str) -> bool:
        try:
            return bool(http.get("/readyz").json().get("model_version") == version)
        except httpx.HTTPError:
            return False

    def score(domain: str, body: dict[str, Any]) -> httpx.Response:
        return http.post(f"/v1/domains/{domain}/ctr", json=body)

    trainer = None
    try:
        # 1. replay clicks -> rounds -> published versions
        _produce(kafka_topic.url, main)
        trainer = run_trainer(ROUND)
        assert trainer.wait(timeout=180) == 0, devstack.tail(devstack.log_file(tmp_path, "trainer"))
        v1 = live_after(2 * ROUND)
        assert v1 is not None, "the live version does not hold every benchmark click"
        versions = [m.id for m in registry.list_models()]
        assert len(versions) >= 2 and versions[0] == v1
        manifest1 = read_manifest(artifacts / v1)
        assert set(manifest1.deltas) == set(DOMAINS)

        # 2. scores over HTTP for every domain
        _wait(lambda: served(v1), 60, f"serving to load {v1}")
        samples = {d: _sample(main, d) for d in DOMAINS} | {NEW: _sample(new, NEW)}
        before = {}
        for d in DOMAINS:
            resp = score(d, samples[d])
            assert resp.status_code == 200, resp.text
            body = resp.json()
            assert body["model_version"] == v1 and all(0 < s < 1 for s in body["scores"])
            before[d] = body["scores"]
        assert score(NEW, samples[NEW]).status_code == 404

        # 3. onboard a new domain through the admin API: served by θS at once
        assert http.post("/v1/domains", json={"id": NEW}).status_code == 401
        created = http.post("/v1/domains", json={"id": NEW}, headers={"Authorization": f"Bearer {TOKEN}"})
        assert created.status_code == 201, created.text
        theta_s = _wait(lambda: (r := score(NEW, samples[NEW])).status_code == 200 and r.json(), 20,
                        "serving to see the new domain")
        assert theta_s["model_version"] == v1 and NEW not in manifest1.deltas
        before[NEW] = theta_s["scores"]

        # 4. its clicks arrive -> the restarted trainer resumes and trains its delta -> its scores change
        _produce(kafka_topic.url, new)
        trainer = run_trainer(100 * ROUND)
        assert trainer.wait(timeout=180) == 0, devstack.tail(devstack.log_file(tmp_path, "trainer"))
        v2 = live_after(3 * ROUND)
        assert v2 is not None, "the live version does not hold the new domain's clicks"
        manifest2 = read_manifest(artifacts / v2)
        assert manifest2.parent == v1 and manifest2.deltas[NEW].version == v2
        assert manifest2.events_included == ROUND  # resumed at v1's offsets: nothing read twice
        _wait(lambda: served(v2), 60, f"serving to load {v2}")
        after = score(NEW, samples[NEW]).json()
        assert after["model_version"] == v2
        assert max(abs(a - b) for a, b in zip(after["scores"], before[NEW], strict=True)) > 1e-4

        # 5. rollback restores the previous version's scores exactly, for every domain
        rolled = http.post("/v1/models/rollback", headers={"Authorization": f"Bearer {TOKEN}"})
        assert rolled.status_code == 200 and rolled.json()["id"] == v1, rolled.text
        _wait(lambda: served(v1), 60, f"serving to roll back to {v1}")
        for d, scores in before.items():
            body = score(d, samples[d]).json()
            assert body.get("model_version") == v1 and body["scores"] == scores, (d, body)
        assert devstack.stop_pid(serving.pid, timeout_s=15) == "stopped"  # SIGTERM is a clean stop
        print(f"end-to-end path in {time.monotonic() - t0:.1f} s")
    finally:
        http.close()
        registry.close()
        for proc in (trainer, serving):
            if proc is not None and proc.poll() is None:
                devstack.stop_pid(proc.pid, timeout_s=15)
