"""The stream interface the trainer and the producers code against; one file per backend implements it.

Offsets use the manifest's convention everywhere: ``{"topic:partition": next offset to read}``. Nothing is
committed implicitly: the trainer commits after a version that includes the events is published, so a
crash re-reads (never skips) events and the manifest's offsets decide what was applied.

Torch-free: plain Python over kafka-python and files.
"""

from __future__ import annotations

import time
from abc import ABC, abstractmethod
from collections.abc import Iterable
from dataclasses import dataclass

from contracts.errors import ConfigError
from contracts.events import ClickEvent, DeadLetter
from contracts.settings import StreamSettings

DLQ_SUFFIX = ".dlq"


def tp_key(topic: str, partition: int) -> str:
    return f"{topic}:{partition}"


def check_shard(shard: tuple[int, int] | None) -> tuple[int, int] | None:
    if shard is not None and not (shard[1] >= 1 and 0 <= shard[0] < shard[1]):
        raise ConfigError(f"shard {shard!r}: want (index, count) with 0 <= index < count")
    return shard


def in_shard(partition: int, shard: tuple[int, int] | None) -> bool:
    return shard is None or partition % shard[1] == shard[0]


def split_tp_key(key: str) -> tuple[str, int]:
    """``"clicks:3"`` -> ``("clicks", 3)``; topics may contain ':' only before the last one."""
    topic, sep, part = key.rpartition(":")
    if not sep or not topic or not part.isdigit():
        raise ConfigError(f"offset key {key!r} is not 'topic:partition' (e.g. 'clicks:0')")
    return topic, int(part)


def partition_offsets(topic: str, offsets: dict[str, int]) -> dict[int, int]:
    """``{"clicks:3": 17}`` -> ``{3: 17}``, refusing keys of another topic and negative offsets."""
    out = {}
    for key, offset in offsets.items():
        key_topic, p = split_tp_key(key)
        if key_topic != topic:
            raise ConfigError(f"offset key {key!r} is not a partition of {topic!r}")
        if int(offset) < 0:
            raise ConfigError(f"offset {offset} for {key} is negative")
        out[p] = int(offset)
    return out


@dataclass(frozen=True, slots=True)
class Record:
    """One message as read from a stream. ``timestamp`` is seconds since the epoch (producer time)."""

    topic: str
    partition: int
    offset: int
    value: bytes
    timestamp: float
    key: bytes | None = None

    @property
    def tp(self) -> str:
        return tp_key(self.topic, self.partition)


def event_bytes(event: bytes | str | ClickEvent) -> tuple[bytes, str | None]:
    """Wire bytes and the default key (the domain, so one domain stays in one partition)."""
    if isinstance(event, ClickEvent):
        return event.to_json(), event.domain
    if isinstance(event, str):
        return event.encode(), None
    return bytes(event), None


def dead_letter_for(record: Record, reason: str, max_payload_bytes: int) -> DeadLetter:
    """The DLQ message for a record: the reason, where it came from and (a bounded prefix of) its payload."""
    payload = record.value[:max_payload_bytes].decode("utf-8", errors="replace")
    return DeadLetter(
        reason=" ".join(reason.split())[:500],
        source_topic=record.topic,
        source_partition=record.partition,
        source_offset=record.offset,
        payload=payload,
    )


