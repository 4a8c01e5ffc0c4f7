"""file:// stream: append, poll, commit, seek, resume after reopen, concurrent appenders, torn tails, DLQ."""

from __future__ import annotations

import json
import multiprocessing
import os
import subprocess
import sys
from pathlib import Path

import pytest

from contracts.errors import ConfigError, Conflict
from contracts.events import ClickEvent, DeadLetter
from contracts.settings import StreamSettings
from stream import check_records, drain, offsets_after, open_stream


def _event(i: int, domain: str = "comedy") -> ClickEvent:
    return ClickEvent(
        event_id=f"e{i}",
        ts=1_700_000_000 + i,
        domain=domain,
        user_id=f"u{i % 7}",
        item_id=f"i{i % 11}",
        clicked=i % 2,
    )


def _settings(url: str, partitions: int = 3, **kw: object) -> StreamSettings:
    return StreamSettings(url=url, partitions=partitions, fsync=False, **{"create_topics": True, **kw})


@pytest.fixture()
def url(tmp_path: Path) -> str:
    return f"file://{tmp_path}/stream/clicks"


def test_produce_then_consume_in_order_with_domains_kept_in_one_partition(url: str) -> None:
    domains = ["comedy", "drama", "horror", "kids"]
    with open_stream(url, _settings(url)) as stream:
        with stream.producer() as producer:
            for i in range(200):
                producer.send(_event(i, domains[i % 4]))
        with stream.consumer("g1") as consumer:
            records = drain(consumer, 200, timeout_s=5)
            assert consumer.poll(timeout_s=0.05) == []
    assert len(records) == 200
    events = [ClickEvent.model_validate_json(r.value) for r in records]
    assert sorted(int(e.event_id[1:]) for e in events) == list(range(200))
    partition_of: dict[str, set[int]] = {}
    for r, e in zip(records, events, strict=True):
        partition_of.setdefault(e.domain, set()).add(r.partition)
        assert r.key == e.domain.encode()
    assert all(len(p) == 1 for p in partition_of.values()), partition_of
    for p in {r.partition for r in records}:  # offsets are dense and ordered per partition
        offsets = [r.offset for r in records if r.partition == p]
        assert offsets == list(range(len(offsets)))
        ids = [int(ClickEvent.model_validate_json(r.value).event_id[1:]) for r in records if r.partition == p]
        assert ids == sorted(ids)


def test_commit_and_resume_after_reopen_exactly_after_committed_offsets(url: str) -> None:
    with open_stream(url, _settings(url)) as stream, stream.producer() as producer:
        for i in range(90):
            producer.send(_event(i), key=f"k{i % 5}")
    with open_stream(url, _settings(url)) as stream, stream.consumer("trainer") as consumer:
        first = drain(consumer, 40, timeout_s=5)
        assert len(first) == 40
        consumer.commit(offsets_after(first))
        assert consumer.committed() == offsets_after(first)
    with open_stream(url, _settings(url)) as stream, stream.consumer("trainer") as consumer:
        rest = drain(consumer, 50, timeout_s=5)
        assert consumer.poll(timeout_s=0.05) == []
        assert consumer.lag() == 0
    seen = [(r.partition, r.offset) for r in first + rest]
    assert len(rest) == 50
    assert len(set(seen)) == 90  # nothing lost, nothing twice


def test_a_new_group_starts_at_earliest_or_latest_and_groups_are_independent(url: str) -> None:
    with open_stream(url, _settings(url)) as stream:
        with stream.producer() as producer:
            for i in range(10):
                producer.send(_event(i))
        with stream.consumer("a") as a:
            assert len(drain(a, 10, timeout_s=2)) == 10
            a.commit()
        with stream.consumer("b", reset="latest") as b:
            assert b.poll(timeout_s=0.05) == []
            assert b.lag() == 0
            with stream.producer() as producer:
                producer.send(_event(99))
            assert [ClickEvent.model_validate_json(r.value).event_id for r in drain(b, 1, 2)] == ["e99"]
        with stream.consumer("a") as a:
            assert [ClickEvent.model_validate_json(r.value).event_id for r in drain(a, 1, 2)] == ["e99"]


def test_seek_rereads_from_the_given_offsets_and_rejects_bad_ones(url: str) -> None:
    with open_stream(url, _settings(url, partitions=1)) as stream:
        with stream.producer() as producer:
            for i in range(20):
                producer.send(_event(i))
        with stream.consumer("g") as consumer:
            assert len(drain(consumer, 20, 2)) == 20
            consumer.seek({"clicks:0": 15})
            assert [r.offset for r in drain(consumer, 5, 2)] == [15, 16, 17, 18, 19]
            with pytest.raises(ConfigError, match="outside"):
                consumer.seek({"clicks:0": 21})
            with pytest.raises(ConfigError, match="not a partition"):
                consumer.commit({"other:0": 1})
            with pytest.raises(ConfigError, match="topic:partition"):
                consumer.seek({"clicks": 1})


