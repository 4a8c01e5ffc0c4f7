"""Serving benchmark (prints figures): HTTP vs the floor, throughput with wrk, 10 -> 10,000 domains.

Everything runs on loopback with a real ``redis-server`` started here, the paper's MLP
(128-d user/item/domain, [256, 128, 64]) and 100 candidates per request, for both protocols: our
``/v1/domains/{domain}/ctr`` and the KServe v2 ``/v2/models/{domain}/infer``.

1. floor: one feature-store lookup (1 user + 100 items, one MGET) + one onnxruntime run, no HTTP.
2. HTTP: ``mamdr serve`` (uvicorn, its own socket) at concurrency 1, one keep-alive client (p50/p99 and
   their ratios to the floor measured in this run).
3. throughput at 8 and 64 connections with ``wrk`` (a C load generator: Python clients would take the
   cores the server needs), req/s and wrk's p50/p99.
4. domains held: a server per count (10, 1,000, 10,000 synthetic deltas, all kept in the LRU), p99 over
   uniformly random domains as a ratio to the 10-domain p99, and RSS per held domain; a plot of latency
   vs domains (``--plot``, default docs/serving_domains.png).
5. (``--strategies``) composition strategies in-process: per-domain miss cost, run latency, memory held.

Run: ``~/.cache/mamdr/venv/bin/python bench/bench_serving.py`` (``--quick`` for a smoke run).
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Mapping
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
N_CANDIDATES = 100
# Synthetic deltas are full-network (every tensor the exported version's deltas override: the domain
# table and every dense layer), stored as the trainer publishes them by default.
SYNTH_DTYPE = "float16"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def start_redis(workdir: Path) -> tuple[subprocess.Popen[bytes], str]:
    port = free_port()
    proc = subprocess.Popen(
        [shutil.which("redis-server") or "redis-server", "--port", str(port), "--bind", "127.0.0.1",
         "--save", "", "--appendonly", "no", "--dir", str(workdir)],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                return proc, f"redis://127.0.0.1:{port}/0"
        except OSError:
            time.sleep(0.05)
    proc.kill()
    raise SystemExit("redis-server did not start")


def pct(values: list[float]) -> tuple[float, float]:
    a = np.asarray(values) * 1e3
    return float(np.percentile(a, 50)), float(np.percentile(a, 99))


def rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


# --------------------------------------------------------------------------------------------- setup
def build_world(tmp: Path, redis_url: str, n_users: int, n_items: int, specific: str = "head") -> dict[str, object]:
    """Paper-size MLP exported with 4 real domains; embeddings in Redis; a sqlite registry.

    ``art/v1`` (what the HTTP sections serve) has θi over ``specific`` (the trainer's default: the head, whose
    deltas leave the first layer to θS, so serving factors it: serving/factoring.py); ``art-fullnet/v1`` has θi over
    every parameter, the base of the synthetic versions the domains section holds (full-network deltas)."""
    import torch

    from contracts.settings import load_settings
    from domain_registry import open_registry
    from feature_store import open_store
    from trainer.export import export_version
    from trainer.feature_sync import sync_embeddings
    from trainer.models import ModelConfig, build_model
    from trainer.params import DomainParameters

    torch.manual_seed(0)
    model = build_model("mlp", ModelConfig(n_users=n_users, n_items=n_items, n_domains=4, dropout=0.0))
    full = DomainParameters(model)
    for d in range(4):
        full.set_delta(d, {n: torch.randn_like(t) * 0.01 for n, t in full.shared_specific().items()})
    params = DomainParameters(model, specific=specific)
    for d in range(4):
        params.set_delta(d, {n: full.delta(d)[n].clone() for n in params.specific_names})
    store = open_store(redis_url, load_settings().feature_store)
    users = [f"u{k}" for k in range(n_users)]
    items = [f"i{k}" for k in range(n_items)]
    sync_embeddings(model, users, items, store, "emb-1")
    registry = open_registry(f"sqlite://{tmp}/registry.db")
    domains = {f"dom-{d}": d for d in range(4)}
    for d in domains:
        registry.create_domain(d)
    export_version(params, domains, tmp / "art", "v1", feature_store_version="emb-1", registry=registry,
                   promote=True)
    export_version(full, domains, tmp / "art-fullnet", "v1", feature_store_version="emb-1")
    registry.close()
    store.close()
    return {"users": users, "items": items}


def publish_synthetic(tmp: Path, n_domains: int) -> tuple[Path, str]:
    """A registry + version with ``n_domains`` random full-network deltas in SYNTH_DTYPE (fsync off: bulk)."""
    from contracts.artifacts import load_version
    from domain_registry import open_registry
    from domain_registry.base import ModelVersion
    from trainer.export.exporter import registry_checksums
    from trainer.export.onnx_graph import delta_model
    from trainer.export.publish import publish_version

    base = load_version(tmp / "art-fullnet" / "v1")
    root = tmp / f"art-{n_domains}"

    class Deltas(Mapping[str, tuple[bytes, dict[str, np.ndarray]]]):
        """Each domain's delta made when publish_version reads it (10,000 held at once would take GBs)."""

        def __getitem__(self, domain: str) -> tuple[bytes, dict[str, np.ndarray]]:
            rng = np.random.default_rng([n_domains, int(domain[1:])])
            arrays = {n: rng.standard_normal(base.shared[n].shape, dtype=np.float32) * np.float32(0.01)
                      for n in base.delta_names}
            return delta_model(domain, arrays, SYNTH_DTYPE), arrays

        def __iter__(self) -> Iterator[str]:
            return (f"s{k}" for k in range(n_domains))

        def __len__(self) -> int:
            return n_domains

    deltas = Deltas()
    m = publish_version(root, "v1", base.shared_bytes, deltas, base.manifest.contract, delta_dtype=SYNTH_DTYPE,
                        feature_store_version="emb-1", cold_start=base.manifest.cold_start, fsync=False)
    db = tmp / f"registry-{n_domains}.db"
    registry = open_registry(f"sqlite://{db}")
    for d in deltas:
        registry.create_domain(d)
    registry.register_model(ModelVersion(id="v1", created_at=time.time(), artifact_uri=f"file://{root / 'v1'}",
                                         delta_checksums=registry_checksums(m)))
    registry.promote("v1")
    registry.close()
    return db, "v1"


