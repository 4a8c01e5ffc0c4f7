"""Distributed MAMDR benchmark: round time and events/s with 1, 2 and 4 worker processes on this
machine (gloo on loopback, one thread per process), as speed-ups over 1 process in the same run;
the bytes moved per round with and without the embedding caches; and rank 0's ingest rate (poll,
validate, prequential score, buffer), which bounds the design: rank 0 validates every event.

    ~/.cache/mamdr/venv/bin/python bench/bench_distributed.py [--events 16000 --domains 8 --rounds 2 --worlds 1,2,4]

On an N-core box, more than N processes share cores: the speed-up is capped near N (this box: 2).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from feature_store import open_store
from tests.support.distributed_harness import save_plan
from trainer.data.base import Split
from trainer.distributed.launch import free_port
from trainer.distributed.plan import build_plan
from trainer.models import ModelConfig
from trainer.service.state import ModelState


def make_plans(folder: Path, fs_url: str, events: int, domains: int, rounds: int, dim: int) -> int:
    torch.manual_seed(0)
    n_users, n_items = 20_000, 5_000
    state = ModelState("mlp", ModelConfig(n_users=n_users, n_items=n_items, n_domains=0, emb_dim=dim,
                                          hidden=(256, 128, 64)))
    state.ensure([f"u{i}" for i in range(n_users)], [f"i{i}" for i in range(n_items)],
                 [f"d{i}" for i in range(domains)])
    store = open_store(fs_url)
    store.declare("v000001", {"user": dim, "item": dim})
    store.write("v000001", "user", state.users.ids, state.model.user_embedding.weight.detach().numpy())
    store.write("v000001", "item", state.items.ids, state.model.item_embedding.weight.detach().numpy())
    store.publish("v000001")
    rng = np.random.default_rng(0)
    knobs = {"beta": 0.5, "gamma": 0.1, "k": 2, "inner_batches": 4, "batch_size": 1024, "lr": 1e-3}
    for r in range(rounds):
        per = events // domains
        train = {d: Split(user=rng.zipf(1.3, per) % n_users, item=rng.zipf(1.3, per) % n_items,
                          label=(rng.random(per) < 0.2).astype(np.float32)) for d in range(domains)}
        order = [int(x) for x in rng.permutation(domains)]
        plan = build_plan(state, train, targets=list(range(domains)), order=order, round_no=r, seed=0,
                          knobs=knobs, fs_version="v000001", n_published={"user": n_users, "item": n_items})
        save_plan(plan, folder, f"r{r}")
    return per * domains


def run_world(plans: Path, fs_url: str, world: int, out: Path) -> dict:
    port = free_port()
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    procs = [subprocess.Popen([sys.executable, "-m", "tests.support.distributed_harness", "--plan", str(plans),
                               "--rank", str(r), "--world", str(world), "--port", str(port), "--fs", fs_url,
                               "--out", str(out), "--timeout", "300"], env=env) for r in range(world)]
    for p in procs:
        if p.wait(timeout=1200) != 0:
            raise SystemExit(f"rank exited with {p.returncode}")
    return json.loads((out / "result.json").read_text())


def ingest_rate(tmp: Path, n: int) -> float:
    """Events/s of rank 0's poll + ingest (validation, prequential scoring, vocab, buffers), no training."""
    from contracts.events import ClickEvent
    from contracts.settings import load_settings
    from domain_registry import open_registry
    from stream import open_stream
    from trainer.service.loop import ContinualTrainer

    settings = load_settings(**{"stream.url": f"file://{tmp}/stream/clicks",
                                "stream.create_topics": True, "trainer.round_events": 10**9})
    registry = open_registry(f"sqlite://{tmp}/registry.db")
    for d in ("a", "b", "c", "d"):
        registry.create_domain(d)
    stream = open_stream(settings.stream.url, settings.stream)
    with stream.producer() as producer:
        for i in range(n):
            producer.send(ClickEvent(event_id=f"e{i}", ts=time.time(), domain="abcd"[i % 4], user_id=f"u{i % 3000}",
                                     item_id=f"i{(i * 7) % 900}", clicked=i % 5 == 0))
        producer.flush()
    trainer = ContinualTrainer(settings, stream=stream, store=open_store("memory://"), registry=registry,
                               artifacts=tmp / "artifacts", model_config={"emb_dim": 32, "hidden": (64, 32)})
    trainer.start()
    assert trainer.consumer is not None
    # the first poll builds the model and vocabularies (the first domains rebuild it): not timed
    trainer.ingest(trainer.consumer.poll(max_records=2000, timeout_s=1.0))
    seen, t0 = 0, time.perf_counter()
    while seen < n - 2000:
        records = trainer.consumer.poll(max_records=5000, timeout_s=0.5)
        if not records:
            break
        trainer.ingest(records)
        seen += len(records)
    rate = seen / (time.perf_counter() - t0)
    trainer.close()
    return rate


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--events", type=int, default=16_000)
    parser.add_argument("--domains", type=int, default=8)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--dim", type=int, default=64)
    parser.add_argument("--worlds", default="1,2,4")
    args = parser.parse_args()
    print(f"cpus {os.cpu_count()}, load average {os.getloadavg()[0]:.1f} (other work shares these cores)")
    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        fs_url = f"file://{tmp}/fs"
        events = make_plans(tmp / "plans", fs_url, args.events, args.domains, args.rounds, args.dim)
        print(f"round: {events} events over {args.domains} domains, MLP 256-128-64, emb {args.dim}, "
              f"K=4 batches of 1024 per domain (global), DR k=2 on every domain, {args.rounds} rounds")
        base = None
        for world in [int(w) for w in args.worlds.split(",")]:
            res = run_world(tmp / "plans", fs_url, world, tmp / f"out{world}")
            sec = statistics.median(res["round_seconds"])
            rate = events / sec
            base = base or sec
            c = res["counters"]
            per_round = {k: v // args.rounds for k, v in c.items()}
            print(f"world {world}: round {sec:6.2f} s (median of {args.rounds}), {rate:8.0f} events/s, "
                  f"speed-up x{base / sec:4.2f}; per round: fetched {per_round['fetched_bytes'] / 1e6:.2f} MB, "
                  f"exchanged {per_round['exchange_bytes'] / 1e6:.2f} MB, "
                  f"plan to workers {per_round['plan_bytes'] / 1e6:.2f} MB, "
                  f"cache-less pull+push {per_round['uncached_bytes'] / 1e6:.2f} MB")
            last = res["phases"][-1]
            print("         rank 0 phases (s): " + ", ".join(f"{k} {v:.2f}" for k, v in last.items()))
        rate = ingest_rate(tmp / "ingest", 30_000)
        print(f"rank-0 ingest (poll + validate + prequential + buffer, file://): {rate:,.0f} events/s")


if __name__ == "__main__":
    main()