def test_one_consumer_per_group_on_a_file_stream(url: str) -> None:
    with open_stream(url, _settings(url)) as stream, stream.consumer("solo"):
        with pytest.raises(Conflict, match="one consumer per group"):
            stream.consumer("solo")
        stream.consumer("other").close()
        with pytest.raises(ConfigError, match="must match"):
            stream.consumer("bad group/../x")


def test_a_consumer_without_group_reads_everything_and_cannot_commit(url: str) -> None:
    with open_stream(url, _settings(url)) as stream:
        with stream.producer() as producer:
            producer.send(b"raw-1", key="a")
            producer.send(b"raw-2", key="a")
        with stream.consumer(None) as consumer:
            assert [r.value for r in drain(consumer, 2, 2)] == [b"raw-1", b"raw-2"]
            with pytest.raises(ConfigError, match="without a group"):
                consumer.commit()


def test_payload_bytes_survive_exactly_even_when_not_utf8(url: str) -> None:
    payloads = [b"\xff\xfe not utf-8 \x00", '{"é": "ünïcode"}'.encode(), b'line\nbreak "quoted"']
    with open_stream(url, _settings(url, partitions=1)) as stream:
        with stream.producer() as producer:
            for p in payloads:
                producer.send(p)
        with stream.consumer(None) as consumer:
            assert [r.value for r in drain(consumer, 3, 2)] == payloads


def _append_worker(url: str, worker: int, n: int) -> None:
    settings = StreamSettings(url=url, partitions=2, fsync=False, batch_bytes=4096, create_topics=True)
    with open_stream(url, settings) as stream, stream.producer() as producer:
        for i in range(n):
            producer.send(_event(worker * 100_000 + i, domain=f"d{i % 3}"))