# --------------------------------------------------------------------------------------------- floor
def floor(tmp: Path, redis_url: str, world: dict, iters: int) -> dict[str, float]:
    """Feature-store lookup + one onnxruntime run of the shared graph as serving runs it, in this process."""
    from contracts.artifacts import load_version
    from contracts.settings import load_settings
    from feature_store import open_store
    from serving.composition import FeedComposer

    loaded = load_version(tmp / "art" / "v1")
    composer = FeedComposer(loaded, cache_size=8, threads=1)
    store = open_store(redis_url, load_settings().feature_store)
    rng = np.random.default_rng(0)
    lat, fs_lat = [], []
    for k in range(iters + 50):
        user = world["users"][int(rng.integers(len(world["users"])))]
        items = [world["items"][int(i)] for i in rng.integers(len(world["items"]), size=N_CANDIDATES)]
        t0 = time.perf_counter()
        found = store.lookup(user, items, version="emb-1")
        t1 = time.perf_counter()
        # what serving runs for a domain without a delta: one user row (the first layer factored where it can be)
        composer.logits("no-delta", np.ascontiguousarray(found.user, dtype=np.float32)[None], found.items)
        t2 = time.perf_counter()
        if k >= 50:
            lat.append(t2 - t0)
            fs_lat.append(t1 - t0)
    # the run alone, on the last request's rows: the general graph (the user repeated per row, what serving ran
    # before serving/factoring.py) against the graph serving runs (one user row, first layer factored)
    user1 = np.ascontiguousarray(found.user, dtype=np.float32)[None]
    repeated = np.ascontiguousarray(np.repeat(user1, N_CANDIDATES, axis=0))
    general, one = [], []
    for _ in range(iters):
        t0 = time.perf_counter()
        composer.base.run(["logit"], {"user_emb": repeated, "item_emb": found.items})
        t1 = time.perf_counter()
        composer.logits("no-delta", user1, found.items)
        general.append(t1 - t0)
        one.append(time.perf_counter() - t1)
    store.close()
    p50, p99 = pct(lat)
    return {"p50": p50, "p99": p99, "fs_p50": pct(fs_lat)[0], "mean": float(np.mean(lat)) * 1e3,
            "run_general_p50": pct(general)[0], "run_one_user_p50": pct(one)[0], "factored": composer.factored}


