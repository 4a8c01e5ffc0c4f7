"""Feature-store benchmark: bulk-write rate and 1 user + 100 items lookup latency, against a floor.

The floor is measured in the same run on the same redis-server: raw redis-py (hiredis) MSET of
prebuilt 1,000-key chunks through a pipeline for writes, and a bare MGET of the same 101 keys for
reads (no validation, no encoding or decoding, no version token). Ratios = store / floor.

    ~/.cache/mamdr/venv/bin/python bench/bench_feature_store.py [--n 100000] [--lookups 3000] [--pin]

Starts its own redis-server on a free loopback port (the test fixture's helper) and stops it.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run as a script: reuse tests.fixtures

import numpy as np
import redis

from contracts.settings import FeatureStoreSettings
from feature_store import open_store
from feature_store.redis_store import RedisStore
from tests.fixtures.redis_server import RedisServer, _spawn, free_port

DIM = 128


def pct(samples: list[float], q: float) -> float:
    return float(np.percentile(np.asarray(samples) * 1e3, q))


def bench_write(store: RedisStore, raw: redis.Redis, ids: list[str], vecs: np.ndarray, trials: int
                ) -> tuple[float, float]:
    """Best-of-trials keys/s for the store and for raw pipelined MSET of the same keys and bytes."""
    version = "w"
    prefix = store.keys.floor_prefix(version, "item")
    keys = [prefix + i for i in ids]
    values = [row.tobytes() for row in vecs.astype("<f4")]
    store_best = floor_best = 0.0
    for _ in range(trials):
        raw.flushdb()
        t0 = time.perf_counter()
        pipe = raw.pipeline(transaction=False)
        for start in range(0, len(keys), 1000):
            args: list[object] = [None] * (2 * min(1000, len(keys) - start))
            args[0::2] = keys[start : start + 1000]
            args[1::2] = values[start : start + 1000]
            pipe.execute_command("MSET", *args)
            if (start // 1000) % 8 == 7:
                pipe.execute()
        pipe.execute()
        floor_best = max(floor_best, len(keys) / (time.perf_counter() - t0))
        raw.flushdb()
        store.declare(version, {"user": DIM, "item": DIM})
        t0 = time.perf_counter()
        store.write(version, "item", ids, vecs)
        store_best = max(store_best, len(keys) / (time.perf_counter() - t0))
    assert raw.dbsize() == len(keys) + 4, raw.dbsize()  # every vector landed (+ meta, token, versions, seq)
    return store_best, floor_best


def bench_lookup(store: RedisStore, raw: redis.Redis, n_users: int, n_items: int, lookups: int,
                 rng: np.random.Generator, root: str = "w", other: RedisStore | None = None
                 ) -> tuple[list[float], list[float], list[float]]:
    """Store lookups of the current version against bare MGETs of the same ids' floor keys (and lookups
    of a second store configured otherwise, e.g. the read script), interleaved in blocks of 100."""
    version = store.current_version()
    assert version is not None
    requests = [(f"u{rng.integers(n_users)}", [f"i{j}" for j in rng.integers(n_items, size=100)])
                for _ in range(lookups)]
    up, ip = store.keys.floor_prefix(root, "user"), store.keys.floor_prefix(root, "item")
    floor_keys = [[up + u, *(ip + i for i in its)] for u, its in requests]
    for (u, its), keys in zip(requests[:200], floor_keys[:200], strict=True):  # warm up every path
        store.lookup(u, its)
        raw.mget(keys)
        if other is not None:
            other.lookup(u, its)
    t_store: list[float] = []
    t_floor: list[float] = []
    t_other: list[float] = []
    for block in range(0, lookups, 100):  # interleave blocks so drift hits every side alike
        for u, its in requests[block : block + 100]:
            t0 = time.perf_counter()
            got = store.lookup(u, its)
            t_store.append(time.perf_counter() - t0)
        for keys in floor_keys[block : block + 100]:
            t0 = time.perf_counter()
            raw.mget(keys)
            t_floor.append(time.perf_counter() - t0)
        if other is not None:
            for u, its in requests[block : block + 100]:
                t0 = time.perf_counter()
                again = other.lookup(u, its)
                t_other.append(time.perf_counter() - t0)
                assert again.missing_items == [] and again.version == version
    assert got.items.shape == (100, DIM) and not got.missing_items
    return t_store, t_floor, t_other


def bench_local(url: str, n: int, lookups: int, rng: np.random.Generator) -> tuple[float, list[float]]:
    store = open_store(url)
    vecs = rng.standard_normal((n, DIM)).astype(np.float32)
    store.declare("l1", {"user": DIM, "item": DIM})
    t0 = time.perf_counter()
    store.write("l1", "item", [f"i{i}" for i in range(n)], vecs)
    rate = n / (time.perf_counter() - t0)
    store.write("l1", "user", [f"u{i}" for i in range(1000)], vecs[:1000])
    store.publish("l1")
    times = []
    for _ in range(lookups):
        its = [f"i{j}" for j in rng.integers(n, size=100)]
        t0 = time.perf_counter()
        store.lookup(f"u{rng.integers(1000)}", its)
        times.append(time.perf_counter() - t0)
    store.close()
    return rate, times


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=100_000, help="item vectors to write (128-d)")
    ap.add_argument("--users", type=int, default=10_000)
    ap.add_argument("--lookups", type=int, default=3000)
    ap.add_argument("--trials", type=int, default=5)
    ap.add_argument("--pin", action="store_true", help="pin redis-server and this process to CPU 0")
    args = ap.parse_args()
    rng = np.random.default_rng(0)
    with tempfile.TemporaryDirectory() as tmp:
        port = free_port()
        server = RedisServer(port=port, proc=_spawn(port, Path(tmp)), workdir=Path(tmp))
        try:
            if args.pin:
                os.sched_setaffinity(server.proc.pid, {0})
                os.sched_setaffinity(0, {0})
            url = f"redis://127.0.0.1:{port}/0"
            raw = redis.Redis.from_url(url)
            store = open_store(url, FeatureStoreSettings(namespace="bench"))
            assert isinstance(store, RedisStore)
            from redis.utils import HIREDIS_AVAILABLE

            load = ", ".join(f"{x:.1f}" for x in os.getloadavg())
            print(f"redis-server 127.0.0.1:{port}  hiredis={HIREDIS_AVAILABLE}  pinned={args.pin}  dim={DIM}"
                  f"  cpus={os.cpu_count()}  load average {load}")
            ids = [f"i{i}" for i in range(args.n)]
            vecs = rng.standard_normal((args.n, DIM)).astype(np.float32)
            s_rate, f_rate = bench_write(store, raw, ids, vecs, args.trials)
            print(f"bulk write {args.n} x {DIM}-d: store {s_rate:,.0f} vec/s   "
                  f"floor (raw MSET) {f_rate:,.0f} keys/s   ratio (store/floor time) {f_rate / s_rate:.2f}x")
            store.write("w", "user", [f"u{i}" for i in range(args.users)], vecs[: args.users])
            store.publish("w")
            t_s, t_f, _ = bench_lookup(store, raw, args.users, args.n, args.lookups, rng)
            print(f"lookup 1 user + 100 items ({args.lookups} requests):")
            for q in (50, 99):
                print(f"  p{q}: store {pct(t_s, q):.3f} ms   floor (raw MGET) {pct(t_f, q):.3f} ms"
                      f"   ratio {pct(t_s, q) / pct(t_f, q):.2f}x")
            # an incremental version: 10% of the rows changed in each of two versions since the full one
            parent = "w"
            for child in ("w1", "w2"):
                store.declare(child, {"user": DIM, "item": DIM}, parent=parent)
                changed = rng.choice(args.n, size=args.n // 10, replace=False)
                store.write(child, "item", [f"i{i}" for i in changed], vecs[changed])
                store.write(child, "user", [f"u{i}" for i in range(0, args.users, 10)], vecs[: args.users:10])
                store.publish(child)
                parent = child
            script = open_store(url, FeatureStoreSettings(namespace="bench", incremental_read="script"))
            assert isinstance(script, RedisStore)
            t_s, t_f, t_o = bench_lookup(store, raw, args.users, args.n, args.lookups, rng, other=script)
            print("lookup of an incremental version (2 links, 10% of rows changed in each), interleaved:")
            for q in (50, 99):
                print(f"  p{q}: pipelined (MULTI: MGET + HMGET per link) {pct(t_s, q):.3f} ms   read script "
                      f"{pct(t_o, q):.3f} ms   floor (raw MGET of the floor keys) {pct(t_f, q):.3f} ms   "
                      f"ratios to the floor {pct(t_s, q) / pct(t_f, q):.2f}x / {pct(t_o, q) / pct(t_f, q):.2f}x")
            script.close()
            store.close()
            raw.close()
        finally:
            server.stop()
        for label, url in (("file:// (SQLite WAL)", f"file://{tmp}/fs"), ("memory://", "memory://")):
            rate, times = bench_local(url, min(args.n, 100_000), 1000, rng)
            print(f"{label}: write {rate:,.0f} vec/s, "
                  f"lookup p50 {pct(times, 50):.3f} ms p99 {pct(times, 99):.3f} ms")


if __name__ == "__main__":
    main()