def test_two_processes_append_safely(url: str) -> None:
    open_stream(url, _settings(url, partitions=2)).close()
    ctx = multiprocessing.get_context("fork")
    procs = [ctx.Process(target=_append_worker, args=(url, w, 3000)) for w in (1, 2)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(timeout=60)
        assert p.exitcode == 0
    with open_stream(url, _settings(url)) as stream, stream.consumer(None) as consumer:
        assert sum(consumer.end_offsets().values()) == 6000
        records = drain(consumer, 6000, timeout_s=10)
    ids = [ClickEvent.model_validate_json(r.value).event_id for r in records]
    assert len(ids) == 6000 and len(set(ids)) == 6000
    for w in (1, 2):  # one producer's events of one domain keep their order
        for d in ("d0", "d1", "d2"):
            seq = [
                int(ClickEvent.model_validate_json(r.value).event_id[1:])
                for r in records
                if r.key == d.encode()
                and ClickEvent.model_validate_json(r.value).event_id.startswith(f"e{w}")
            ]
            assert seq == sorted(seq) and len(seq) == 1000


def test_a_torn_tail_from_a_crash_is_invisible_and_cut_by_the_next_append(url: str) -> None:
    with open_stream(url, _settings(url, partitions=1)) as stream:
        with stream.producer() as producer:
            producer.send(b"one")
        log = Path(url.removeprefix("file://")) / "p-0000.log"
        with open(log, "ab") as f:  # a crash after writing half a line, before its index entry
            f.write(b'{"ts": 1.0, "key": null, "val')
        with stream.consumer(None) as consumer:
            assert [r.value for r in drain(consumer, 5, 0.3)] == [b"one"]
        with stream.producer() as producer:
            producer.send(b"two")
        with stream.consumer(None) as consumer:
            assert [r.value for r in drain(consumer, 5, 0.3)] == [b"one", b"two"]
    assert all(json.loads(line) for line in log.read_text().splitlines())


POISON = [
    (b"{not json", "Invalid JSON"),
    (b'{"event_id": "e1", "ts": 1, "domain": "comedy", "user_id": "u"}', "item_id: Field required"),
    (
        b'{"event_id": "e1", "ts": "soon", "domain": "comedy", "user_id": "u", "item_id": "i", "clicked": 1}',
        "ts:",
    ),
    (
        b'{"event_id": "e1", "ts": 1, "domain": "comedy", "user_id": "u", "item_id": "i", "clicked": 7}',
        "clicked:",
    ),
    (
        b'{"event_id": "e1", "ts": 1, "domain": "Bad Domain!", "user_id": "u", "item_id": "i", "clicked": 1}',
        "domain:",
    ),
    (b"[1, 2, 3]", "<root>"),
    (b'"just a string"', "<root>"),
    (
        b'{"event_id": "e1", "ts": 1, "domain": "c", "user_id": "u", "item_id": "i", "clicked": 1, "x": 1}',
        "x: Extra inputs",
    ),
    (b"\xff\xfe", "<root>"),
    (b'{"event_id": "' + b"x" * 20_000 + b'"}', "exceeds the limit of 16384"),
]


def test_poison_events_land_in_the_dlq_with_reasons_and_source_offsets(url: str) -> None:
    with open_stream(url, _settings(url, partitions=1)) as stream:
        with stream.producer() as producer:
            producer.send(_event(0))
            for payload, _ in POISON:
                producer.send(payload)
            producer.send(_event(1))
        with stream.consumer("trainer") as consumer:
            checked = check_records(
                drain(consumer, len(POISON) + 2, 5), max_bytes=stream.settings.max_event_bytes
            )
            assert [e.event_id for _, e in checked.valid] == ["e0", "e1"]
            for record, reason in checked.invalid:
                stream.dead_letter(record, reason)
            consumer.commit()  # flushes the dead letters first
        assert stream.dead_letters_sent == len(POISON)
        with stream.dead_letter_stream().consumer(None) as dlq:
            letters = [DeadLetter.model_validate_json(r.value) for r in drain(dlq, len(POISON), 5)]
    assert [d.source_offset for d in letters] == list(range(1, len(POISON) + 1))
    for letter, (payload, expected) in zip(letters, POISON, strict=True):
        assert expected in letter.reason, (letter.reason, expected)
        assert "\n" not in letter.reason
        assert letter.source_topic == "clicks" and letter.source_partition == 0
        assert len(letter.payload) <= 16_384
        if len(payload) < 100:
            assert letter.payload == payload.decode(errors="replace")
    assert Path(url.removeprefix("file://") + ".dlq", "p-0000.log").exists()


def test_urls_are_checked() -> None:
    with pytest.raises(ConfigError, match="not supported"):
        open_stream("s3://bucket/clicks")
    with pytest.raises(ConfigError, match="TOPIC"):
        open_stream("kafka://127.0.0.1:9/")
    with pytest.raises(ConfigError, match="no scheme"):
        open_stream("/tmp/clicks")


def test_the_stream_layer_never_imports_torch() -> None:
    code = (
        "import sys, stream, mamdr.commands.stream, stream.file_stream,"
        " stream.kafka_stream;"
        "sys.exit(1 if 'torch' in sys.modules else 0)"
    )
    assert subprocess.run([sys.executable, "-c", code], env={**os.environ}, timeout=60).returncode == 0


def test_kafka_urls_take_several_brokers_and_bad_ones_are_one_line_errors() -> None:
    from stream.kafka_stream import parse_bootstrap

    assert parse_bootstrap("kafka://a:9092,b:9093/clicks") == (["a:9092", "b:9093"], "clicks")
    assert parse_bootstrap("kafka://a/clicks") == (["a:9092"], "clicks")
    for bad in ("kafka://a:port/clicks", "kafka://a:70000/clicks", "kafka://a:9092,/clicks", "kafka://a:9092/"):
        with pytest.raises(ConfigError, match=r"kafka://|HOST:PORT"):
            parse_bootstrap(bad)


def test_sasl_settings_must_be_complete() -> None:
    from pydantic import ValidationError

    with pytest.raises(ValidationError, match="go together"):
        StreamSettings(sasl_mechanism="SCRAM-SHA-256")
    with pytest.raises(ValidationError, match="sasl_username"):
        StreamSettings(security_protocol="SASL_SSL", sasl_mechanism="PLAIN")
    ok = StreamSettings(security_protocol="SASL_SSL", sasl_mechanism="PLAIN", sasl_username="u",
                        sasl_password="hunter2-secret")
    assert "hunter2" not in repr(ok) and "hunter2" not in ok.model_dump_json()


def test_a_read_never_creates_a_file_stream(tmp_path: Path) -> None:
    url = f"file://{tmp_path}/clicks"
    with pytest.raises(ConfigError, match="mamdr stream create"):
        open_stream(url, StreamSettings(url=url)).consumer(None)
    assert not (tmp_path / "clicks").exists()


def test_the_order_after_an_idle_spell_does_not_depend_on_how_long_it_lasted(url: str, tmp_path: Path) -> None:
    """Records sent without a key go round-robin over the partitions and a poll reads them in rotation.
    Empty polls (an idle spell, as many as the machine's speed allows) must not move the rotation: the
    quickstart streams, idles, then streams a new domain, and its rounds must not depend on the load."""
    orders = []
    for idle_polls in (1, 4):
        where = f"file://{tmp_path}/idle{idle_polls}/clicks"
        with open_stream(where, _settings(where, partitions=4)) as stream:
            with stream.producer() as producer:
                for i in range(40):
                    producer.send(f"a{i}".encode())
            with stream.consumer("g") as consumer:
                first = [r.value for r in consumer.poll(max_records=7, timeout_s=1)]
                first += [r.value for r in drain(consumer, 33, timeout_s=5)]
                for _ in range(idle_polls):
                    assert consumer.poll(timeout_s=0) == []
                with stream.producer() as producer:
                    for i in range(40):
                        producer.send(f"b{i}".encode())
                after = [r.value for r in consumer.poll(max_records=10, timeout_s=1)]
        orders.append((first, after))
    assert orders[0] == orders[1]
