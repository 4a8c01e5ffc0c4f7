"""Registry benchmark: write and poll latency per backend, each next to a floor from the same run.

Floors: for sqlite, a raw ``BEGIN IMMEDIATE; INSERT; COMMIT`` on the same kind of file (WAL,
synchronous=FULL: the fsync is the cost) and a raw ``SELECT`` of one row; for redis, a raw
``MULTI/INCR/EXEC`` and a raw ``GET``. The registry adds validation, the audit row, JSON and (redis)
the WATCH round trips. What matters for serving is the poll (``change_counter()``) cost.

    ~/.cache/mamdr/venv/bin/python bench/bench_registry.py [--n 300]

Starts its own redis-server on a free loopback port and stops it.
"""

from __future__ import annotations

import argparse
import os
import sqlite3
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run as a script: reuse tests.fixtures

import numpy as np
import redis

from domain_registry import Registry, open_registry
from domain_registry.base import ModelVersion
from tests.fixtures.redis_server import RedisServer, _spawn, free_port


def timed(fn: Callable[[int], object], n: int) -> np.ndarray:
    out = np.empty(n)
    for i in range(n):
        t0 = time.perf_counter()
        fn(i)
        out[i] = time.perf_counter() - t0
    return out * 1e3


def row(name: str, ms: np.ndarray, floor: np.ndarray | None) -> None:
    p50, p99 = np.percentile(ms, 50), np.percentile(ms, 99)
    line = f"  {name:<28} p50 {p50:8.3f} ms  p99 {p99:8.3f} ms"
    if floor is not None:
        f50 = np.percentile(floor, 50)
        line += f"  floor p50 {f50:8.3f} ms  ratio {p50 / f50:6.2f}x"
    print(line)


def bench(reg: Registry, n: int, write_floor: Callable[[int], object], read_floor: Callable[[int], object]
          ) -> None:
    for i in range(n):
        reg.register_model(ModelVersion(id=f"v{i}", created_at=time.time(), artifact_uri=f"file:///a/v{i}"))
    row("create_domain", timed(lambda i: reg.create_domain(f"d-{i}", settings={"dr_k": 3}), n),
        timed(write_floor, n))
    row("promote", timed(lambda i: reg.promote(f"v{i}"), n), timed(write_floor, n))
    row("change_counter (poll)", timed(lambda i: reg.change_counter(), n * 5), timed(read_floor, n * 5))
    row("live_model", timed(lambda i: reg.live_model(), n), timed(read_floor, n))
    row(f"list_domains ({n}, no floor)", timed(lambda i: reg.list_domains(), 30), None)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--n", type=int, default=300)
    args = parser.parse_args()
    print(f"load average {os.getloadavg()[0]:.2f} on {os.cpu_count()} cpus; n={args.n}")
    with tempfile.TemporaryDirectory() as tmp:
        print("sqlite (WAL, synchronous=FULL):")
        raw = sqlite3.connect(f"{tmp}/floor.db", isolation_level=None)
        raw.execute("PRAGMA journal_mode=WAL")
        raw.execute("PRAGMA synchronous=FULL")
        raw.execute("CREATE TABLE t (k INTEGER PRIMARY KEY, v TEXT)")

        def sqlite_write(i: int) -> None:
            raw.execute("BEGIN IMMEDIATE")
            raw.execute("INSERT OR REPLACE INTO t VALUES (?, ?)", (i, "x"))
            raw.execute("COMMIT")

        with open_registry(f"sqlite://{tmp}/registry.db") as reg:
            bench(reg, args.n, sqlite_write, lambda i: raw.execute("SELECT v FROM t WHERE k = 0").fetchone())
        raw.close()

        port = free_port()
        server = RedisServer(port=port, proc=_spawn(port, Path(tmp)), workdir=Path(tmp))
        try:
            print("redis (WATCH/MULTI/EXEC):")
            client = redis.Redis(port=port)

            def redis_write(i: int) -> None:
                pipe = client.pipeline(transaction=True)
                pipe.incr("floor")
                pipe.execute()

            with open_registry(f"redis://127.0.0.1:{port}/0") as reg:
                bench(reg, args.n, redis_write, lambda i: client.get("floor"))
            client.close()
        finally:
            server.stop()


if __name__ == "__main__":
    main()
