"""``kafka://HOST:PORT/TOPIC``: the stream over a Kafka cluster, through kafka-python.

- Producer: ``acks=all`` with idempotence (a retried batch is not written twice), linger/batch from the
  settings, key = domain so one domain's events stay ordered in one partition.
- Consumer: a group member (partitions assigned by the group coordinator), ``enable_auto_commit=False``:
  offsets are committed only when the trainer says so (after a version is published).
  ``isolation_level=read_committed`` so a transactional producer's aborted writes are never trained on.
  Seeks asked for before the group assigns partitions are applied on assignment.
- Topics are created (with ``stream.partitions`` and ``stream.replication_factor``, and ``<topic>.dlq``
  with one partition) only when ``stream.create_topics`` is on (off by default; the quickstart and the dev
  stack turn it on) or by ``mamdr stream create``; ``mamdr stream tail`` never creates one.
- ``kafka://HOST1:PORT1,HOST2:PORT2/TOPIC`` lists several bootstrap brokers; ``stream.security_protocol``,
  ``stream.sasl_*`` (PLAIN, SCRAM-SHA-256/512) and ``stream.ssl_*`` are passed to every client.
"""

from __future__ import annotations

import contextlib
import logging
import time
from typing import Any

from kafka import KafkaAdminClient, KafkaConsumer, KafkaProducer, TopicPartition
from kafka.admin import NewTopic
from kafka.consumer.subscription_state import ConsumerRebalanceListener
from kafka.errors import KafkaError, MessageSizeTooLargeError, TopicAlreadyExistsError
from kafka.structs import OffsetAndMetadata

from contracts.errors import BackendUnavailable, ConfigError, DataError
from contracts.events import ClickEvent
from contracts.settings import StreamSettings
from contracts.urls import BackendUrl, parse_url
from stream.base import (
    DLQ_SUFFIX,
    Record,
    Stream,
    StreamConsumer,
    StreamProducer,
    check_reset,
    check_shard,
    event_bytes,
    in_shard,
    partition_offsets,
    tp_key,
)

_kafka_log = logging.getLogger("kafka")
if _kafka_log.level == logging.NOTSET:  # kafka-python logs every connection at INFO; keep warnings and errors
    _kafka_log.setLevel(logging.WARNING)


def _unreachable(bootstrap: str | list[str], exc: Exception) -> BackendUnavailable:
    where = bootstrap if isinstance(bootstrap, str) else ",".join(bootstrap)
    return BackendUnavailable(
        f"Kafka at {where} is not reachable ({type(exc).__name__}: {exc}); start the broker "
        "(scripts/kafka/run-broker.sh PORT DIR), fix --stream, or check stream.security_protocol / "
        "stream.sasl_* (a refused login looks like an unreachable broker to the client)"
    )


def parse_bootstrap(url: str) -> tuple[list[str], str]:
    """``kafka://h1:p1,h2:p2/topic`` → (["h1:p1", "h2:p2"], "topic"); one-line ConfigError otherwise."""
    parse_url(url, ("kafka",), "stream")
    hosts, _, topic = url.split("://", 1)[1].partition("/")
    if not topic or "/" in topic:
        raise ConfigError(f"stream URL {url!r} must name one topic: kafka://HOST:PORT[,HOST:PORT...]/TOPIC")
    servers = []
    for part in hosts.split(","):
        host, _, port = part.strip().partition(":")
        port = port or "9092"
        if not host or not port.isdigit() or not 0 < int(port) < 65536:
            raise ConfigError(f"stream URL {url!r}: {part!r} is not HOST:PORT (port 1-65535)")
        servers.append(f"{host}:{port}")
    return servers, topic


def _connect_options(settings: StreamSettings) -> dict[str, Any]:
    """Every client's connection options: fail fast when the broker is down (kafka-python waits 30 s by
    default), retry at most every second, and the transport/login the operator configured."""
    options: dict[str, Any] = {
        "bootstrap_timeout_ms": int(settings.timeout_s * 1000),
        "reconnect_backoff_max_ms": 1000,
        "security_protocol": settings.security_protocol,
    }
    if settings.sasl_mechanism is not None:
        options["sasl_mechanism"] = settings.sasl_mechanism
        options["sasl_plain_username"] = settings.sasl_username
        options["sasl_plain_password"] = settings.sasl_password.get_secret_value() if settings.sasl_password else None
    for name in ("ssl_cafile", "ssl_certfile", "ssl_keyfile"):
        if getattr(settings, name):
            options[name] = getattr(settings, name)
    return options


