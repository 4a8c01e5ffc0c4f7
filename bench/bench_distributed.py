"""Distributed trainer benchmark: ingest events/s against the number of ranks, each rank a full trainer on
its own partitions (trainer/distributed/replica.py).

Runs ``mamdr trainer run --world-size W`` (W = 1 is the single-process trainer) over one file:// stream of
``--events`` clicks on 4 partitions, tiny MLP, ``--round-events`` per round, and reads from every rank's log
how many events it polled and ingested (validation, dead letters, prequential scoring, buffering) and in how
many seconds of its own. Reported per run: the ranks' summed ingest rate (events/s while ingesting), the
whole run's events/s (rounds included, the first paying the ONNX exporter's warm-up), the exactly-once check
(events counted along the published lineage = events produced), and whether the replicas ended identical.

    PYTHONPATH=$PWD ~/.cache/mamdr/venv/bin/python bench/bench_distributed.py [--events 60000 --worlds 1,2
        --plot docs/distributed_ingest.png]

On an N-core box more than N busy processes share cores (this box: 2, shared with other jobs): the summed
ingest rate can grow at most about N-fold here.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from contracts.events import ClickEvent
from contracts.settings import StreamSettings
from domain_registry import open_registry
from stream import open_stream
from trainer.distributed.launch import free_port

DOMAINS = [f"d{i}" for i in range(8)]
INGESTED = re.compile(r"ingested (\d+) events in ([\d.]+) s of polling and ingest")
DIGEST = re.compile(r"replica sha256 (\w+)")


def produce(url: str, n: int) -> None:
    settings = StreamSettings(url=url, partitions=4, create_topics=True, fsync=False)
    with open_stream(url, settings) as stream, stream.producer() as producer:
        for i in range(n):
            producer.send(ClickEvent(event_id=f"e{i}", ts=time.time(), domain=DOMAINS[i % len(DOMAINS)],
                                     user_id=f"u{i % 5000}", item_id=f"i{(i * 7) % 3000}", clicked=int(i % 5 == 0)))
        producer.flush()


def lineage_events(tmp: Path) -> int:
    live = open_registry(f"sqlite://{tmp}/registry.db").live_model()
    total, version = 0, live.id if live else None
    while version:
        manifest = json.loads((tmp / "artifacts" / version / "manifest.json").read_text())
        total += manifest["events_included"]
        version = manifest["parent"]
    return total


def run(tmp: Path, world: int, round_events: int) -> dict:
    port = free_port()
    cmd = [sys.executable, "-m", "mamdr.cli", "--log-level", "INFO", "trainer", "run",
           "--stream", f"file://{tmp}/stream/clicks", "--feature-store", f"file://{tmp}/fs",
           "--registry", f"sqlite://{tmp}/registry.db", "--artifacts", f"file://{tmp}/artifacts",
           "--emb-dim", "8", "--hidden", "16,8", "--round-events", str(round_events), "--inner-batches", "1",
           "--idle-exit", "2.0", "--keep-versions", "1000"]
    if world > 1:
        cmd += ["--world-size", str(world), "--dist-timeout", "300"]
    procs = []
    t0 = time.perf_counter()
    for rank in range(world):
        env = {**os.environ, "OMP_NUM_THREADS": "1"}
        if world > 1:
            env.update({"RANK": str(rank), "WORLD_SIZE": str(world), "LOCAL_RANK": str(rank),
                        "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(port)})
        procs.append(subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE))
    logs = []
    for p in procs:
        _, err = p.communicate(timeout=1800)
        if p.returncode != 0:
            raise SystemExit(f"a rank exited with {p.returncode}: {err.decode()[-2000:]}")
        logs.append(err.decode())
    wall = time.perf_counter() - t0
    ranks = []
    for text in logs:
        m = INGESTED.search(text)
        assert m, text[-2000:]
        ranks.append((int(m.group(1)), float(m.group(2))))
    digests = {d for text in logs for d in DIGEST.findall(text)}
    return {"wall": wall, "ranks": ranks, "ingest_rate": sum(n / s for n, s in ranks if s),
            "counted": lineage_events(tmp), "replicas_identical": len(digests) <= 1}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--events", type=int, default=60_000)
    ap.add_argument("--round-events", type=int, default=20_000)
    ap.add_argument("--worlds", default="1,2")
    ap.add_argument("--plot", type=Path, default=None)
    args = ap.parse_args()
    print(f"cpus {os.cpu_count()}, load average {os.getloadavg()[0]:.1f} (other work shares these cores); "
          f"{args.events:,} events, 4 partitions, rounds of {args.round_events:,}")
    results = {}
    for world in (int(w) for w in args.worlds.split(",")):
        with tempfile.TemporaryDirectory() as name:
            tmp = Path(name)
            registry = open_registry(f"sqlite://{tmp}/registry.db")
            for d in DOMAINS:
                registry.create_domain(d)
            registry.close()
            produce(f"file://{tmp}/stream/clicks", args.events)
            res = results[world] = run(tmp, world, args.round_events)
        per_rank = ", ".join(f"{n:,} in {s:.1f} s ({n / s:,.0f}/s)" for n, s in res["ranks"])
        print(f"world {world}: ingest {res['ingest_rate']:>8,.0f} events/s summed over ranks [{per_rank}]; "
              f"whole run {args.events / res['wall']:>7,.0f} events/s ({res['wall']:.1f} s); counted "
              f"{res['counted']:,} of {args.events:,}; replicas identical: {res['replicas_identical']}")
    base = results[min(results)]["ingest_rate"]
    for world, res in results.items():
        print(f"  ingest speed-up at {world} ranks: x{res['ingest_rate'] / base:.2f}")
    if args.plot is not None:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        worlds = sorted(results)
        fig, ax = plt.subplots(figsize=(5, 3.4))
        ax.plot(worlds, [results[w]["ingest_rate"] for w in worlds], "o-", label="ingest, summed over ranks")
        ax.plot(worlds, [args.events / results[w]["wall"] for w in worlds], "s--", label="whole run (with rounds)")
        ax.set_xticks(worlds)
        ax.set_xlabel("ranks (processes)")
        ax.set_ylabel("events/s")
        ax.set_title(f"file:// ingest vs ranks ({os.cpu_count()} shared cores)", fontsize=9)
        ax.legend(fontsize=7)
        fig.tight_layout()
        fig.savefig(args.plot, dpi=110)
        print(f"plot written to {args.plot}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
