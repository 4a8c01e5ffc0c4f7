"""Interleaved A/B of serving configurations on one machine state (prints figures): batching off
(``serving.max_batch = 1``) vs on (the default), and optionally another checkout's server as a baseline.

On a shared machine the load moves between runs, so the servers run side by side over one Redis and one
registry and are measured in turns (round robin, ``--rounds``), each round: 1,000 requests at concurrency 1
(p50) and ``wrk`` at 8 and 64 connections; the medians over rounds are printed.

Run: ``~/.cache/mamdr/venv/bin/python bench/bench_serving_ab.py [--baseline /path/to/other/checkout]``.
"""

from __future__ import annotations

import argparse
import http.client
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.bench_serving import REPO, _bodies, build_world, floor, free_port, pct, run_requests, start_redis, wrk


def start_server(repo: Path, redis_url: str, registry: Path, env_extra: dict[str, str]) -> tuple[subprocess.Popen, int]:
    port = free_port()
    env = {**os.environ, "PYTHONPATH": str(repo), **env_extra}
    proc = subprocess.Popen([sys.executable, "-m", "mamdr.cli", "--log-level", "WARNING", "serve", "--feature-store",
                             redis_url, "--registry", f"sqlite://{registry}", "--port", str(port)],
                            cwd=repo, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        try:
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=2)
            conn.request("GET", "/readyz")
            if conn.getresponse().status == 200:
                return proc, port
        except OSError:
            pass
        if proc.poll() is not None:
            break
        time.sleep(0.2)
    proc.kill()
    raise SystemExit(f"the server from {repo} did not become ready")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--baseline", type=Path, default=None, help="another checkout whose server to compare")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--seconds", type=float, default=5.0, help="wrk duration per run")
    args = ap.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="bench-serving-ab-"))
    redis_proc, redis_url = start_redis(tmp)
    servers: dict[str, tuple[subprocess.Popen, int]] = {}
    try:
        world = build_world(tmp, redis_url, 20_000, 20_000)
        fl = floor(tmp, redis_url, world, 2_000)
        print(f"floor p50 {fl['p50']:.3f} ms", flush=True)
        reqs = _bodies(world, [f"dom-{d}" for d in range(4)], 500, seed=1)
        if args.baseline is not None:
            servers["baseline"] = start_server(args.baseline.resolve(), redis_url, tmp / "registry.db", {})
        servers["max_batch=1"] = start_server(REPO, redis_url, tmp / "registry.db", {"MAMDR_SERVING__MAX_BATCH": "1"})
        servers["default"] = start_server(REPO, redis_url, tmp / "registry.db", {})
        found: dict[str, dict[str, list[float]]] = {n: {"c1": [], "c8": [], "c64": []} for n in servers}
        for _ in range(args.rounds):
            for name, (_, port) in servers.items():
                run_requests(port, reqs[:50])
                found[name]["c1"].append(pct(run_requests(port, reqs * 2))[0])
                for connections in (8, 64):
                    found[name][f"c{connections}"].append(wrk(port, reqs, connections, args.seconds, tmp)["rps"])
        for name, f in found.items():
            c1 = float(np.median(f["c1"]))
            print(f"{name:12s} c=1 p50 {c1:.3f} ms ({c1 / fl['p50']:.2f}x floor)  wrk 8 connections "
                  f"{np.median(f['c8']):.0f} req/s  64 connections {np.median(f['c64']):.0f} req/s", flush=True)
    finally:
        for proc, _ in servers.values():
            proc.terminate()
        redis_proc.terminate()
        redis_proc.wait(10)
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
