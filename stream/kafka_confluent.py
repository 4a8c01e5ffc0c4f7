"""The optional kafka:// consumer over confluent-kafka (librdkafka), chosen by ``stream.kafka_client``.

Why: kafka-python decodes every record in Python (~16 µs of CPU per record here), which alone keeps a
trainer process near 60,000 events/s before any validation; librdkafka decodes in C (bench/bench_stream.py
measures both). kafka-python stays the default and the producer: this module only replaces the consumer,
with the same contract as ``KafkaStreamConsumer`` (no auto-commit, read_committed, seeks asked for before
the group assigns are applied on assignment, a kept partition keeps its position through a rebalance:
cooperative-sticky assignment, so a member is never made to re-read events it buffered but not committed).
"""

from __future__ import annotations

import time
import uuid
from typing import Any

from contracts.errors import BackendUnavailable, ConfigError
from contracts.settings import StreamSettings
from stream.base import Record, StreamConsumer, check_reset, check_shard, in_shard, partition_offsets, tp_key

try:
    from confluent_kafka import OFFSET_BEGINNING, OFFSET_END, Consumer, KafkaError, KafkaException, TopicPartition
except ImportError:  # optional: the setting names the package to install
    Consumer = None  # type: ignore[assignment,misc]


def _options(settings: StreamSettings) -> dict[str, Any]:
    out: dict[str, Any] = {"security.protocol": settings.security_protocol,
                           "reconnect.backoff.max.ms": 1000, "socket.timeout.ms": int(settings.timeout_s * 1000)}
    if settings.sasl_mechanism is not None:
        out.update({"sasl.mechanism": settings.sasl_mechanism, "sasl.username": settings.sasl_username,
                    "sasl.password": settings.sasl_password.get_secret_value() if settings.sasl_password else ""})
    for name, key in (("ssl_cafile", "ssl.ca.location"), ("ssl_certfile", "ssl.certificate.location"),
                      ("ssl_keyfile", "ssl.key.location")):
        if getattr(settings, name):
            out[key] = getattr(settings, name)
    return out


