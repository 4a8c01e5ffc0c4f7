"""Stream benchmark: broker start time, events/s produced and consumed over kafka:// and file://.

Floors are measured in the same run: for kafka://, raw kafka-python (the same producer settings, prebuilt
bytes; a bare KafkaConsumer poll loop with the stream layer's fetch settings) on the same broker and a topic
of the same shape; for file://, a bare JSON-lines file of the same prebuilt payloads (json.dumps + one write
per 2,000 lines; read back with splitlines + json.loads), without lock, index, partitions or fsync.
Ratios = layer / floor. The layer's produce figure includes serialising each ClickEvent; its consume figure
builds Records, and "ingest" adds the trainer's validation (stream/validate.py: columns, dead-letter reasons).

kafka:// ingest (what a trainer process can take in: poll + decode + validate) is also measured
- with the settings main had (max_poll_records 2,000, 1 MiB per-partition fetches, CRCs checked in pure Python
  because the crc32c package was not a dependency) and with the contract's pydantic validator, as the "before";
- against the poll batch size, plotted into docs/stream_ingest.png (``--plot``).

    PYTHONPATH=$PWD ~/.cache/mamdr/venv/bin/python bench/bench_stream.py [--n 100000] [--skip-kafka] [--plot PNG]

Starts its own broker on free loopback ports (the test fixture's class) and stops it; needs
scripts/kafka/fetch.sh to have run.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import statistics
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import NamedTuple

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run as a script: reuse tests.fixtures

from contracts.events import ClickEvent, InvalidEvent, parse_event
from contracts.settings import StreamSettings
from stream import Record, check_records, open_stream
from tests.fixtures.kafka_broker import KafkaBroker
from tests.fixtures.redis_server import free_port

DOMAINS = [f"d{i}" for i in range(8)]


def events(n: int) -> list[ClickEvent]:
    return [
        ClickEvent(
            event_id=f"e{i}",
            ts=1.7e9 + i,
            domain=DOMAINS[i % 8],
            user_id=f"u{i % 611}",
            item_id=f"i{i % 9742}",
            clicked=i % 2,
        )
        for i in range(n)
    ]


def rate(n: int, seconds: float) -> float:
    return n / max(seconds, 1e-9)


def bench_layer(url: str, settings: StreamSettings, evs: list[ClickEvent]) -> dict[str, float]:
    n = len(evs)
    with open_stream(url, settings) as stream:
        t0 = time.perf_counter()
        with stream.producer() as producer:
            for e in evs:
                producer.send(e)
            producer.flush()
        produce = rate(n, time.perf_counter() - t0)
        with stream.consumer(f"bench-{uuid.uuid4().hex[:8]}") as consumer:
            got = valid = 0
            t0 = time.perf_counter()
            deadline = time.monotonic() + 120
            while got < n and time.monotonic() < deadline:
                records = consumer.poll(timeout_s=1.0)
                got += len(records)
                valid += len(check_records(records, settings.max_event_bytes))
            consume = rate(got, time.perf_counter() - t0)
            assert got == n and valid == n, (got, valid, n)
    return {"produce": produce, "consume_validate": consume}


def bench_consume_only(url: str, settings: StreamSettings, n: int) -> float:
    with open_stream(url, settings) as stream, stream.consumer(f"bench-{uuid.uuid4().hex[:8]}") as consumer:
        got = 0
        t0 = time.perf_counter()
        deadline = time.monotonic() + 120
        while got < n and time.monotonic() < deadline:
            got += len(consumer.poll(timeout_s=1.0))
        return rate(got, time.perf_counter() - t0)


def kafka_floor(bootstrap: str, topic: str, payloads: list[tuple[bytes, bytes]], s: StreamSettings) -> dict[str, float]:
    from kafka import KafkaConsumer, KafkaProducer

    p = KafkaProducer(
        bootstrap_servers=bootstrap,
        acks="all",
        enable_idempotence=True,
        linger_ms=s.linger_ms,
        batch_size=s.batch_bytes,
    )
    t0 = time.perf_counter()
    for value, key in payloads:
        p.send(topic, value=value, key=key)
    p.flush()
    produce = rate(len(payloads), time.perf_counter() - t0)
    p.close()
    c = KafkaConsumer(
        topic,
        bootstrap_servers=bootstrap,
        group_id=f"floor-{uuid.uuid4().hex[:8]}",
        enable_auto_commit=False,
        auto_offset_reset="earliest",
        max_poll_records=s.max_poll_records,
    )
    got = 0
    t0 = time.perf_counter()
    deadline = time.monotonic() + 120
    while got < len(payloads) and time.monotonic() < deadline:
        got += sum(len(v) for v in c.poll(timeout_ms=1000).values())
    consume = rate(got, time.perf_counter() - t0)
    c.close()
    return {"produce": produce, "consume": consume}


def file_floor(root: Path, payloads: list[tuple[bytes, bytes]]) -> dict[str, float]:
    """A bare JSON-lines log of the same records: one file, no lock, no index, no fsync, no partitions."""
    path = root / "floor.log"
    t0 = time.perf_counter()
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_APPEND, 0o644)
    chunk: list[bytes] = []
    for value, key in payloads:
        obj = {"ts": time.time(), "key": key.decode(), "value": value.decode()}
        chunk.append(json.dumps(obj).encode() + b"\n")
        if len(chunk) == 2000:
            os.write(fd, b"".join(chunk))
            chunk.clear()
    os.write(fd, b"".join(chunk))
    os.close(fd)
    produce = rate(len(payloads), time.perf_counter() - t0)
    t0 = time.perf_counter()
    got = [json.loads(line)["value"].encode() for line in path.read_bytes().splitlines()]
    return {"produce": produce, "consume": rate(len(got), time.perf_counter() - t0)}


def report(name: str, layer: dict[str, float], consume_only: float, floor: dict[str, float]) -> None:
    print(
        f"{name}: produce {layer['produce']:>9,.0f} ev/s (floor {floor['produce']:>9,.0f}, "
        f"ratio {layer['produce'] / floor['produce']:.2f})"
    )
    print(
        f"{name}: consume {consume_only:>9,.0f} ev/s (floor {floor['consume']:>9,.0f}, "
        f"ratio {consume_only / floor['consume']:.2f}); with validation {layer['consume_validate']:,.0f} ev/s"
    )


class Rate(NamedTuple):
    """Events per wall-clock second, and per CPU second of this process (the broker, other jobs and
    kafka-python's I/O waits are not in it: on a shared box that is what one process with a core of its own
    could take in)."""

    wall: float
    cpu: float


def kafka_consume(url: str, settings: StreamSettings, n: int, validate: str) -> Rate:
    """Events/s of the stream layer's consumer: ``validate`` none (Records only), fast (the trainer's
    validator) or contract (pydantic ``parse_event`` per event, what main's trainer ran)."""
    with open_stream(url, settings) as stream, stream.consumer(f"bench-{uuid.uuid4().hex[:8]}") as consumer:
        got = valid = 0
        t0 = c0 = 0.0
        first = 0
        deadline = time.monotonic() + 300
        while got < n and time.monotonic() < deadline:
            records = consumer.poll(max_records=settings.max_poll_records, timeout_s=1.0)
            if records and not got:  # the clock starts once the group is joined and fetching runs
                t0, c0, first = time.perf_counter(), time.process_time(), len(records)
            got += len(records)
            if validate == "fast":
                valid += len(check_records(records, settings.max_event_bytes))
            elif validate == "contract":
                for r in records:
                    with contextlib.suppress(InvalidEvent):
                        parse_event(r.value, max_bytes=settings.max_event_bytes)
                        valid += 1
            else:
                valid += len(records)
        seconds, cpu = time.perf_counter() - t0, time.process_time() - c0
    assert got == n and valid == n, (got, valid, n)
    return Rate(rate(n - first, seconds), rate(n - first, cpu))


def bare_poll(bootstrap: str, topic: str, n: int, s: StreamSettings) -> Rate:
    """The floor: a bare kafka-python poll loop with the layer's fetch settings, counting messages."""
    from kafka import KafkaConsumer

    c = KafkaConsumer(topic, bootstrap_servers=bootstrap, group_id=f"floor-{uuid.uuid4().hex[:8]}",
                      enable_auto_commit=False, auto_offset_reset="earliest", isolation_level="read_committed",
                      max_poll_records=s.max_poll_records, max_partition_fetch_bytes=s.fetch_bytes,
                      fetch_max_bytes=max(4 * s.fetch_bytes, 52_428_800))
    got = first = 0
    t0 = c0 = 0.0
    deadline = time.monotonic() + 300
    while got < n and time.monotonic() < deadline:
        polled = sum(len(v) for v in c.poll(timeout_ms=1000).values())
        if polled and not got:  # as in kafka_consume: from the first fetched batch on
            t0, c0, first = time.perf_counter(), time.process_time(), polled
        got += polled
    seconds, cpu = time.perf_counter() - t0, time.process_time() - c0
    c.close()
    assert got == n, (got, n)
    return Rate(rate(n - first, seconds), rate(n - first, cpu))


@contextlib.contextmanager
def pure_python_crc() -> Iterator[None]:
    """kafka-python without the crc32c package (main's dependencies): CRCs checked in pure Python."""
    import kafka.record.default_records as records
    from kafka.record._crc32c import crc

    saved = records.calc_crc32c
    records.calc_crc32c = lambda view: crc(view)  # type: ignore[assignment]
    try:
        yield
    finally:
        records.calc_crc32c = saved


def bench_kafka_ingest(bootstrap: str, n: int, repeat: int, plot: Path | None) -> None:
    s = StreamSettings(url=f"kafka://{bootstrap}/ingest", partitions=4, create_topics=True)
    evs = events(n)
    with open_stream(s.url, s) as stream, stream.producer() as producer:
        for e in evs:
            producer.send(e)
        producer.flush()
    fast = s.model_copy(update={"kafka_client": "confluent-kafka"})
    old = s.model_copy(update={"max_poll_records": 2000, "fetch_bytes": 1 << 20})

    def mains() -> Rate:
        with pure_python_crc():
            return kafka_consume(s.url, old, n, "contract")

    configs: list[tuple[str, Callable[[], Rate]]] = [
        ("bare kafka-python poll (floor)", lambda: bare_poll(bootstrap, "ingest", n, s)),
        ("layer: poll -> Records", lambda: kafka_consume(s.url, s, n, "none")),
        ("layer: poll -> Records -> validated columns (the trainer's ingest)",
         lambda: kafka_consume(s.url, s, n, "fast")),
        ("layer, contract (pydantic) validation per event", lambda: kafka_consume(s.url, s, n, "contract")),
        ("optional confluent-kafka consumer: poll -> Records", lambda: kafka_consume(s.url, fast, n, "none")),
        ("optional confluent-kafka consumer: ... -> validated columns", lambda: kafka_consume(s.url, fast, n, "fast")),
        ("main's consumer: 2,000/poll, 1 MiB fetches, pure-Python CRC, pydantic", mains),
    ]
    runs: dict[str, list[Rate]] = {name: [] for name, _ in configs}
    for _ in range(repeat):  # interleaved, so the box's load drifts over every configuration alike
        for name, fn in configs:
            runs[name].append(fn())
    rows = [(name, Rate(statistics.median(r.wall for r in runs[name]), statistics.median(r.cpu for r in runs[name])))
            for name, _ in configs]
    floor = rows[0][1]
    records = [Record("ingest", i % 4, i, e.to_json(), 0.0) for i, e in enumerate(evs)]
    cpu = {}
    for name, fn in (("contract", lambda: [parse_event(r.value) for r in records]),
                     ("columns", lambda: check_records(records, s.max_event_bytes))):
        c0 = time.process_time()
        fn()
        cpu[name] = rate(n, time.process_time() - c0)
    print(f"validation alone, in memory: contract (pydantic) {cpu['contract']:,.0f} ev/s, batch columns "
          f"{cpu['columns']:,.0f} ev/s (x{cpu['columns'] / cpu['contract']:.1f})")
    print(f"kafka:// ingest, {n:,} events over 4 partitions, median of {repeat} interleaved runs, timed from the "
          "first fetched batch; per wall second and per CPU second of this process (ratio = per CPU second / "
          "the floor's):")
    for name, value in rows:
        print(f"  {name:<72} {value.wall:>9,.0f} ev/s wall {value.cpu:>9,.0f} ev/s CPU  ratio "
              f"{value.cpu / floor.cpu:.2f}")
    sizes = [500, 2000, 10_000, 50_000]
    sweep = []
    for size in sizes:
        sized = s.model_copy(update={"max_poll_records": size})
        sweep.append((size, bare_poll(bootstrap, "ingest", n, sized), kafka_consume(s.url, sized, n, "fast"),
                      kafka_consume(s.url, sized.model_copy(update={"kafka_client": "confluent-kafka"}), n, "fast")))
    print("kafka:// ingest vs records per poll (one run each; events per CPU second, ratio to the bare poll):")
    for size, bare, ingest, cingest in sweep:
        print(f"  {size:>6} per poll: bare poll {bare.cpu:>9,.0f}, ingest kafka-python {ingest.cpu:>9,.0f} "
              f"({ingest.cpu / bare.cpu:.2f}), confluent-kafka {cingest.cpu:>9,.0f} ({cingest.cpu / bare.cpu:.2f}); "
              f"wall {bare.wall:,.0f} / {ingest.wall:,.0f} / {cingest.wall:,.0f}")
    if plot is not None:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        fig, ax = plt.subplots(figsize=(6, 3.6))
        ax.plot(sizes, [b.cpu for _, b, _, _ in sweep], "o--", label="bare kafka-python poll (floor)")
        ax.plot(sizes, [i.cpu for _, _, i, _ in sweep], "o-", label="ingest, kafka-python (default)")
        ax.plot(sizes, [c.cpu for _, _, _, c in sweep], "s-", label="ingest, confluent-kafka (optional)")
        ax.axhline(50_000, color="grey", lw=0.8, ls=":", label="goal: 50,000 events/s")
        ax.axhline(rows[-1][1].cpu, color="red", lw=0.8, ls="-.", label="main's consumer (2,000 per poll)")
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xlabel("records per poll (stream.max_poll_records)")
        ax.set_ylabel("events per CPU second, one process")
        ax.set_title(f"kafka:// ingest (poll + decode + validate), {n:,} events, 4 partitions", fontsize=9)
        ax.legend(fontsize=7)
        fig.tight_layout()
        fig.savefig(plot, dpi=110)
        print(f"plot written to {plot}")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=100_000)
    ap.add_argument("--skip-kafka", action="store_true")
    ap.add_argument("--skip-file", action="store_true")
    ap.add_argument("--repeat", type=int, default=3, help="kafka:// ingest figures: median of this many runs")
    ap.add_argument("--plot", type=Path, default=None, help="write the ingest vs batch size plot here")
    args = ap.parse_args()
    evs = events(args.n)
    payloads = [(e.to_json(), e.domain.encode()) for e in evs]
    print(
        f"{args.n} events of ~{sum(len(v) for v, _ in payloads) // args.n} bytes, {len(DOMAINS)} domains, "
        f"{os.cpu_count()} cores"
    )
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        url = f"file://{root}/clicks"
        for fsync in () if args.skip_file else (True, False):
            s = StreamSettings(url=url + str(fsync), partitions=4, fsync=fsync, create_topics=True)
            layer = bench_layer(s.url, s, evs)
            report(
                f"file:// fsync={fsync!s:5}", layer, bench_consume_only(s.url, s, args.n), file_floor(root, payloads)
            )
        if args.skip_kafka:
            return 0
        broker = KafkaBroker(port=free_port(), controller_port=free_port(), workdir=root / "kafka")
        broker.workdir.mkdir()
        broker.start()
        print(f"kafka broker: first start (format + boot + answering) {broker.start_seconds:.1f} s")
        try:
            t0 = time.perf_counter()
            broker.stop()
            stop_s = time.perf_counter() - t0
            broker.start()
            print(f"kafka broker: clean stop {stop_s:.1f} s, restart {broker.start_seconds:.1f} s")
            s = StreamSettings(url=f"kafka://{broker.bootstrap}/clicks", partitions=4, create_topics=True)
            layer = bench_layer(s.url, s, evs)
            consume_only = bench_consume_only(s.url, s, args.n)
            floor_s = s.model_copy(update={"url": f"kafka://{broker.bootstrap}/floor"})
            open_stream(floor_s.url, floor_s).close()  # same shape: 4 partitions
            report("kafka://             ", layer, consume_only, kafka_floor(broker.bootstrap, "floor", payloads, s))
            bench_kafka_ingest(broker.bootstrap, args.n, args.repeat, args.plot)
        finally:
            broker.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
