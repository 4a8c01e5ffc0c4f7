"""Cross-request batching: a batch of requests over several domains, scored in one onnxruntime run, gives
exactly (bit for bit) the scores each request gets alone; a refused request in a batch fails alone."""

from __future__ import annotations

import asyncio
import uuid
from pathlib import Path

import httpx
import numpy as np
import pytest

from contracts.artifacts import load_version
from contracts.errors import NotFound
from contracts.settings import load_settings
from domain_registry import open_registry
from feature_store import open_store
from serving.app import create_app
from serving.composition import FeedComposer
from serving.scoring import Job, score_many
from tests.support.tiny_model import TinyModel, cached_tiny, publish_demo


@pytest.fixture(scope="module")
def tiny() -> TinyModel:
    return cached_tiny("mlp", steps=8, delta_steps=4, n_domains=4)


@pytest.fixture(scope="module")
def world(tiny: TinyModel, tmp_path_factory: pytest.TempPathFactory):
    tmp = tmp_path_factory.mktemp("batching")
    store = open_store(f"memory://batch-{uuid.uuid4().hex}")
    registry = open_registry(f"sqlite://{tmp}/registry.db")
    publish_demo(tiny, tmp / "art", store, registry)
    registry.create_domain("fresh")  # registered after the export: served by θS, no delta
    yield tmp / "art", store, registry
    registry.close()


def _jobs(tiny: TinyModel, n: int, seed: int) -> list[Job]:
    rng = np.random.default_rng(seed)
    domains = [*tiny.domains, "fresh"]
    jobs = []
    for k in range(n):
        items = [tiny.item_ids[int(i)] for i in rng.integers(len(tiny.item_ids), size=int(rng.integers(1, 30)))]
        if k % 5 == 3:
            items[0] = "never-seen-item"
        user = "never-seen-user" if k % 7 == 2 else tiny.user_ids[int(rng.integers(len(tiny.user_ids)))]
        jobs.append(Job(domains[k % len(domains)], user, items))
    return jobs


def test_grouped_run_equals_one_run_per_request_bit_for_bit(world) -> None:
    root, _, _ = world
    version = load_version(root / "v1")
    composer = FeedComposer(version, cache_size=8)
    rng = np.random.default_rng(0)
    runs = []
    for k in range(11):  # several domains, repeated ones, and one without a delta ("fresh")
        n = int(rng.integers(1, 50))
        runs.append(([*version.manifest.deltas, "fresh"][k % 5], rng.standard_normal((n, 16), dtype=np.float32),
                     rng.standard_normal((n, 16), dtype=np.float32)))
    one_by_one = [composer.logits(*run) for run in runs]
    batched = composer.logits_many(runs)
    assert len(batched) == len(runs)
    for a, b in zip(one_by_one, batched, strict=True):
        assert a.shape == b.shape and np.array_equal(a, b)
    # the domains really differ inside one batch: the same rows score differently per domain
    same = [(d, runs[0][1], runs[0][2]) for d in version.manifest.deltas]
    outs = composer.logits_many(same)
    assert len({o.tobytes() for o in outs}) == len(outs)


def test_score_many_equals_scoring_each_request_alone(world, tiny: TinyModel) -> None:
    root, store, registry = world
    app = create_app(load_settings(**{"artifacts_url": f"file://{root}", "serving.max_batch": 16}),
                     feature_store=store, registry=registry)

    async def run() -> None:
        async with app.router.lifespan_context(app):
            state = app.state.serving
            jobs = _jobs(tiny, 16, seed=1)
            together = score_many(state, jobs)
            alone = [score_many(state, [job])[0] for job in jobs]
            assert together == alone
            assert any(r.cold_user for r in together) and any(r.cold_items for r in together)
            # a refused job fails alone; the rest of its batch is scored as before
            mixed = score_many(state, [jobs[0], Job("no-such-domain", "u1", ["i1"]), jobs[1]])
            assert isinstance(mixed[1], NotFound) and mixed[0] == alone[0] and mixed[2] == alone[1]

    asyncio.run(asyncio.wait_for(run(), 120))