class ConfluentStreamConsumer(StreamConsumer):
    """A group member (or, with ``group=None`` / a ``shard``, an assigned reader) over librdkafka."""

    def __init__(self, bootstrap: list[str], topic: str, group: str | None, reset: str, settings: StreamSettings,
                 before_commit: Any, shard: tuple[int, int] | None = None) -> None:
        if Consumer is None:
            raise ConfigError("stream.kafka_client=confluent-kafka needs the confluent-kafka package "
                              "(pip install 'mamdr-platform[kafka-fast]'), or use the default kafka-python")
        self.group = group
        self._topic = topic
        self._bootstrap = ",".join(bootstrap)
        self._settings = settings
        self._before_commit = before_commit
        self._reset = check_reset(reset)
        self._timeout = settings.timeout_s
        self._pos: dict[int, int] = {}  # next offset per partition, once known
        self._pending: dict[int, int] = {}  # seeks waiting for the group to assign the partition
        self._assigned: set[int] = set()
        config = {
            "bootstrap.servers": self._bootstrap,
            # an assigned reader without a group still needs an id; it never joins nor commits with it
            "group.id": group or f"mamdr-reader-{uuid.uuid4().hex[:12]}",
            "client.id": "mamdr-consumer",
            "enable.auto.commit": False,
            "enable.auto.offset.store": False,
            "auto.offset.reset": reset,
            "isolation.level": "read_committed",
            "enable.partition.eof": False,
            "partition.assignment.strategy": "cooperative-sticky",
            "session.timeout.ms": 10_000,
            "heartbeat.interval.ms": 3_000,
            "max.poll.interval.ms": 600_000,  # a training round happens between polls
            "max.partition.fetch.bytes": max(settings.fetch_bytes, settings.max_event_bytes * 4),
            "fetch.max.bytes": max(4 * settings.fetch_bytes, 52_428_800),
            **_options(settings),
        }
        try:
            self._c = Consumer(config)
        except KafkaException as exc:
            raise self._unreachable(exc) from None
        self._fixed = shard is not None or group is None
        if self._fixed:
            mine = [p for p in self._partitions() if in_shard(p, check_shard(shard))]
            self._assign_fixed(mine, {})
        else:
            self._c.subscribe([topic], on_assign=self._on_assign, on_revoke=self._on_revoke)

    def _unreachable(self, exc: Exception) -> BackendUnavailable:
        return BackendUnavailable(f"Kafka at {self._bootstrap} is not reachable ({type(exc).__name__}: {exc}); start "
                                  "the broker, fix --stream, or check stream.security_protocol / stream.sasl_*")

    def _partitions(self) -> list[int]:
        deadline = time.monotonic() + self._timeout
        while True:
            try:
                meta = self._c.list_topics(self._topic, timeout=self._timeout)
            except KafkaException as exc:
                raise self._unreachable(exc) from None
            found = meta.topics.get(self._topic)
            if found is not None and found.error is None and found.partitions:
                return sorted(found.partitions)
            if time.monotonic() >= deadline:
                raise ConfigError(f"topic {self._topic!r} does not exist on {self._bootstrap}: create it with "
                                  "`mamdr stream create --stream URL` (or produce to it with stream.create_topics on)")
            time.sleep(0.1)

    def _start_of(self, partition: int, explicit: dict[int, int]) -> int:
        if partition in explicit:
            return explicit[partition]
        if self.group is not None:
            return -1000  # OFFSET_STORED: the group's committed offset, else auto.offset.reset
        return OFFSET_END if self._reset == "latest" else OFFSET_BEGINNING

    def _assign_fixed(self, partitions: list[int], explicit: dict[int, int]) -> None:
        self._assigned = set(partitions)
        self._c.assign([TopicPartition(self._topic, p, self._start_of(p, explicit)) for p in partitions])
        for p, o in explicit.items():
            self._pos[p] = o

    def _on_assign(self, consumer: Any, partitions: list[Any]) -> None:
        for tp in partitions:
            if tp.partition in self._pending:
                tp.offset = self._pending.pop(tp.partition)
                self._pos[tp.partition] = tp.offset
            self._assigned.add(tp.partition)
        consumer.incremental_assign(partitions)

    def _on_revoke(self, consumer: Any, partitions: list[Any]) -> None:
        for tp in partitions:
            self._assigned.discard(tp.partition)
            self._pos.pop(tp.partition, None)
        consumer.incremental_unassign(partitions)

    def poll(self, max_records: int | None = None, timeout_s: float = 1.0) -> list[Record]:
        try:
            messages = self._c.consume(num_messages=max_records or self._settings.max_poll_records, timeout=timeout_s)
        except KafkaException as exc:
            raise self._unreachable(exc) from None
        out: list[Record] = []
        add = out.append
        topic = self._topic
        pos = self._pos
        for m in messages:
            err = m.error()
            if err is not None:
                if err.code() == KafkaError._PARTITION_EOF:
                    continue
                raise self._unreachable(KafkaException(err))
            partition, offset = m.partition(), m.offset()
            add(Record(topic, partition, offset, m.value() or b"", m.timestamp()[1] / 1000.0, m.key()))
            pos[partition] = offset + 1
        return out

    def position(self) -> dict[str, int]:
        unknown = [p for p in self._assigned if p not in self._pos]
        if unknown:  # nothing read yet: where reading starts (committed, else the reset end)
            committed = self._committed(unknown)
            for p in unknown:
                if p in committed:
                    self._pos[p] = committed[p]
                else:
                    low, high = self._c.get_watermark_offsets(TopicPartition(self._topic, p), timeout=self._timeout)
                    self._pos[p] = high if self._reset == "latest" else low
        return {tp_key(self._topic, p): self._pos[p] for p in sorted(self._assigned)}

    def _check(self, offsets: dict[str, int]) -> dict[int, int]:
        return partition_offsets(self._topic, offsets)

    def seek(self, offsets: dict[str, int]) -> None:
        checked = self._check(offsets)
        if self._fixed:  # re-assign the shard with explicit starts (a seek before the first fetch is refused)
            mine = {p: o for p, o in checked.items() if p in self._assigned}
            self._assign_fixed(sorted(self._assigned), {**{p: o for p, o in self._pos.items()
                                                           if p in self._assigned}, **mine})
            return
        for p, o in checked.items():
            if p in self._assigned:
                try:
                    self._c.seek(TopicPartition(self._topic, p, o))
                except KafkaException as exc:
                    raise self._unreachable(exc) from None
                self._pos[p] = o
            else:
                self._pending[p] = o

    def commit(self, offsets: dict[str, int] | None = None) -> None:
        if self.group is None:
            raise ConfigError("a consumer without a group cannot commit offsets")
        checked = self._check(offsets if offsets is not None else self.position())
        self._before_commit()
        try:
            self._c.commit(offsets=[TopicPartition(self._topic, p, o) for p, o in checked.items()],
                           asynchronous=False)
        except KafkaException as exc:
            raise BackendUnavailable(f"committing offsets of group {self.group!r} failed ({exc}); the events will be "
                                     "read again after a restart") from None

    def _committed(self, partitions: list[int]) -> dict[int, int]:
        if self.group is None:
            return {}
        try:
            got = self._c.committed([TopicPartition(self._topic, p) for p in partitions], timeout=self._timeout)
        except KafkaException as exc:
            raise self._unreachable(exc) from None
        return {tp.partition: int(tp.offset) for tp in got if tp.offset >= 0}

    def committed(self) -> dict[str, int]:
        return {tp_key(self._topic, p): o for p, o in self._committed(self._partitions()).items()}

    def end_offsets(self) -> dict[str, int]:
        out = {}
        for p in self._partitions():
            _, high = self._c.get_watermark_offsets(TopicPartition(self._topic, p), timeout=self._timeout)
            out[tp_key(self._topic, p)] = int(high)
        return out

    def close(self) -> None:
        self._c.close()
