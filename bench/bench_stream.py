"""Stream benchmark: broker start time, events/s produced and consumed over kafka:// and file://.

Floors are measured in the same run: for kafka://, raw kafka-python (the same producer settings, prebuilt
bytes; a bare KafkaConsumer poll loop) on the same broker and a topic of the same shape; for file://, a
bare JSON-lines file of the same prebuilt payloads (json.dumps + one write per 2,000 lines; read back with
splitlines + json.loads), without lock, index, partitions or fsync. Ratios = layer / floor. The layer's
produce figure includes serialising each ClickEvent; its consume figure builds Records (and, in the
"with validation" figure, parses every event with the contract).

    ~/.cache/mamdr/venv/bin/python bench/bench_stream.py [--n 50000] [--skip-kafka]

Starts its own broker on free loopback ports (the test fixture's class) and stops it; needs
scripts/kafka/fetch.sh to have run.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
import uuid
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run as a script: reuse tests.fixtures

from contracts.events import ClickEvent
from contracts.settings import StreamSettings
from stream import check_records, open_stream
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
                valid += len(check_records(records, settings.max_event_bytes).valid)
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


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=50_000)
    ap.add_argument("--skip-kafka", action="store_true")
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
        for fsync in (True, False):
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
        finally:
            broker.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
