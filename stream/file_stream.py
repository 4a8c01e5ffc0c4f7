"""``file://DIR``: the embedded stream (no Kafka needed), an append-only JSON-lines log per partition.

Layout of ``DIR`` (the topic is the folder's name; the dead-letter topic is the sibling ``DIR.dlq``)::

    meta.json              {"topic": "clicks", "partitions": 4}   written once
    p-0000.log             one JSON object per line: {"ts": 1.7e9, "key": "comedy", "value": "<payload>"}
    p-0000.idx             8-byte little-endian end position of each record in p-0000.log
    groups/<group>.json    committed offsets {"clicks:0": 12, ...}, replaced atomically
    groups/<group>.lock    held by the group's one consumer (file:// allows one consumer per group)
    .lock                  appenders take it (flock), so several processes can append safely

A record exists once its index entry does: the log is written before the index, and an appender first
cuts a torn log tail left by a crash, so readers (which need no lock) never see half a record. Payload
bytes survive exactly (invalid UTF-8 included) through ``surrogateescape``.
"""

from __future__ import annotations

import contextlib
import fcntl
import itertools
import json
import os
import re
import struct
import time
import zlib
from pathlib import Path

from contracts.errors import BackendUnavailable, ConfigError, Conflict
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
    split_tp_key,
    tp_key,
)

_IDX = struct.Struct("<Q")
_GROUP_RE = re.compile(r"^[A-Za-z0-9._-]{1,200}$")
_IDLE_SLEEP_S = 0.02


def _encode_line(value: bytes, key: str | None, ts: float) -> bytes:
    text = value.decode("utf-8", errors="surrogateescape")
    return f'{{"ts": {ts!r}, "key": {json.dumps(key)}, "value": {json.dumps(text)}}}\n'.encode()


def _write_json_atomic(path: Path, data: object) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    with open(tmp, "w", encoding="utf-8") as f:
        json.dump(data, f, sort_keys=True)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