# --------------------------------------------------------------------------------------------- http
class Server:
    def __init__(self, tmp: Path, redis_url: str, registry_db: Path, cache: int, composition: str) -> None:
        self.port = free_port()
        env = {**os.environ, "MAMDR_SERVING__RELOAD_POLL_S": "0.5", "MAMDR_REGISTRY__ADMIN_TOKEN": "bench"}
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "mamdr.cli", "--log-level", "WARNING", "serve", "--feature-store", redis_url,
             "--registry", f"sqlite://{registry_db}", "--port", str(self.port), "--cache-size", str(cache),
             "--composition", composition],
            cwd=REPO, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
        )
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            try:
                status, _ = self.get("/readyz")
                if status == 200:
                    return
            except OSError:
                pass
            if self.proc.poll() is not None:
                raise SystemExit(f"server exited: {self.proc.stderr.read().decode()[-2000:]}")
            time.sleep(0.2)
        raise SystemExit("server did not become ready")

    def get(self, path: str) -> tuple[int, bytes]:
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=10)
        conn.request("GET", path)
        r = conn.getresponse()
        return r.status, r.read()

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()


def request_for(protocol: str, domain: str, user: str, items: list[str]) -> tuple[str, bytes]:
    """(path, body) of one scoring request in ``protocol`` (``v1`` or ``v2``)."""
    if protocol == "v1":
        return f"/v1/domains/{domain}/ctr", json.dumps({"user_id": user, "item_ids": items}).encode()
    body = {"inputs": [{"name": "user_id", "shape": [1], "datatype": "BYTES", "data": [user]},
                       {"name": "item_ids", "shape": [len(items)], "datatype": "BYTES", "data": items}]}
    return f"/v2/models/{domain}/infer", json.dumps(body).encode()


def _bodies(world: dict, domains: list[str], n: int, seed: int, protocol: str = "v1") -> list[tuple[str, bytes]]:
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(n):
        user = world["users"][int(rng.integers(len(world["users"])))]
        items = [world["items"][int(i)] for i in rng.integers(len(world["items"]), size=N_CANDIDATES)]
        domain = domains[int(rng.integers(len(domains)))]
        out.append(request_for(protocol, domain, user, items))
    return out


def run_requests(port: int, reqs: list[tuple[str, bytes]], seconds: float | None = None) -> list[float]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    conn.connect()
    conn.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    headers = {"content-type": "application/json"}
    lat = []
    stop = time.monotonic() + seconds if seconds else None
    k = 0
    while True:
        path, body = reqs[k % len(reqs)]
        t0 = time.perf_counter()
        conn.request("POST", path, body, headers)
        r = conn.getresponse()
        r.read()
        lat.append(time.perf_counter() - t0)
        if r.status != 200:
            raise SystemExit(f"HTTP {r.status} during the benchmark")
        k += 1
        if (stop is None and k >= len(reqs)) or (stop is not None and time.monotonic() > stop):
            return lat


def _wrk_ms(text: str) -> float:
    value, unit = re.fullmatch(r"([0-9.]+)(us|ms|s)", text).groups()  # type: ignore[union-attr]
    return float(value) * {"us": 1e-3, "ms": 1.0, "s": 1e3}[unit]