class StreamProducer(ABC):
    """Appends events. ``send`` may buffer; ``flush`` returns once everything sent is durable."""

    @abstractmethod
    def send(self, event: bytes | str | ClickEvent, key: str | None = None) -> None:
        """Queue one event; ``key`` defaults to the event's domain for a ``ClickEvent``."""

    @abstractmethod
    def flush(self, timeout_s: float | None = None) -> None:
        """Block until every queued event is durable; raise ``BackendUnavailable`` if some were not."""

    @abstractmethod
    def close(self) -> None: ...

    def __enter__(self) -> StreamProducer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class StreamConsumer(ABC):
    """Reads a topic as a member of a consumer group (or, with ``group=None``, all partitions, no commits)."""

    group: str | None

    @abstractmethod
    def poll(self, max_records: int | None = None, timeout_s: float = 1.0) -> list[Record]:
        """Up to ``max_records`` records in offset order per partition; ``[]`` after ``timeout_s`` idle."""

    @abstractmethod
    def position(self) -> dict[str, int]:
        """Next offset to read for each assigned partition."""

    @abstractmethod
    def seek(self, offsets: dict[str, int]) -> None:
        """Continue from these offsets (e.g. a manifest's); applied when the partitions are assigned."""

    @abstractmethod
    def commit(self, offsets: dict[str, int] | None = None) -> None:
        """Store the group's offsets (default: ``position()``). Dead letters are flushed first."""

    @abstractmethod
    def committed(self) -> dict[str, int]:
        """The group's stored offsets for the topic's partitions (missing: never committed)."""

    @abstractmethod
    def end_offsets(self) -> dict[str, int]:
        """The log end offset of every partition of the topic."""

    def lag(self) -> int:
        """Events not read yet by this consumer over its assigned partitions."""
        ends = self.end_offsets()
        return sum(max(0, ends.get(tp, pos) - pos) for tp, pos in self.position().items())

    @abstractmethod
    def close(self) -> None: ...

    def __enter__(self) -> StreamConsumer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class Stream(ABC):
    """A topic (and its dead-letter topic) behind a URL. Open with :func:`stream.open_stream`."""

    def __init__(self, url: str, topic: str, settings: StreamSettings) -> None:
        self.url = url
        self.topic = topic
        self.settings = settings
        self.dead_letters_sent = 0
        self._dlq: StreamProducer | None = None  # opened lazily by _dlq_producer

    @property
    def dlq_topic(self) -> str:
        return self.topic + DLQ_SUFFIX

    @abstractmethod
    def ensure_topics(self) -> None:
        """Create the topic and ``<topic>.dlq`` when missing (idempotent). Opening a stream calls it only
        with ``stream.create_topics`` (off by default); ``mamdr stream create`` is the operator's way."""

    @abstractmethod
    def producer(self) -> StreamProducer: ...

    @abstractmethod
    def consumer(self, group: str | None, reset: str = "earliest",
                 shard: tuple[int, int] | None = None) -> StreamConsumer:
        """A consumer in ``group``; without committed offsets it starts at ``reset`` (earliest/latest).

        ``shard=(i, n)`` reads only the partitions p with p % n == i (assigned, not balanced by the
        group): the distributed trainer spreads a topic over its ranks this way. It may still commit
        offsets of any partition (rank 0 commits for every rank)."""

    @abstractmethod
    def dead_letter_stream(self) -> Stream:
        """The ``<topic>.dlq`` stream, to read dead letters back (``mamdr stream tail --dlq``)."""

    @abstractmethod
    def _dlq_producer(self) -> StreamProducer: ...

    def dead_letter(self, record: Record, reason: str) -> DeadLetter:
        """Send a rejected record to ``<topic>.dlq`` with its reason and source offset (buffered:
        :meth:`flush_dead_letters` or any consumer ``commit`` makes them durable)."""
        letter = dead_letter_for(record, reason, max_payload_bytes=self.settings.max_event_bytes)
        self._dlq_producer().send(letter.model_dump_json().encode(), key=record.tp)
        self.dead_letters_sent += 1
        return letter

    def flush_dead_letters(self) -> None:
        if self._dlq is not None:
            self._dlq.flush()

    def close(self) -> None:
        if self._dlq is not None:
            self._dlq.close()
            self._dlq = None

    def __enter__(self) -> Stream:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def check_reset(reset: str) -> str:
    if reset not in {"earliest", "latest"}:
        raise ConfigError(f"reset must be 'earliest' or 'latest', not {reset!r}")
    return reset


def drain(consumer: StreamConsumer, count: int, timeout_s: float) -> list[Record]:
    """Poll until ``count`` records arrived or ``timeout_s`` passed (bounded in both)."""
    out: list[Record] = []
    deadline = time.monotonic() + timeout_s
    while len(out) < count and time.monotonic() < deadline:
        out.extend(consumer.poll(count - len(out), timeout_s=min(0.5, max(0.0, deadline - time.monotonic()))))
    return out


def offsets_after(records: Iterable[Record]) -> dict[str, int]:
    """The offsets to commit once ``records`` are applied: last offset + 1 per partition."""
    out: dict[str, int] = {}
    for r in records:
        out[r.tp] = max(out.get(r.tp, 0), r.offset + 1)
    return out
