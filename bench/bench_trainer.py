"""Continual-trainer benchmark: ingest rate, round time against the number of domains, event-to-live freshness.

1. ingest: events/s through ``ContinualTrainer.ingest`` (poll + validate + prequential scoring + buffer,
   no round) on file:// (and kafka:// with ``--kafka kafka://HOST:PORT/TOPIC``); the floor is a bare
   ``consumer.poll`` loop over the same log in the same run (ratio = ingest / floor).
2. round time: one round (DN + DR + publish: checkpoint, feature store, ONNX export, registry promote)
   with ``--round-events`` synthetic events spread over 10, 100 and 1000 domains. The first round of the
   process pays the ONNX exporter's warm-up, so each figure is the second round on that many domains.
3. freshness: a ``mamdr serve`` subprocess (127.0.0.1, free port, registry poll 0.1 s) and a producer
   thread writing events at ``--rate`` while the trainer publishes a version every ``--fresh-events``; a
   thread polls serving's /readyz; for each event, freshness = (time serving first reports the first version
   whose manifest offsets include it) - event ts. p50/p99 over all events of ``--fresh-rounds`` rounds,
   after a warm-up round (the ONNX exporter's first export) is live.

    ~/.cache/mamdr/venv/bin/python bench/bench_trainer.py [--n 20000] [--kafka auto|kafka://127.0.0.1:9092/bench]

Every loop is bounded in count and time. One torch thread (serving gets the other core).
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path
from typing import Any

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run as a script: reuse tests.fixtures
import numpy as np
import torch

from contracts.events import ClickEvent
from contracts.settings import Settings, load_settings
from domain_registry import open_registry
from feature_store import open_store
from mamdr import devstack
from stream import open_stream
from trainer.service.loop import ContinualTrainer

MODEL = {"emb_dim": 16, "hidden": (32, 16)}


def payloads(n: int, n_domains: int, start: int = 0, ts: float | None = None) -> list[bytes]:
    return [json.dumps(ClickEvent(event_id=f"e{i}", ts=ts if ts is not None else 1.7e9 + i,
                                  domain=f"d{i % n_domains}", user_id=f"u{(i * 7) % 611}",
                                  item_id=f"i{(i * 13) % 2000}", clicked=(i // 3) % 2).model_dump(),
                       separators=(",", ":")).encode() for i in range(start, start + n)]


def settings_for(tmp: Path, stream_url: str, partitions: int = 4, **trainer: Any) -> Settings:
    return load_settings(**{"home": str(tmp), "artifacts_url": f"file://{tmp}/artifacts",
                            "stream.url": stream_url,
                                "stream.create_topics": True, "stream.group": f"bench-{uuid.uuid4().hex[:6]}",
                            "stream.partitions": partitions,
                            **{f"trainer.{k}": v for k, v in trainer.items()}})


def make_trainer(tmp: Path, settings: Settings, n_domains: int, store_url: str = "memory://bench",
                 registry_url: str | None = None) -> ContinualTrainer:
    registry = open_registry(registry_url or f"sqlite://{tmp}/registry.db")
    wanted = [f"d{d}" for d in range(n_domains)]
    if hasattr(registry, "create_domains"):  # bulk onboarding (one transaction on SQLite)
        registry.create_domains(wanted)
    else:  # an older tree
        known = {d.id for d in registry.list_domains()}
        for d in wanted:
            if d not in known:
                registry.create_domain(d)
    stream = open_stream(settings.stream.url, settings.stream)
    trainer = ContinualTrainer(settings, stream=stream, store=open_store(store_url), registry=registry,
                               artifacts=tmp / "artifacts", model="mlp", model_config=MODEL)
    trainer.start()
    return trainer


def produce(url: str, settings: Settings, data: list[bytes]) -> None:
    stream = open_stream(url, settings.stream)
    with stream.producer() as producer:
        for p in data:
            producer.send(p)
        producer.flush()
    stream.close()


def bench_ingest(url: str, n: int, tmp: Path) -> None:
    warm = 2000  # ingested untimed first, so every domain has a slot and every timed event is scored
    settings = settings_for(tmp, url, round_events=10 * n, round_seconds=3600.0)
    produce(url, settings, payloads(warm + n, 8))
    deadline = time.monotonic() + 120
    # floor: a bare poll loop over the same log (its own consumer group)
    stream = open_stream(url, settings.stream)
    consumer = stream.consumer(f"floor-{uuid.uuid4().hex[:6]}")
    t0, got = time.perf_counter(), 0
    while got < warm + n and time.monotonic() < deadline:
        got += len(consumer.poll(max_records=5000, timeout_s=0.5))
    floor_s = time.perf_counter() - t0
    consumer.close()
    stream.close()
    trainer = make_trainer(tmp, settings, 8)
    assert trainer.consumer is not None and trainer.state is not None
    consumed = 0  # partitions are keyed by domain and polled in turn: warm until every domain has a slot
    while (consumed < warm or len(trainer.state.domains) < 8) and time.monotonic() < deadline:
        records = trainer.consumer.poll(max_records=250, timeout_s=0.5)
        trainer.ingest(records)
        consumed += len(records)
    before = sum(int(s.n) for s in trainer.prequential.domains.values())
    n = warm + n - consumed
    t0, done = time.perf_counter(), 0
    while done < n and time.monotonic() < deadline:
        records = trainer.consumer.poll(max_records=5000, timeout_s=0.5)
        trainer.ingest(records)
        done += len(records)
    took = time.perf_counter() - t0
    scored = sum(int(s.n) for s in trainer.prequential.domains.values()) - before
    print(f"ingest {url.split(':')[0]}://: {done} events in {took:.2f} s = {done / took:,.0f} events/s "
          f"({scored} scored prequentially); bare poll floor {got / floor_s:,.0f} events/s; "
          f"ratio {(done / took) / (got / floor_s):.2f}", flush=True)
    trainer.close()


def bench_rounds(domain_counts: list[int], round_events: int, inner_batches: int) -> None:
    for n_domains in domain_counts:
        with tempfile.TemporaryDirectory(prefix="bench-trainer-") as d:
            tmp = Path(d)
            url = f"file://{tmp}/stream/clicks"
            settings = settings_for(tmp, url, round_events=round_events, round_seconds=3600.0,
                                    inner_batches=inner_batches)
            t0 = time.perf_counter()
            trainer = make_trainer(tmp, settings, n_domains, store_url=f"memory://r{n_domains}")
            setup = time.perf_counter() - t0
            times = []
            for r in range(2):
                produce(url, settings, payloads(round_events, n_domains, start=r * round_events))
                reports = trainer.run(max_rounds=1, idle_exit_s=1.0)
                times.append(reports[0].seconds)
            print(f"round with {n_domains:4d} domains, {round_events} events, K={inner_batches}: "
                  f"{times[1]:6.2f} s (first round of this trainer {times[0]:.2f} s; "
                  f"{len(reports[0].domains_trained)} domains trained; registry setup {setup:.1f} s)", flush=True)
            trainer.close()


class ReadyPoller(threading.Thread):
    """Polls serving's /readyz; remembers when each model version was first reported live."""

    def __init__(self, url: str, until: float) -> None:
        super().__init__(daemon=True)
        self.http = httpx.Client(base_url=url, timeout=5.0)
        self.first_seen: dict[str, float] = {}
        self.until = until
        self.stop = threading.Event()

    def run(self) -> None:
        while not self.stop.is_set() and time.monotonic() < self.until:
            try:
                version = self.http.get("/readyz").json().get("model_version")
            except httpx.HTTPError:
                version = None
            if version and version not in self.first_seen:
                self.first_seen[version] = time.time()
            time.sleep(0.02)


