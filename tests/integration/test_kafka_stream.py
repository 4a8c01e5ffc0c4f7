"""kafka:// stream against a real broker: groups, commits, resume, seek, DLQ, the produce CLI, an outage."""

from __future__ import annotations

import contextlib
import io
import json
import subprocess
import sys
import time

import pytest

from contracts.errors import BackendUnavailable, ConfigError
from contracts.events import ClickEvent, DeadLetter
from contracts.settings import StreamSettings
from mamdr.cli import main
from stream import check_records, drain, offsets_after, open_stream
from tests.fixtures.kafka_broker import KafkaBroker, KafkaTopic


def run_mamdr(*args: str, stdin: str = "") -> subprocess.CompletedProcess[str]:
    """The real ``mamdr`` entry point, in this process (a subprocess costs seconds on a busy machine)."""
    out, err = io.StringIO(), io.StringIO()
    saved = sys.stdin
    sys.stdin = io.TextIOWrapper(io.BytesIO(stdin.encode()))
    try:
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            code = main(list(args))
    finally:
        sys.stdin = saved
    return subprocess.CompletedProcess(list(args), code, out.getvalue(), err.getvalue())


DOMAINS = ["comedy", "drama", "horror", "kids", "noir"]


def _event(i: int) -> ClickEvent:
    return ClickEvent(
        event_id=f"e{i}",
        ts=1_700_000_000 + i,
        domain=DOMAINS[i % len(DOMAINS)],
        user_id=f"u{i % 13}",
        item_id=f"i{i % 17}",
        clicked=i % 2,
    )


CLIENTS = ["kafka-python", "confluent-kafka"]  # the consumer contract holds for both clients


def _settings(topic: KafkaTopic, **kw: object) -> StreamSettings:
    options: dict = {"timeout_s": 10.0, "create_topics": True, **kw}
    return StreamSettings(url=topic.url, partitions=topic.partitions, **options)


def _ids(records: list) -> list[int]:
    return [int(ClickEvent.model_validate_json(r.value).event_id[1:]) for r in records]


@pytest.mark.parametrize("client", CLIENTS)
def test_consume_in_a_group_commit_and_a_new_consumer_resumes_exactly_after(kafka_topic: KafkaTopic,
                                                                           client: str) -> None:
    n = 600
    with open_stream(kafka_topic.url, _settings(kafka_topic, kafka_client=client)) as stream:
        with stream.producer() as producer:
            for i in range(n):
                producer.send(_event(i))
        with stream.consumer(kafka_topic.group) as consumer:
            assert sum(consumer.end_offsets().values()) == n
            first = drain(consumer, 250, timeout_s=20)
            assert len(first) == 250
            consumer.commit(offsets_after(first))
            assert consumer.committed() == offsets_after(first)
        with stream.consumer(kafka_topic.group) as again:
            rest = drain(again, n - len(first), timeout_s=20)
            assert again.poll(timeout_s=0.3) == []
            assert again.lag() == 0
    seen = [(r.partition, r.offset) for r in first + rest]
    assert len(seen) == n and len(set(seen)) == n  # nothing lost, nothing twice
    assert sorted(_ids(first + rest)) == list(range(n))
    by_domain: dict[str, set[int]] = {}
    for r in first + rest:  # key = domain: a domain stays in one partition, in order
        by_domain.setdefault(ClickEvent.model_validate_json(r.value).domain, set()).add(r.partition)
    assert all(len(p) == 1 for p in by_domain.values())
    for p in range(kafka_topic.partitions):
        ids = _ids([r for r in sorted(first + rest, key=lambda r: r.offset) if r.partition == p])
        assert ids == sorted(ids)


@pytest.mark.parametrize("client", CLIENTS)
def test_seek_before_assignment_is_applied_when_the_group_assigns(kafka_topic: KafkaTopic, client: str) -> None:
    with open_stream(kafka_topic.url, _settings(kafka_topic, kafka_client=client)) as stream:
        with stream.producer() as producer:
            for i in range(50):
                producer.send(_event(i), key="one-key")  # all in one partition
        with stream.consumer(None) as reader:
            part = drain(reader, 50, 20)[0].partition
        tp = f"{kafka_topic.name}:{part}"
        with stream.consumer(kafka_topic.group) as consumer:
            consumer.seek({tp: 45})  # e.g. offsets from the live manifest, before any poll
            got = drain(consumer, 5, 20)
            assert [r.offset for r in got] == [45, 46, 47, 48, 49]
            assert consumer.position()[tp] == 50
            with pytest.raises(ConfigError, match="not a partition"):
                consumer.seek({"elsewhere:0": 1})


@pytest.mark.parametrize("client", CLIENTS)
def test_a_rebalance_does_not_rewind_a_partition_the_member_keeps(kafka_topic_factory, client: str) -> None:
    """Commits lag behind on purpose (they wait for a publish): a rebalance must not replay buffered events."""
    topic = kafka_topic_factory(2)
    with open_stream(topic.url, _settings(topic, kafka_client=client)) as stream:
        with stream.producer() as producer:
            for i in range(60):
                producer.send(_event(i), key=f"user-{i}")
        with stream.consumer(topic.group) as a:
            read_by_a = drain(a, 60, 20)
            assert len(read_by_a) == 60 and {r.partition for r in read_by_a} == {0, 1}
            with stream.consumer(topic.group) as b:  # joins: the group moves one partition to b
                again_by_a, read_by_b = [], []
                deadline = time.monotonic() + 30
                while time.monotonic() < deadline and not (read_by_b and len(a.position()) == 1):
                    again_by_a += a.poll(timeout_s=0.2)
                    read_by_b += b.poll(timeout_s=0.2)
                assert len(a.position()) == 1, "no rebalance happened"
                (kept,) = a.position()
                again_by_a += a.poll(timeout_s=0.5)
                assert again_by_a == []  # a kept its place on the partition it still owns
                assert a.position()[kept] == sum(1 for r in read_by_a if r.tp == kept)
                assert {r.tp for r in read_by_b} == {f"{topic.name}:0", f"{topic.name}:1"} - {kept}