class FileLog:
    """The partitioned log files of one topic folder."""

    def __init__(self, root: Path, topic: str, partitions: int, create: bool) -> None:
        self.root = root
        self.topic = topic
        meta_path = root / "meta.json"
        if not meta_path.exists():
            if not create:
                raise ConfigError(f"no stream at {root}: create it with `mamdr stream create --stream file://{root}` "
                                  "(or produce to it with stream.create_topics on)")
            root.mkdir(parents=True, exist_ok=True)
            (root / "groups").mkdir(exist_ok=True)
            with self.locked():
                if not meta_path.exists():
                    _write_json_atomic(meta_path, {"topic": topic, "partitions": partitions})
        try:
            meta = json.loads(meta_path.read_text())
            self.partitions = int(meta["partitions"])
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise BackendUnavailable(f"cannot read {meta_path}: {exc}; the stream folder is damaged") from None
        (root / "groups").mkdir(exist_ok=True)
        self._fds: dict[str, int] = {}

    @contextlib.contextmanager
    def locked(self):  # type: ignore[no-untyped-def]
        fd = os.open(self.root / ".lock", os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield
        finally:
            os.close(fd)  # closing releases the flock

    def _fd(self, name: str) -> int:
        fd = self._fds.get(name)
        if fd is None:
            fd = os.open(self.root / name, os.O_RDWR | os.O_CREAT | os.O_APPEND, 0o644)
            self._fds[name] = fd
        return fd

    def count(self, partition: int) -> int:
        try:
            return os.stat(self.root / f"p-{partition:04d}.idx").st_size // _IDX.size
        except FileNotFoundError:
            return 0

    def append(self, batches: dict[int, list[bytes]], fsync: bool) -> None:
        """Append lines to partitions, all under the folder lock."""
        with self.locked():
            for partition, lines in batches.items():
                if not lines:
                    continue
                log_fd = self._fd(f"p-{partition:04d}.log")
                idx_fd = self._fd(f"p-{partition:04d}.idx")
                idx_size = os.fstat(idx_fd).st_size
                whole = idx_size - idx_size % _IDX.size
                if whole != idx_size:  # a torn index entry from a crash
                    os.ftruncate(idx_fd, whole)
                end = _IDX.unpack(os.pread(idx_fd, _IDX.size, whole - _IDX.size))[0] if whole else 0
                if os.fstat(log_fd).st_size != end:  # a torn (unindexed) log tail from a crash
                    os.ftruncate(log_fd, end)
                ends = bytearray()
                for line in lines:
                    end += len(line)
                    ends += _IDX.pack(end)
                os.write(log_fd, b"".join(lines))
                if fsync:
                    os.fsync(log_fd)
                os.write(idx_fd, bytes(ends))
                if fsync:
                    os.fsync(idx_fd)

    def read(self, partition: int, start: int, limit: int) -> list[Record]:
        stop = min(self.count(partition), start + limit)
        if stop <= start:
            return []
        idx_fd = self._fd(f"p-{partition:04d}.idx")
        first = start - 1 if start > 0 else 0
        raw = os.pread(idx_fd, (stop - first) * _IDX.size, first * _IDX.size)
        ends = [v[0] for v in _IDX.iter_unpack(raw)]
        begin = ends[0] if start > 0 else 0
        if start > 0:
            ends = ends[1:]
        data = os.pread(self._fd(f"p-{partition:04d}.log"), ends[-1] - begin, begin)
        out = []
        for i, line in enumerate(data.split(b"\n")[:-1]):  # JSON escapes every newline in a value
            obj = json.loads(line)
            key = obj.get("key")
            out.append(
                Record(
                    topic=self.topic,
                    partition=partition,
                    offset=start + i,
                    value=obj["value"].encode("utf-8", errors="surrogateescape"),
                    timestamp=float(obj["ts"]),
                    key=key.encode() if key is not None else None,
                )
            )
        return out

    def close(self) -> None:
        for fd in self._fds.values():
            os.close(fd)
        self._fds.clear()


class FileProducer(StreamProducer):
    def __init__(self, log: FileLog, settings: StreamSettings) -> None:
        self._log = log
        self._settings = settings
        self._pending: dict[int, list[bytes]] = {}
        self._pending_bytes = 0
        self._round_robin = itertools.cycle(range(log.partitions))

    def send(self, event: bytes | str | ClickEvent, key: str | None = None) -> None:
        value, default_key = event_bytes(event)
        key = key if key is not None else default_key
        n = self._log.partitions
        partition = next(self._round_robin) if key is None else zlib.crc32(key.encode()) % n
        line = _encode_line(value, key, time.time())
        self._pending.setdefault(partition, []).append(line)
        self._pending_bytes += len(line)
        if self._pending_bytes >= self._settings.batch_bytes:
            self.flush()

    def flush(self, timeout_s: float | None = None) -> None:
        if self._pending:
            batches, self._pending, self._pending_bytes = self._pending, {}, 0
            self._log.append(batches, fsync=self._settings.fsync)

    def close(self) -> None:
        self.flush()
        self._log.close()


class FileConsumer(StreamConsumer):
    def __init__(
        self, log: FileLog, group: str | None, reset: str, settings: StreamSettings, before_commit: object,
        shard: tuple[int, int] | None = None,
    ) -> None:
        self._log = log
        self._mine = [p for p in range(log.partitions) if in_shard(p, check_shard(shard))]
        self.group = group
        self._settings = settings
        self._before_commit = before_commit
        self._lock_fd: int | None = None
        start = check_reset(reset)
        if group is not None:
            if not _GROUP_RE.match(group):
                raise ConfigError(f"consumer group {group!r} must match {_GROUP_RE.pattern}")
            self._lock_fd = os.open(log.root / "groups" / f"{group}.lock", os.O_RDWR | os.O_CREAT, 0o644)
            try:
                fcntl.flock(self._lock_fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                os.close(self._lock_fd)
                self._lock_fd = None
                raise Conflict(
                    f"consumer group {group!r} already has a consumer on {log.root}: file:// streams allow "
                    "one consumer per group (stop the other one, or use kafka:// to share partitions)"
                ) from None
        committed = self.committed()
        self._pos = {
            p: committed.get(tp_key(log.topic, p), 0 if start == "earliest" else log.count(p))
            for p in self._mine
        }
        self._next_partition = 0

    def _offsets_path(self) -> Path:
        return self._log.root / "groups" / f"{self.group}.json"

    def poll(self, max_records: int | None = None, timeout_s: float = 1.0) -> list[Record]:
        budget = max_records or self._settings.max_poll_records
        deadline = time.monotonic() + timeout_s
        n = len(self._mine)
        while True:
            out: list[Record] = []
            for i in range(n):  # rotate the starting partition so none starves
                p = self._mine[(self._next_partition + i) % n]
                got = self._log.read(p, self._pos[p], budget - len(out))
                if got:
                    self._pos[p] = got[-1].offset + 1
                    out.extend(got)
                if len(out) >= budget:
                    break
            if out:  # rotate only past a poll that read: how long the log sat empty must not change the order
                self._next_partition = (self._next_partition + 1) % max(1, n)
                return out
            if time.monotonic() >= deadline:
                return out
            time.sleep(min(_IDLE_SLEEP_S, max(0.0, deadline - time.monotonic())))

    def position(self) -> dict[str, int]:
        return {tp_key(self._log.topic, p): pos for p, pos in self._pos.items()}

    def _check(self, offsets: dict[str, int]) -> dict[int, int]:
        out = {}
        for key, offset in offsets.items():
            topic, p = split_tp_key(key)
            if topic != self._log.topic or not 0 <= p < self._log.partitions:
                raise ConfigError(f"offset key {key!r} is not a partition of {self._log.topic!r}")
            if not 0 <= int(offset) <= self._log.count(p):
                raise ConfigError(f"offset {offset} for {key} is outside 0..{self._log.count(p)}")
            out[p] = int(offset)
        return out

    def seek(self, offsets: dict[str, int]) -> None:
        """Move to the given offsets; partitions outside this consumer's shard are ignored."""
        self._pos.update({p: o for p, o in self._check(offsets).items() if p in self._pos})

    def commit(self, offsets: dict[str, int] | None = None) -> None:
        if self.group is None:
            raise ConfigError("a consumer without a group cannot commit offsets")
        checked = self._check(offsets if offsets is not None else self.position())
        self._before_commit()  # type: ignore[operator]
        stored = self.committed()
        stored.update({tp_key(self._log.topic, p): o for p, o in checked.items()})
        _write_json_atomic(self._offsets_path(), stored)

    def committed(self) -> dict[str, int]:
        if self.group is None:
            return {}
        try:
            return {str(k): int(v) for k, v in json.loads(self._offsets_path().read_text()).items()}
        except FileNotFoundError:
            return {}
        except (ValueError, AttributeError) as exc:
            raise BackendUnavailable(f"offsets file {self._offsets_path()} is damaged: {exc}") from None

    def end_offsets(self) -> dict[str, int]:
        return {tp_key(self._log.topic, p): self._log.count(p) for p in range(self._log.partitions)}

    def close(self) -> None:
        if self._lock_fd is not None:
            os.close(self._lock_fd)
            self._lock_fd = None
        self._log.close()


class FileStream(Stream):
    """A topic folder; see the module docstring for the layout."""

    def __init__(self, url: str, settings: StreamSettings) -> None:
        root = parse_url(url, ("file",), "stream").path
        if not root.name:
            raise ConfigError(f"stream URL {url!r} names no folder; write e.g. file:///var/lib/mamdr/stream/clicks")
        super().__init__(url, root.name, settings)
        self.root = root
        if settings.create_topics:
            self.ensure_topics()
        elif (root / "meta.json").exists():  # a damaged folder fails here, not at the first poll
            FileLog(root, self.topic, settings.partitions, create=False).close()
        self._dlq: FileProducer | None = None
        self._dlq_stream: FileStream | None = None

    @classmethod
    def from_url(cls, parsed: BackendUrl, settings: StreamSettings) -> FileStream:
        return cls(parsed.raw, settings)

    def _open_log(self, create: bool = False) -> FileLog:
        return FileLog(self.root, self.topic, self.settings.partitions, create=create)

    def ensure_topics(self) -> None:
        """Create the topic folder and its dead-letter folder when missing (idempotent)."""
        self._open_log(create=True).close()
        FileLog(Path(f"{self.root}{DLQ_SUFFIX}"), self.dlq_topic, 1, create=True).close()

    def producer(self) -> FileProducer:
        return FileProducer(self._open_log(), self.settings)

    def consumer(self, group: str | None, reset: str = "earliest",
                 shard: tuple[int, int] | None = None) -> FileConsumer:
        return FileConsumer(self._open_log(), group, reset, self.settings, self.flush_dead_letters, shard)

    def dead_letter_stream(self) -> FileStream:
        if self._dlq_stream is None:
            dlq_settings = self.settings.model_copy(update={"partitions": 1})
            self._dlq_stream = FileStream(f"file://{self.root}{DLQ_SUFFIX}", dlq_settings)
        return self._dlq_stream

    def _dlq_producer(self) -> FileProducer:
        if self._dlq is None:
            self._dlq = self.dead_letter_stream().producer()
        return self._dlq