class KafkaStreamProducer(StreamProducer):
    def __init__(self, bootstrap: list[str], topic: str, settings: StreamSettings) -> None:
        self._topic = topic
        self._timeout_s = settings.timeout_s
        self._errors: list[BaseException] = []
        try:
            self._producer = KafkaProducer(
                bootstrap_servers=bootstrap,
                acks="all",
                enable_idempotence=True,
                linger_ms=settings.linger_ms,
                batch_size=settings.batch_bytes,
                max_request_size=max(1_048_576, settings.max_event_bytes * 4),
                request_timeout_ms=int(settings.timeout_s * 1000),
                max_block_ms=int(settings.timeout_s * 1000),
                client_id="mamdr-producer",
                **_connect_options(settings),
            )
        except (KafkaError, OSError) as exc:
            raise _unreachable(bootstrap, exc) from None
        self._bootstrap = bootstrap

    def send(self, event: bytes | str | ClickEvent, key: str | None = None) -> None:
        value, default_key = event_bytes(event)
        key = key if key is not None else default_key
        try:
            future = self._producer.send(self._topic, value=value, key=key.encode() if key else None)
        except MessageSizeTooLargeError as exc:
            raise DataError(f"event of {len(value)} bytes refused by the producer: {exc}") from None
        except KafkaError as exc:
            raise _unreachable(self._bootstrap, exc) from None
        future.add_errback(self._errors.append)

    def flush(self, timeout_s: float | None = None) -> None:
        try:
            self._producer.flush(timeout=timeout_s if timeout_s is not None else self._timeout_s)
        except KafkaError as exc:
            raise _unreachable(self._bootstrap, exc) from None
        if self._errors:
            first, n = self._errors[0], len(self._errors)
            self._errors.clear()
            raise BackendUnavailable(f"{n} event(s) were not written to {self._topic!r}: {first}")

    def close(self) -> None:
        try:
            self.flush()
        finally:
            self._producer.close(timeout=self._timeout_s)


class _SeekOnAssign(ConsumerRebalanceListener):
    """Applies seeks that were asked for before the group assigned the partitions.

    A partition this member keeps through a rebalance keeps its position (kafka-python does not rewind it
    to the lagging committed offset; tests/integration/test_kafka_stream.py checks that).
    """

    def __init__(self, owner: KafkaStreamConsumer) -> None:
        self._owner = owner

    def on_partitions_revoked(self, revoked: Any) -> None:
        pass

    def on_partitions_assigned(self, assigned: Any) -> None:
        self._owner._apply_pending(assigned)


class KafkaStreamConsumer(StreamConsumer):
    def __init__(
        self,
        bootstrap: list[str],
        topic: str,
        group: str | None,
        reset: str,
        settings: StreamSettings,
        before_commit: Any,
        shard: tuple[int, int] | None = None,
    ) -> None:
        self.group = group
        self._topic = topic
        self._bootstrap = bootstrap
        self._settings = settings
        self._before_commit = before_commit
        self._pending: dict[int, int] = {}
        self._shard = shard
        try:
            self._consumer = KafkaConsumer(
                bootstrap_servers=bootstrap,
                group_id=group,
                client_id="mamdr-consumer",
                **_connect_options(settings),
                enable_auto_commit=False,
                auto_offset_reset=check_reset(reset),
                isolation_level="read_committed",
                max_poll_records=settings.max_poll_records,
                # large fetches: one round trip carries thousands of records (kafka-python's per-fetch
                # overhead, not the bytes, bounded the rate); crc checks stay on, in C via the crc32c package
                max_partition_fetch_bytes=max(settings.fetch_bytes, settings.max_event_bytes * 4),
                fetch_max_bytes=max(4 * settings.fetch_bytes, 52_428_800),
                request_timeout_ms=max(30_000, int(settings.timeout_s * 1000)),
                session_timeout_ms=10_000,
                max_poll_interval_ms=600_000,  # a training round happens between polls
                heartbeat_interval_ms=3_000,
            )
        except (KafkaError, OSError) as exc:
            raise _unreachable(bootstrap, exc) from None
        if shard is not None:  # assigned, not balanced: with a group, committed offsets still apply
            mine = [TopicPartition(topic, p) for p in self._partitions() if in_shard(p, check_shard(shard))]
            self._consumer.assign(mine)
            if group is None and mine:
                self._consumer.seek_to_end(*mine) if reset == "latest" else self._consumer.seek_to_beginning(*mine)
        elif group is None:
            partitions = self._partitions()
            self._consumer.assign([TopicPartition(topic, p) for p in partitions])
            if reset == "latest":
                self._consumer.seek_to_end()
            else:
                self._consumer.seek_to_beginning()
        else:
            self._consumer.subscribe([topic], listener=_SeekOnAssign(self))

    def _partitions(self) -> list[int]:
        deadline = time.monotonic() + self._settings.timeout_s
        while True:
            parts = self._consumer.partitions_for_topic(self._topic)
            if parts:
                return sorted(parts)
            if time.monotonic() >= deadline:
                raise ConfigError(
                    f"topic {self._topic!r} does not exist on {','.join(self._bootstrap)}: create it with "
                    "`mamdr stream create --stream URL` (or produce to it with stream.create_topics on)"
                )
            time.sleep(0.1)

    def _apply_pending(self, assigned: Any) -> None:
        for tp in assigned:
            if tp.topic == self._topic and tp.partition in self._pending:
                self._consumer.seek(tp, self._pending.pop(tp.partition))

    def poll(self, max_records: int | None = None, timeout_s: float = 1.0) -> list[Record]:
        try:
            batches = self._consumer.poll(
                timeout_ms=int(timeout_s * 1000), max_records=max_records or self._settings.max_poll_records
            )
        except KafkaError as exc:
            raise _unreachable(self._bootstrap, exc) from None
        out: list[Record] = []
        add = out.append
        for tp in sorted(batches, key=lambda t: t.partition):
            topic, partition = tp.topic, tp.partition
            for m in batches[tp]:
                add(Record(topic, partition, m.offset, m.value or b"", m.timestamp / 1000.0, m.key))
        return out

    def position(self) -> dict[str, int]:
        out = {}
        for tp in self._consumer.assignment():
            pos = self._consumer.position(tp, timeout_ms=int(self._settings.timeout_s * 1000))
            if pos is not None:
                out[tp_key(tp.topic, tp.partition)] = int(pos)
        return out

    def _to_tps(self, offsets: dict[str, int]) -> dict[TopicPartition, int]:
        return {TopicPartition(self._topic, p): o for p, o in partition_offsets(self._topic, offsets).items()}

    def seek(self, offsets: dict[str, int]) -> None:
        assigned = self._consumer.assignment()
        for tp, offset in self._to_tps(offsets).items():
            if tp in assigned:
                self._consumer.seek(tp, offset)
            elif self._shard is not None:
                continue  # another shard's partition: its consumer seeks it
            else:
                self._pending[tp.partition] = offset

    def commit(self, offsets: dict[str, int] | None = None) -> None:
        if self.group is None:
            raise ConfigError("a consumer without a group cannot commit offsets")
        tps = self._to_tps(offsets if offsets is not None else self.position())
        self._before_commit()
        try:
            self._consumer.commit(
                {tp: OffsetAndMetadata(o, "", -1) for tp, o in tps.items()},
                timeout_ms=int(self._settings.timeout_s * 1000),
            )
        except KafkaError as exc:
            raise BackendUnavailable(
                f"committing offsets of group {self.group!r} failed ({type(exc).__name__}: {exc}); "
                "the events will be read again after a restart"
            ) from None

    def committed(self) -> dict[str, int]:
        if self.group is None:
            return {}
        out = {}
        for p in self._partitions():
            off = self._consumer.committed(TopicPartition(self._topic, p))
            if off is not None:
                out[tp_key(self._topic, p)] = int(off)
        return out

    def end_offsets(self) -> dict[str, int]:
        tps = [TopicPartition(self._topic, p) for p in self._partitions()]
        ends = self._consumer.end_offsets(tps)
        return {tp_key(tp.topic, tp.partition): int(o) for tp, o in ends.items()}

    def close(self) -> None:
        self._consumer.close(autocommit=False)