def wrk(port: int, reqs: list[tuple[str, bytes]], connections: int, seconds: float, tmp: Path) -> dict[str, float]:
    """req/s and p50/p99 (ms) from ``wrk`` cycling through ``reqs`` on keep-alive connections."""
    exe = shutil.which("wrk")
    if exe is None:
        raise SystemExit("wrk is not installed (apt-get install wrk): the throughput figures need a C load generator")
    script = tmp / f"wrk-{connections}.lua"
    rows = ",\n".join(f"{{[==[{path}]==], [==[{body.decode()}]==]}}" for path, body in reqs)
    script.write_text(
        f"local reqs = {{\n{rows}\n}}\n"
        "local n = 0\n"
        "request = function()\n"
        "  n = n + 1\n"
        "  local r = reqs[(n % #reqs) + 1]\n"
        '  return wrk.format("POST", r[1], {["Content-Type"] = "application/json"}, r[2])\n'
        "end\n"
    )
    threads = min(2, connections)
    out = subprocess.run([exe, f"-t{threads}", f"-c{connections}", f"-d{seconds:.0f}s", "--latency", "-s", str(script),
                          f"http://127.0.0.1:{port}"], capture_output=True, text=True, timeout=seconds + 60).stdout
    found = {"rps": float(re.search(r"Requests/sec:\s+([0-9.]+)", out).group(1))}  # type: ignore[union-attr]
    for q in ("50", "99"):
        found[f"p{q}"] = _wrk_ms(re.search(rf"^\s+{q}%\s+(\S+)", out, re.M).group(1))  # type: ignore[union-attr]
    errors = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    found["errors"] = float(errors.group(1)) if errors else 0.0
    return found


# --------------------------------------------------------------------------------------------- strategies
def strategies(tmp: Path, n_domains: int, iters: int) -> list[str]:
    """Per-strategy miss cost, run latency at N=100 and RSS per domain held (full-network SYNTH_DTYPE deltas)."""
    from contracts.artifacts import load_version
    from serving.composition import build_composer
    from trainer.export.onnx_graph import delta_model
    from trainer.export.publish import publish_version

    base = load_version(tmp / "art-fullnet" / "v1")
    real = base.read_delta("dom-0")  # full-network delta (all dense layers + domain row)
    rng = np.random.default_rng(1)
    deltas = {}
    for k in range(n_domains):
        arrays = {n: (a + rng.standard_normal(a.shape).astype(np.float32) * 1e-3) for n, a in real.items()}
        deltas[f"f{k}"] = (delta_model(f"f{k}", arrays, SYNTH_DTYPE), arrays)
    root = tmp / "art-full"
    publish_version(root, "v1", base.shared_bytes, deltas, base.manifest.contract, delta_dtype=SYNTH_DTYPE,
                    fsync=False)
    loaded = load_version(root / "v1")
    u = np.random.default_rng(2).standard_normal((N_CANDIDATES, 128), dtype=np.float32)
    i = np.random.default_rng(3).standard_normal((N_CANDIDATES, 128), dtype=np.float32)
    lines = []
    for name in ("feed", "session"):
        rss0 = rss_mib(os.getpid())
        composer = build_composer(name, loaded, cache_size=n_domains, threads=1)
        t0 = time.perf_counter()
        for d in deltas:
            composer.warm(d)
        miss_ms = (time.perf_counter() - t0) / n_domains * 1e3
        held = (rss_mib(os.getpid()) - rss0) / n_domains
        doms = list(deltas)
        lat = []
        for k in range(iters):
            d = doms[k % len(doms)]
            t = time.perf_counter()
            composer.logits(d, u, i)
            lat.append(time.perf_counter() - t)
        p50, p99 = pct(lat)
        lines.append(f"  {name:8s} miss (load+compose+build) {miss_ms:6.2f} ms   held {held:5.2f} MiB/domain   "
                     f"run N=100 p50 {p50:.3f} ms p99 {p99:.3f} ms")
        if name == "feed":  # what the in-graph Cast + Add of a delta costs per run: the same rows without one
            lat = []
            for _ in range(iters):
                t = time.perf_counter()
                composer.logits("no-delta", u, i)
                lat.append(time.perf_counter() - t)
            p50, p99 = pct(lat)
            lines.append(f"  feed, a domain without a delta (θS graph, weights constant): "
                         f"run N=100 p50 {p50:.3f} ms p99 {p99:.3f} ms")
        del composer
    return lines