@pytest.mark.parametrize("max_batch", [1, 16])
def test_concurrent_http_requests_are_batched_and_score_as_alone(world, tiny: TinyModel, max_batch: int) -> None:
    root, store, registry = world
    app = create_app(load_settings(**{"artifacts_url": f"file://{root}", "serving.max_batch": max_batch}),
                     feature_store=store, registry=registry)
    jobs = _jobs(tiny, 40, seed=2)

    async def run() -> None:
        async with app.router.lifespan_context(app):
            transport = httpx.ASGITransport(app=app)
            async with httpx.AsyncClient(transport=transport, base_url="http://serving") as client:
                async def one(job: Job) -> list[float]:
                    r = await client.post(f"/v1/domains/{job.domain}/ctr",
                                          json={"user_id": job.user_id, "item_ids": list(job.item_ids)})
                    assert r.status_code == 200, r.text
                    return r.json()["scores"]

                alone = [await one(job) for job in jobs]
                batcher = app.state.batcher
                before = (batcher.batches, batcher.jobs)
                together = await asyncio.gather(*(one(job) for job in jobs))
                batches, scored = batcher.batches - before[0], batcher.jobs - before[1]
            assert together == alone
            assert scored == len(jobs)
            if max_batch == 1:
                assert batches == len(jobs)
            else:  # 40 requests in flight at once: whole batches of up to 16
                assert batches <= len(jobs) // 2, batches

    asyncio.run(asyncio.wait_for(run(), 120))


def test_batch_settings_are_bounded(tmp_path: Path) -> None:
    from contracts.errors import ConfigError

    for bad in ({"serving.max_batch": 0}, {"serving.batch_wait_s": 1.0}, {"serving.batch_wait_s": -1}):
        with pytest.raises(ConfigError):
            load_settings(**bad)
    assert load_settings().serving.batch_wait_s < 0.001


def _fake_batcher(monkeypatch: pytest.MonkeyPatch, wait_s: float, seen: list[int]):
    """A batcher over a scorer that records batch sizes (no model: this is about when batches form)."""
    from types import SimpleNamespace

    import serving.batching
    from serving.batching import Batcher
    from serving.metrics import ServingMetrics

    def fake_score_many(state: object, jobs: list[Job], model: object = None) -> list[str]:
        seen.append(len(jobs))
        return [f"{job.user_id}@{model}" if model else job.user_id for job in jobs]

    monkeypatch.setattr(serving.batching, "score_many", fake_score_many)
    settings = load_settings(**{"serving.max_batch": 8, "serving.batch_wait_s": wait_s})
    return Batcher(SimpleNamespace(settings=settings, metrics=ServingMetrics()))  # type: ignore[arg-type]


def test_the_batcher_waits_only_for_requests_already_in_flight(monkeypatch: pytest.MonkeyPatch) -> None:
    seen: list[int] = []
    batcher = _fake_batcher(monkeypatch, wait_s=0.05, seen=seen)

    async def run() -> None:
        loop = asyncio.get_running_loop()
        # nothing else in flight: scored at once, alone, well before the wait bound
        t0 = loop.time()
        assert await batcher.score([Job("d", "a", ["i"])]) == ["a"]
        assert seen == [1] and loop.time() - t0 < 0.04
        # another request is being read: the first waits for it and both are scored in one batch
        batcher.entered = 1
        first = asyncio.ensure_future(batcher.score([Job("d", "b", ["i"])]))
        await asyncio.sleep(0.005)
        batcher.entered = 0
        second = await batcher.score([Job("d", "c", ["i"])])
        assert await first == ["b"] and second == ["c"] and seen[1:] == [2]
        # the one in flight never arrives: the wait is bounded by batch_wait_s
        batcher.entered = 1
        t0 = loop.time()
        assert await asyncio.wait_for(batcher.score([Job("d", "e", ["i"])]), 5) == ["e"]
        assert 0.04 <= loop.time() - t0 < 1.0 and seen[2:] == [1]
        batcher.entered = 0

    try:
        asyncio.run(asyncio.wait_for(run(), 30))
    finally:
        batcher.close()


def test_requests_for_different_versions_form_separate_batches(monkeypatch: pytest.MonkeyPatch) -> None:
    """A batch runs one model: requests pinned to another version queue beside it and are scored with theirs."""
    seen: list[int] = []
    batcher = _fake_batcher(monkeypatch, wait_s=0.0, seen=seen)

    async def run() -> None:
        batcher.entered = 1  # keep the fast path off: everything queues
        first = asyncio.ensure_future(batcher.score([Job("d", "a", ["i"])], "v1"))  # type: ignore[arg-type]
        await asyncio.sleep(0)
        rest = [asyncio.ensure_future(batcher.score([Job("d", u, ["i"])], m))  # type: ignore[arg-type]
                for u, m in (("b", "v2"), ("c", "v1"), ("d", "v2"), ("e", "v1"))]
        batcher.entered = 0
        got = await asyncio.gather(first, *rest)
        assert got == [["a@v1"], ["b@v2"], ["c@v1"], ["d@v2"], ["e@v1"]]
        assert sum(seen) == 5 and len(seen) <= 3  # a's run, then the v1 batch (c, e) and the v2 batch (b, d)

    try:
        asyncio.run(asyncio.wait_for(run(), 30))
    finally:
        batcher.close()