class KafkaStream(Stream):
    def __init__(self, url: str, settings: StreamSettings) -> None:
        servers, topic = parse_bootstrap(url)
        super().__init__(url, topic, settings)
        self.servers = servers
        self.bootstrap = ",".join(servers)
        self._dlq: KafkaStreamProducer | None = None
        if settings.create_topics:
            self.ensure_topics()

    @classmethod
    def from_url(cls, parsed: BackendUrl, settings: StreamSettings) -> KafkaStream:
        return cls(parsed.raw, settings)

    def ensure_topics(self) -> None:
        """Create the topic and its dead-letter topic when missing (idempotent)."""
        try:
            admin = KafkaAdminClient(
                bootstrap_servers=self.servers,
                client_id="mamdr-admin",
                **_connect_options(self.settings),
                request_timeout_ms=int(self.settings.timeout_s * 1000),
            )
        except (KafkaError, OSError) as exc:
            raise _unreachable(self.bootstrap, exc) from None
        try:
            existing = set(admin.list_topics())
            wanted = [
                NewTopic(self.topic, self.settings.partitions, self.settings.replication_factor),
                NewTopic(self.dlq_topic, 1, self.settings.replication_factor),
            ]
            missing = [t for t in wanted if t.name not in existing]
            if missing:
                with contextlib.suppress(TopicAlreadyExistsError):  # another process was faster
                    admin.create_topics(missing, timeout_ms=int(self.settings.timeout_s * 1000))
        finally:
            admin.close()

    def producer(self) -> KafkaStreamProducer:
        return KafkaStreamProducer(self.servers, self.topic, self.settings)

    def consumer(self, group: str | None, reset: str = "earliest",
                 shard: tuple[int, int] | None = None) -> StreamConsumer:
        if self.settings.kafka_client == "confluent-kafka":
            from stream.kafka_confluent import ConfluentStreamConsumer

            return ConfluentStreamConsumer(self.servers, self.topic, group, reset, self.settings,
                                           self.flush_dead_letters, shard)
        return KafkaStreamConsumer(self.servers, self.topic, group, reset, self.settings, self.flush_dead_letters,
                                   shard)

    def dead_letter_stream(self) -> KafkaStream:
        dlq_settings = self.settings.model_copy(update={"partitions": 1, "create_topics": False})
        return KafkaStream(f"kafka://{self.bootstrap}/{self.topic}{DLQ_SUFFIX}", dlq_settings)

    def _dlq_producer(self) -> KafkaStreamProducer:
        if self._dlq is None:
            self._dlq = KafkaStreamProducer(self.servers, self.dlq_topic, self.settings)
        return self._dlq