def http_section(tmp: Path, redis_url: str, world: dict, fl: dict[str, float], iters: int, seconds: float,
                 results: dict) -> None:
    server = Server(tmp, redis_url, tmp / "registry.db", cache=256, composition="feed")
    try:
        domains = [f"dom-{d}" for d in range(4)]
        for protocol in ("v1", "v2"):
            reqs = _bodies(world, domains, 500, seed=1, protocol=protocol)
            run_requests(server.port, reqs[:100])  # warm-up
            p50, p99 = pct(run_requests(server.port, reqs * (iters // 500 + 1)))
            results[f"http_{protocol}"] = {"p50": p50, "p99": p99}
            print(f"HTTP {protocol}, concurrency 1: p50 {p50:.3f} ms  p99 {p99:.3f} ms  ->  "
                  f"p50 {p50 / fl['p50']:.2f}x  p99 {p99 / fl['p99']:.2f}x the floor", flush=True)
            for connections in (8, 64):
                w = wrk(server.port, reqs, connections, seconds, tmp)
                results[f"wrk_{protocol}_{connections}"] = w
                print(f"HTTP {protocol}, wrk {connections:2d} connections: {w['rps']:7.0f} req/s  "
                      f"p50 {w['p50']:.2f} ms  p99 {w['p99']:.2f} ms  (non-2xx {w['errors']:.0f})", flush=True)
        _, body = server.get("/metrics")
        batches = re.search(rb"mamdr_serving_batches_total ([0-9.e+]+)", body)
        jobs = re.search(rb"mamdr_serving_batched_requests_total ([0-9.e+]+)", body)
        if batches and jobs:
            print(f"batching: {float(jobs.group(1)) / max(1.0, float(batches.group(1))):.2f} requests per "
                  "onnxruntime run over the whole section", flush=True)
    finally:
        server.stop()


def domains_section(tmp: Path, redis_url: str, world: dict, counts: tuple[int, ...], iters: int,
                    results: dict) -> None:
    """p50/p99 over uniformly random domains with every domain held, and bytes per held domain: the RSS
    growth over the smallest count's server divided by the extra domains (a server composes its LRU while
    loading, so the growth between two counts is what the extra domains cost)."""
    print(f"domains held (feed, every domain in the LRU, full-network {SYNTH_DTYPE} deltas of the paper MLP):",
          flush=True)
    base: dict[str, float] = {}
    first: tuple[int, float] | None = None
    for n in counts:
        db, _ = publish_synthetic(tmp, n)
        server = Server(tmp, redis_url, db, cache=n, composition="feed")
        try:
            doms = [f"s{k}" for k in range(n)]
            run_requests(server.port, [request_for("v1", d, "u1", ["i1"]) for d in doms])  # every domain once
            rss = rss_mib(server.proc.pid)
            first = first or (n, rss)
            per_domain = (rss - first[1]) * 1024 * 1024 / (n - first[0]) if n > first[0] else float("nan")
            for protocol in ("v1", "v2"):
                lat = run_requests(server.port, _bodies(world, doms, iters, seed=n, protocol=protocol))
                p50, p99 = pct(lat)
                base.setdefault(protocol, p99)
                results.setdefault("domains", []).append({"n": n, "protocol": protocol, "p50": p50, "p99": p99,
                                                          "rss_mib": rss, "bytes_per_domain": per_domain})
                held = "" if n == first[0] else f", {per_domain / 1024:5.1f} KiB per extra held domain"
                print(f"  {n:6d} domains, {protocol}: p50 {p50:.3f} ms  p99 {p99:.3f} ms  "
                      f"(p99 {p99 / base[protocol]:.2f}x the {counts[0]}-domain p99); RSS {rss:7.1f} MiB{held}",
                      flush=True)
        finally:
            server.stop()


def plot(results: dict, fl: dict[str, float], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.4, 4.0))
    for protocol, marker, color in (("v1", "o", "tab:blue"), ("v2", "s", "tab:orange")):
        rows = [r for r in results.get("domains", []) if r["protocol"] == protocol]
        if not rows:
            continue
        ns = [r["n"] for r in rows]
        ax.plot(ns, [r["p50"] for r in rows], marker=marker, color=color, label=f"{protocol} p50")
        ax.plot(ns, [r["p99"] for r in rows], marker=marker, color=color, linestyle="--", label=f"{protocol} p99")
    ax.axhline(fl["p50"], color="grey", linewidth=0.8, label="floor p50 (MGET + onnxruntime)")
    ax.set_xscale("log")
    ax.set_xlabel("domains held")
    ax.set_ylabel("latency per request (ms), concurrency 1")
    ax.set_title("Serving latency vs domains held (100 candidates, real Redis)")
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    print(f"plot: {path}", flush=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true", help="smaller counts (smoke run)")
    ap.add_argument("--users", type=int, default=20_000)
    ap.add_argument("--items", type=int, default=20_000)
    ap.add_argument("--seconds", type=float, default=10.0, help="wrk duration per run")
    ap.add_argument("--plot", type=Path, default=REPO / "docs" / "serving_domains.png")
    ap.add_argument("--json", type=Path, default=None, help="also write every figure here")
    ap.add_argument("--strategies", action="store_true", help="also compare the composition strategies")
    ap.add_argument("--strategies-only", action="store_true", help="only the floor and the strategies (no HTTP)")
    ap.add_argument("--specific", default="head",
                    help="θi's scope in the served version (head: the trainer's default; default: every parameter)")
    args = ap.parse_args()
    iters = 300 if args.quick else 3_000
    counts = (10, 100) if args.quick else (10, 1_000, 10_000)
    seconds = 3.0 if args.quick else args.seconds
    tmp = Path(tempfile.mkdtemp(prefix="bench-serving-"))
    redis_proc, redis_url = start_redis(tmp)
    results: dict = {}
    try:
        print(f"setup: paper MLP, {args.users} users / {args.items} items in Redis, {N_CANDIDATES} candidates",
              flush=True)
        world = build_world(tmp, redis_url, args.users, args.items, args.specific)
        fl = floor(tmp, redis_url, world, iters)
        results["floor"] = fl
        print(f"floor (Redis MGET + onnxruntime, no HTTP): p50 {fl['p50']:.3f} ms  p99 {fl['p99']:.3f} ms  "
              f"(feature store p50 {fl['fs_p50']:.3f} ms); 1-core ceiling {1e3 / fl['mean']:.0f} req/s", flush=True)
        print(f"onnxruntime run alone, {N_CANDIDATES} candidates: p50 {fl['run_general_p50']:.3f} ms with the user "
              f"repeated per row, {fl['run_one_user_p50']:.3f} ms with one user row "
              f"({'first layer factored' if fl['factored'] else 'not factored: a delta covers the first layer'}; "
              f"{fl['run_general_p50'] / fl['run_one_user_p50']:.2f}x)", flush=True)
        if not args.strategies_only:
            http_section(tmp, redis_url, world, fl, iters, seconds, results)
        if args.strategies or args.strategies_only:
            print(f"composition strategies, in-process, full-network {SYNTH_DTYPE} deltas, N=100:", flush=True)
            for line in strategies(tmp, 50 if args.quick else 300, iters):
                print(line, flush=True)
        if args.strategies_only:
            return
        domains_section(tmp, redis_url, world, counts, iters, results)
        plot(results, fl, args.plot)
        if args.json:
            args.json.write_text(json.dumps(results, indent=2))
    finally:
        redis_proc.terminate()
        redis_proc.wait(10)
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