def plot_freshness(points: list[tuple[float, float]], publishes: list[float], path: Path) -> None:
    """Freshness of every event against when it was produced, with the moments serving saw each version."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(8, 3.8))
    xs, ys = zip(*points, strict=True)
    ax.plot(xs, ys, ".", ms=2, alpha=0.5, label="an event: time until serving reports a version including it")
    for n, t in enumerate(publishes):
        ax.axvline(t, color="grey", lw=0.8, ls="--", label="serving reports a new version" if n == 0 else None)
    ax.set_xlabel("event produced at (s since the stream started)")
    ax.set_ylabel("freshness (s)")
    ax.set_ylim(bottom=0)
    ax.legend(loc="upper left", fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def bench_freshness(rounds: int, round_events: int, rate: float, tmp: Path, plot: Path | None = None) -> None:
    url = f"file://{tmp}/fresh/clicks"
    registry_url, store_url = f"sqlite://{tmp}/fresh.db", f"file://{tmp}/fresh_fs"
    # one partition: offsets sum to the number of events consumed in production order
    # every version kept: the figures read each round's manifest afterwards
    settings = settings_for(tmp, url, partitions=1, round_events=round_events, round_seconds=3600.0,
                            inner_batches=4, keep_versions=rounds + 2)
    (tmp / "artifacts").mkdir(parents=True, exist_ok=True)
    trainer = make_trainer(tmp, settings, 10, store_url=store_url, registry_url=registry_url)
    port = devstack.free_port()
    argv = devstack.mamdr_argv("--log-level", "WARNING", "serve", "--artifacts", f"file://{tmp}/artifacts",
                               "--feature-store", store_url, "--registry", registry_url, "--port", str(port))
    devstack.start_process("serving", argv, tmp, {"MAMDR_SERVING__RELOAD_POLL_S": "0.1"}, die_with_parent=True)
    try:
        http = httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=5.0)
        devstack.wait_until(lambda: http.get("/healthz").status_code == 200, 60, "serving", tmp, "serving")
        poller = ReadyPoller(f"http://127.0.0.1:{port}", time.monotonic() + 600)
        poller.start()
        # a warm-up round first (the ONNX exporter's warm-up), live at serving before the clock starts
        produce(url, settings, payloads(round_events, 10, start=10**7))
        warm = trainer.run(max_rounds=1, idle_exit_s=2.0)
        devstack.wait_until(lambda: warm[0].version in poller.first_seen, 60, "serving (warm-up version)")
        total = (rounds + 1) * round_events  # a round's worth more, so no measured round waits for idle exit
        stamps: list[float] = [0.0] * sum(json.loads(
            (tmp / "artifacts" / warm[0].version / "manifest.json").read_text())["offsets"].values())

        def producer() -> None:
            stream = open_stream(url, settings.stream)
            with stream.producer() as p:
                for i in range(total):
                    t = time.time()
                    p.send(payloads(1, 10, start=i, ts=t)[0])
                    stamps.append(t)
                    if i % 50 == 49:
                        p.flush()
                        time.sleep(max(0.0, (i + 1) / rate - (t - t_start)))
                p.flush()
            stream.close()

        t_start = time.time()
        thread = threading.Thread(target=producer, daemon=True)
        thread.start()
        reports = warm + trainer.run(max_rounds=rounds, idle_exit_s=5.0)
        thread.join(timeout=60)
        deadline = time.monotonic() + 60
        while reports[-1].version not in poller.first_seen and time.monotonic() < deadline:
            time.sleep(0.05)
        poller.stop.set()
        fresh, prev, secs = [], 0, []
        points: list[tuple[float, float]] = []  # (produced at, freshness) for the plot
        publishes: list[float] = []
        for rep in reports:
            end = sum(json.loads((tmp / "artifacts" / rep.version / "manifest.json").read_text())["offsets"].values())
            live = poller.first_seen.get(rep.version)
            if rep is not reports[0] and live is not None:
                mine = [live - ts for ts in stamps[prev:end]]
                fresh += mine
                points += [(ts - t_start, live - ts) for ts in stamps[prev:end]]
                publishes.append(live - t_start)
                secs.append(rep.seconds)
                print(f"  {rep.version}: {len(mine)} events, freshness {min(mine):.2f}-{max(mine):.2f} s, "
                      f"round {rep.seconds:.2f} s", flush=True)
            prev = end
        f = np.array(fresh)
        print(f"freshness (event ts -> serving reports the version including it), {len(f)} events over "
              f"{len(secs)} rounds of {round_events} at {rate:.0f} events/s: p50 {np.percentile(f, 50):.2f} s, "
              f"p99 {np.percentile(f, 99):.2f} s, max {f.max():.2f} s; round time mean {np.mean(secs):.2f} s",
              flush=True)
        if plot is not None and points:
            plot_freshness(points, publishes, plot)
            print(f"plot: {plot}", flush=True)
    finally:
        devstack.stop_process(tmp, "serving", timeout_s=10)
        trainer.close()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=20_000, help="events for the ingest figure")
    parser.add_argument("--kafka", help="kafka://HOST:PORT/TOPIC of a running broker, or 'auto' to start one "
                        "(needs scripts/kafka/fetch.sh); ingest figure only")
    parser.add_argument("--domains", default="10,100,1000")
    parser.add_argument("--round-events", type=int, default=5000)
    parser.add_argument("--inner-batches", type=int, default=8)
    parser.add_argument("--fresh-rounds", type=int, default=5)
    parser.add_argument("--fresh-events", type=int, default=2000)
    parser.add_argument("--rate", type=float, default=1000.0)
    parser.add_argument("--skip", default="", help="comma list of ingest,rounds,freshness to skip")
    parser.add_argument("--plot", type=Path, default=None, help="write the freshness-over-time plot here")
    args = parser.parse_args()
    torch.set_num_threads(1)
    logging.basicConfig(level=logging.WARNING)
    skip = set(args.skip.split(","))
    with tempfile.TemporaryDirectory(prefix="bench-trainer-") as d:
        tmp = Path(d)
        if "ingest" not in skip:
            bench_ingest(f"file://{tmp}/ingest/clicks", args.n, tmp / "file")
            if args.kafka == "auto":  # our own broker on free loopback ports (the test fixture's class)
                from tests.fixtures.kafka_broker import KafkaBroker

                broker = KafkaBroker(port=devstack.free_port(), controller_port=devstack.free_port(),
                                     workdir=tmp / "broker")
                broker.workdir.mkdir()
                broker.start()
                try:
                    bench_ingest(f"kafka://{broker.bootstrap}/bench", args.n, tmp / "kafka")
                finally:
                    broker.stop()
            elif args.kafka:
                topic = f"{args.kafka.rstrip('/')}-{uuid.uuid4().hex[:6]}"
                bench_ingest(topic, args.n, tmp / "kafka")
        if "rounds" not in skip:
            bench_rounds([int(x) for x in args.domains.split(",")], args.round_events, args.inner_batches)
        if "freshness" not in skip:
            bench_freshness(args.fresh_rounds, args.fresh_events, args.rate, tmp / "fresh", args.plot)
    return 0


if __name__ == "__main__":
    sys.exit(main())