POISON = [
    (b"{not json", "Invalid JSON"),
    (b'{"event_id": "e1", "ts": 1, "domain": "comedy", "user_id": "u"}', "item_id: Field required"),
    (
        b'{"event_id": "e1", "ts": "soon", "domain": "comedy", "user_id": "u", "item_id": "i", "clicked": 1}',
        "ts:",
    ),
    (
        b'{"event_id": 5, "ts": 1, "domain": "comedy", "user_id": "u", "item_id": "i", "clicked": "yes"}',
        "event_id:",
    ),
    (b'{"shape": ["unknown"]}', "Field required"),
    (b"[1, 2]", "<root>"),
    (b'{"event_id": "' + b"x" * 40_000 + b'"}', "exceeds the limit of 16384"),
]


@pytest.mark.parametrize("client", CLIENTS)
def test_poison_events_land_in_the_dlq_with_reasons_and_source_offsets(kafka_topic: KafkaTopic, client: str) -> None:
    settings = _settings(kafka_topic, kafka_client=client)
    with open_stream(kafka_topic.url, settings) as stream:
        with stream.producer() as producer:
            for i, (payload, _) in enumerate(POISON):
                producer.send(_event(i))
                producer.send(payload, key="poison")
        with stream.consumer(kafka_topic.group) as consumer:
            records = drain(consumer, 2 * len(POISON), 20)
            checked = check_records(records, max_bytes=settings.max_event_bytes)
            assert sorted(e.event_id for _, e in checked.valid) == [f"e{i}" for i in range(len(POISON))]
            sources = {}
            for record, reason in checked.invalid:
                letter = stream.dead_letter(record, reason)
                sources[record.value[:50]] = (record.partition, record.offset)
                assert letter.source_offset == record.offset
            consumer.commit()  # dead letters are flushed before the offsets are committed
        with stream.dead_letter_stream().consumer(None) as dlq:
            letters = [DeadLetter.model_validate_json(r.value) for r in drain(dlq, len(POISON), 20)]
    assert len(letters) == len(POISON)
    by_payload = {letter.payload.encode()[:50]: letter for letter in letters}
    for payload, expected in POISON:
        letter = by_payload[payload[:50]]
        assert expected in letter.reason, (letter.reason, expected)
        assert letter.source_topic == kafka_topic.name
        assert (letter.source_partition, letter.source_offset) == sources[payload[:50]]


def test_stream_produce_cli_end_to_end(kafka_topic: KafkaTopic) -> None:
    lines = [_event(i).to_json().decode() for i in range(30)]
    lines.insert(10, "this is not json")
    lines.insert(20, json.dumps({"event_id": "e", "ts": 1, "domain": "comedy"}))
    proc = run_mamdr(
        "stream",
        "produce",
        "--stream",
        kafka_topic.url,
        "--partitions",
        str(kafka_topic.partitions),
        stdin="\n".join(lines) + "\n",
    )
    assert proc.returncode == 1, proc.stderr  # some lines were rejected
    assert "sent 30 events" in proc.stdout
    assert "line 11:" in proc.stderr and "line 21:" in proc.stderr
    with open_stream(kafka_topic.url, _settings(kafka_topic)) as stream:
        with stream.consumer(kafka_topic.group) as consumer:
            assert sorted(_ids(drain(consumer, 30, 20))) == list(range(30))
        with stream.dead_letter_stream().consumer(None) as dlq:
            letters = [DeadLetter.model_validate_json(r.value) for r in drain(dlq, 2, 20)]
    assert sorted(d.source_offset for d in letters) == [11, 21]
    assert all(d.reason.startswith(f"line {d.source_offset}:") for d in letters)
    tail = run_mamdr("stream", "tail", "--stream", kafka_topic.url, "--limit", "5")
    assert tail.returncode == 0, tail.stderr
    assert len(tail.stdout.splitlines()) == 5


def test_a_missing_broker_is_a_clear_error_not_a_hang() -> None:
    settings = StreamSettings(url="kafka://127.0.0.1:9/clicks", timeout_s=1.0, create_topics=True)
    with pytest.raises(BackendUnavailable, match=r"not reachable.*run-broker"):
        open_stream(settings.url, settings)


def test_committed_offsets_survive_a_broker_restart(kafka_broker: KafkaBroker, kafka_topic: KafkaTopic) -> None:
    """Last: stops the session broker (an outage) and starts it again on the same data."""
    with open_stream(kafka_topic.url, _settings(kafka_topic)) as stream:
        with stream.producer() as producer:
            for i in range(40):
                producer.send(_event(i))
        with stream.consumer(kafka_topic.group) as consumer:
            first = drain(consumer, 40, 20)
            consumer.commit(offsets_after(first[:25]))
            committed = consumer.committed()
    kafka_broker.stop()
    try:  # during the outage a producer fails with a clear, retryable error instead of hanging
        down = _settings(kafka_topic, timeout_s=2.0, create_topics=False)
        with pytest.raises(BackendUnavailable, match="not reachable"), open_stream(down.url, down) as stream:
            stream.producer().send(_event(99))
    finally:
        kafka_broker.start_again()
    with (
        open_stream(kafka_topic.url, _settings(kafka_topic)) as stream,
        stream.consumer(kafka_topic.group) as c,
    ):
        assert c.committed() == committed
        rest = drain(c, 15, 30)
    assert sorted(_ids(first[:25] + rest)) == list(range(40))
