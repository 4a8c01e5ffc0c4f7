"""The stream spread over the ranks: rank r consumes the partitions p with p % W == r.

Ranks 1..W-1 poll their own partitions between rounds and forward the raw records to rank 0 over the
rendezvous store (the c10d TCP key-value store every rank already has), in numbered batches with a
bounded number in flight. Rank 0 merges them with what its own consumer reads (``MergedConsumer``) and
runs the ordinary ingest: validation and dead letters, vocabularies, prequential scoring, the round,
then it publishes and commits the offsets of *every* partition. So the broker's partitions (fetching,
decompression, the per-partition read rate) are spread, while the one-writer steps stay on rank 0:
new row numbers are assigned once for all replicas, one manifest holds one consistent set of offsets.

A worker learns where to start from rank 0 (``START_KEY``: the live manifest's offsets over the group's
committed ones), so a restart after a failed round re-reads exactly what was not published, on every
rank. Records travel as a JSON header plus the raw values (no pickle).
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Sequence
from typing import Any

from contracts.errors import DataError
from stream.base import Record, Stream, StreamConsumer, split_tp_key

log = logging.getLogger("mamdr.trainer.distributed")
BATCH_KEY = "mamdr/ingest/{}/{}"  # rank, sequence number
ACK_KEY = "mamdr/ingest/{}/acked"  # rank 0's count of batches taken from that rank
START_KEY = "mamdr/ingest/start"
MAX_IN_FLIGHT = 4
MAX_POLL = 5000


# -- the wire format -------------------------------------------------------------------------------
def encode_records(records: Sequence[Record]) -> bytes:
    """``<header length>\\n<JSON header><values...>``: one header row per record, values concatenated."""
    header = [[r.topic, r.partition, r.offset, r.timestamp, len(r.value),
               None if r.key is None else r.key.decode("latin-1")] for r in records]
    head = json.dumps(header, separators=(",", ":")).encode()
    return b"%d\n" % len(head) + head + b"".join(r.value for r in records)


def decode_records(payload: bytes) -> list[Record]:
    try:
        newline = payload.index(b"\n")
        size = int(payload[:newline])
        header = json.loads(payload[newline + 1:newline + 1 + size])
        at = newline + 1 + size
        out = []
        for topic, partition, offset, ts, length, key in header:
            out.append(Record(topic=topic, partition=int(partition), offset=int(offset), timestamp=float(ts),
                              value=payload[at:at + length], key=None if key is None else key.encode("latin-1")))
            at += length
    except (ValueError, TypeError) as exc:
        raise DataError(f"a forwarded record batch is damaged ({exc})") from None
    if at != len(payload):
        raise DataError(f"a forwarded record batch has {len(payload) - at} trailing bytes")
    return out


# -- ranks 1..W-1 ----------------------------------------------------------------------------------
class RecordForwarder:
    """A worker's consumer of its partitions, forwarding raw records to rank 0 between rounds."""

    def __init__(self, stream: Stream, store: Any, rank: int, world: int) -> None:
        self.stream, self.store, self.rank, self.world = stream, store, rank, world
        self.consumer: StreamConsumer | None = None
        self.sent = 0  # batches
        self.records = 0

    def _start(self) -> bool:
        if self.consumer is not None:
            return True
        if not self.store.check([START_KEY]):
            return False
        offsets = json.loads(self.store.get(START_KEY).decode())
        self.consumer = self.stream.consumer(None, "earliest", shard=(self.rank, self.world))
        self.consumer.seek(offsets)
        log.info("rank %d consumes %s from %s", self.rank, sorted(self.consumer.position()), offsets or "the start")
        return True

    def in_flight(self) -> int:
        key = ACK_KEY.format(self.rank)
        acked = int(self.store.get(key).decode()) if self.store.check([key]) else 0
        return self.sent - acked

    def pump(self, timeout_s: float = 0.1) -> int:
        """Poll once and forward what came; 0 (after sleeping) when not started or rank 0 is behind."""
        if not self._start() or self.in_flight() >= MAX_IN_FLIGHT:
            time.sleep(timeout_s)
            return 0
        assert self.consumer is not None
        records = self.consumer.poll(max_records=MAX_POLL, timeout_s=timeout_s)
        if records:
            self.store.set(BATCH_KEY.format(self.rank, self.sent), encode_records(records))
            self.sent += 1
            self.records += len(records)
        return len(records)

    def close(self) -> None:
        if self.consumer is not None:
            self.consumer.close()
            self.consumer = None


# -- rank 0 ----------------------------------------------------------------------------------------
class MergedConsumer(StreamConsumer):
    """Rank 0's consumer: its own shard, plus the batches the workers forwarded, as one consumer.

    ``commit`` writes the offsets of every partition through rank 0's group consumer; ``position``
    covers every partition (a worker's: where its forwarded records end)."""

    def __init__(self, stream: Stream, group: str | None, store: Any, world: int,
                 start: dict[str, int] | None = None) -> None:
        self.own = stream.consumer(group, shard=(0, world))
        self.store, self.world = store, world
        self.topic = stream.topic
        start = dict(start or {})
        if start:
            self.own.seek(start)
        committed = self.own.committed()
        ends = self.own.end_offsets()
        # where each worker starts: the manifest's offsets over the group's; otherwise the beginning
        self._forwarded: dict[str, int] = {}
        begin = {}
        for key in ends:
            _, p = split_tp_key(key)
            if p % world != 0:
                begin[key] = start.get(key, committed.get(key, 0))
                self._forwarded[key] = begin[key]
        self._taken = dict.fromkeys(range(1, world), 0)
        self._backlog: list[Record] = []  # drained from the store, not yet handed to the trainer
        self.forwarded_records = 0
        store.set(START_KEY, json.dumps(begin))

    def drain(self) -> int:
        """Move every batch the workers have ready into the backlog (each worker's order kept)."""
        got = 0
        for rank in range(1, self.world):
            while self.store.check([BATCH_KEY.format(rank, self._taken[rank])]):
                key = BATCH_KEY.format(rank, self._taken[rank])
                batch = decode_records(self.store.get(key))
                self.store.delete_key(key)
                self._taken[rank] += 1
                self.store.set(ACK_KEY.format(rank), str(self._taken[rank]))
                self._backlog.extend(batch)
                got += len(batch)
        return got

    def poll(self, max_records: int | None = None, timeout_s: float = 1.0) -> list[Record]:
        """At most ``max_records``: forwarded ones first, then this rank's own partitions."""
        budget = max_records or MAX_POLL
        if len(self._backlog) < budget:
            self.drain()
        forwarded, self._backlog = self._backlog[:budget], self._backlog[budget:]
        for r in forwarded:
            self._forwarded[r.tp] = max(self._forwarded.get(r.tp, 0), r.offset + 1)
        self.forwarded_records += len(forwarded)
        room = budget - len(forwarded)
        own = self.own.poll(max_records=room, timeout_s=0.0 if forwarded else timeout_s) if room else []
        return forwarded + own

    def position(self) -> dict[str, int]:
        return {**self._forwarded, **self.own.position()}

    def seek(self, offsets: dict[str, int]) -> None:
        self.own.seek(offsets)  # workers' partitions start where START_KEY says

    def commit(self, offsets: dict[str, int] | None = None) -> None:
        self.own.commit(offsets if offsets is not None else self.position())

    def committed(self) -> dict[str, int]:
        return self.own.committed()

    def end_offsets(self) -> dict[str, int]:
        return self.own.end_offsets()

    def close(self) -> None:
        self.own.close()

