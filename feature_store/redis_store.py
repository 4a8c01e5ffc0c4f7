"""``redis://`` / ``rediss://`` backend: the production store every serving replica reads.

Reads: ``lookup`` of a full version is ONE ``MGET`` of [the version's live token, the user key, the
item keys]; of an incremental version ONE call of a server-side script (``_READ``) that does the
same per id over its floor value and its writes above the floor, picking the newest on the
version's lineage (feature_store/lineage.py): still one round trip, atomic like MGET.
The version comes from the ``{ns}:current`` pointer, cached for ``pointer_ttl_s`` so the hot path
needs no second round trip. A stale cached pointer can only mean "the previous complete version
for up to pointer_ttl_s": all keys in the MGET belong to one version, and the live token in the
same atomic MGET proves that version had not started being deleted (gc removes the token first).
If the token is gone the pointer is re-read and the MGET repeated once.

Writes: validated, encoded once, then MSET in ``write_chunk``-key chunks sent through a
non-transactional pipeline (~370k keys/s for 1,000-key MSETs on the 2-core dev machine, against ~110k/s for
pipelined SETs: docs/performance.md, "Feature store writes").

Failures: connection errors are retried (bounded, exponential backoff) by redis-py and then
raised as ``BackendUnavailable``; the pool reconnects by itself once the server is back.
"""

from __future__ import annotations

import secrets
import time
from collections.abc import Collection, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import numpy as np
import redis
from redis.backoff import ExponentialBackoff
from redis.retry import Retry
from redis.utils import HIREDIS_AVAILABLE

from contracts.errors import BackendUnavailable, ConfigError, Conflict, DataError, NotFound
from contracts.settings import FeatureStoreSettings
from contracts.urls import BackendUrl
from feature_store.base import KINDS, EmbeddingStore, Kind, Lookup, VersionInfo
from feature_store.codec import check_vectors, decode, decode_into, encode_rows, wire_dtype
from feature_store.keys import KIND_TAG, KeyLayout, check_dims, check_kind, check_name
from feature_store.lineage import Intervals, Node, decode_lineage, encode_lineage, extend, flat, plan_gc

_PIPELINE_CHUNKS = 8  # MSET chunks per pipeline flush: bounds client memory, keeps the socket busy
_UNLINK_BATCH = 1000

# KEYS: token, user set, item set (ids with writes above the floor), n floor keys, n writes hashes
# (users first); ARGV: nlin, the lineage as lo1, hi1, ..., the number of user ids, then the n ids.
# Returns the token, then per id the newest visible write (false if forgotten) or else the floor value:
# one MGET and one SMISMEMBER per kind, a HGETALL only for ids written above the floor.
_READ = """
local nlin = tonumber(ARGV[1])
local lin = {}
for i = 1, nlin do lin[i] = tonumber(ARGV[1 + i]) end
local nu = tonumber(ARGV[nlin + 2])
local base = nlin + 2
local n = (#KEYS - 3) / 2
local out = {redis.call('GET', KEYS[1])}
if n == 0 then return out end
local floors = redis.call('MGET', unpack(KEYS, 4, 3 + n))
local mu, mi = {}, {}
if nu > 0 then mu = redis.call('SMISMEMBER', KEYS[2], unpack(ARGV, base + 1, base + nu)) end
if n > nu then mi = redis.call('SMISMEMBER', KEYS[3], unpack(ARGV, base + nu + 1, base + n)) end
for j = 1, n do
  local val = floors[j]
  local member = mi[j - nu]
  if j <= nu then member = mu[j] end
  if member == 1 then
    local h = redis.call('HGETALL', KEYS[3 + n + j])
    local best, v = -1, false
    for k = 1, #h, 2 do
      local s = tonumber(h[k])
      if s > best then
        for q = 1, nlin, 2 do
          if s >= lin[q] and s <= lin[q + 1] then best = s; v = h[k + 1]; break end
        end
      end
    end
    if best >= 0 then
      if #v == 0 then val = false else val = v end
    end
  end
  out[#out + 1] = val
end
return out
"""
# KEYS: the kind's above-floor set, the version's read hash, then the writes hashes; ARGV: seq, the read
# hash's field prefix, the ids, then one value per id. Marking the id and writing its value in one script: a
# gc in between would see the hash empty and unmark the id.
_WRITE = """
local n = #KEYS - 2
for i = 1, n do
  redis.call('SADD', KEYS[1], ARGV[2 + i])
  redis.call('HSET', KEYS[2 + i], ARGV[1], ARGV[2 + n + i])
  redis.call('HSET', KEYS[2], ARGV[2] .. ARGV[2 + i], ARGV[2 + n + i])
end
return n
"""
# KEYS: the kind's set, the version's read hash, then (floor key, writes hash) per id; ARGV: seq, "fold" or
# "drop", the read hash's field prefix, then the ids. fold: move that seq's write into the floor; drop: delete
# it. Either way it leaves the read hash in the same step, so a reader sees it in exactly one of the two. An
# id whose writes hash empties leaves the set.
_SETTLE = """
local fold = ARGV[2] == 'fold'
local n = (#KEYS - 2) / 2
for j = 1, n do
  local floor, writes, id = KEYS[1 + 2 * j], KEYS[2 + 2 * j], ARGV[3 + j]
  local v = redis.call('HGET', writes, ARGV[1])
  if v then
    if fold then
      if #v == 0 then redis.call('DEL', floor) else redis.call('SET', floor, v) end
    end
    redis.call('HDEL', writes, ARGV[1])
  end
  redis.call('HDEL', KEYS[2], ARGV[3] .. id)
  if redis.call('HLEN', writes) == 0 then redis.call('SREM', KEYS[1], id) end
end
return 0
"""
if HIREDIS_AVAILABLE:
    from hiredis import pack_command as _hiredis_pack

    def _pack(args: tuple[Any, ...]) -> bytes:
        return bytes(_hiredis_pack(args))
else:  # pragma: no cover - hiredis is a dependency
    _PACKER = redis.connection.PythonRespSerializer(1 << 20, lambda x: x.encode() if isinstance(x, str) else x)

    def _pack(args: tuple[Any, ...]) -> bytes:
        return b"".join(_PACKER.pack(*args))


CHAIN_TTL_S = 10.0  # how long a reader reuses a version's list of unfolded ancestors (a stale one only
# lists versions folded since: their read hashes are empty, so the read stays exact, one HMGET longer)


@dataclass(frozen=True)
class _Meta:
    dims: dict[Kind, int]
    dtype: str
    token: bytes
    seq: int = 0
    root: str = ""
    parent: str | None = None
    lineage: Intervals = ()
    floored: bool = True
    legacy: bool = False  # written before incremental versions: rows under ``{ns}:v:{version}:u:{id}``
    read_hash: bool = False  # its writes are also in its read hash (declared since the read path without a script)


class RedisStore(EmbeddingStore):
    @classmethod
    def from_url(cls, parsed: BackendUrl, settings: FeatureStoreSettings) -> RedisStore:
        return cls(parsed.raw, settings)

    def __init__(self, url: str, settings: FeatureStoreSettings | None = None) -> None:
        self.settings = s = settings or FeatureStoreSettings()
        self.keys = KeyLayout(s.namespace)
        wire_dtype(s.dtype)
        if s.tls and url.startswith("redis://"):
            url = "rediss://" + url[len("redis://") :]
        kwargs: dict[str, Any] = {
            "socket_timeout": s.socket_timeout_s,
            "socket_connect_timeout": s.connect_timeout_s,
            "max_connections": s.max_connections,
            "retry": Retry(ExponentialBackoff(cap=max(s.retry_backoff_s * 8, 0.001), base=s.retry_backoff_s),
                           s.retries),
            "retry_on_error": [redis.exceptions.ConnectionError, redis.exceptions.TimeoutError],
            "health_check_interval": s.health_check_interval_s,
        }
        if s.username:
            kwargs["username"] = s.username
        if s.password is not None:
            kwargs["password"] = s.password.get_secret_value()
        if url.startswith("rediss://") and s.tls_ca_file:
            kwargs["ssl_ca_certs"] = s.tls_ca_file
        self._where = url.split("@")[-1].split("://")[-1]  # host:port/db without credentials
        try:
            self._pool = redis.ConnectionPool.from_url(url, **kwargs)
        except ValueError as exc:
            raise ConfigError(f"feature store URL {self._where!r} is invalid: {exc}; "
                              "write e.g. redis://127.0.0.1:6379/0") from None
        self._r = redis.Redis(connection_pool=self._pool)
        self._read = self._r.register_script(_READ)
        self._write_script = self._r.register_script(_WRITE)
        self._settle = self._r.register_script(_SETTLE)
        self._pointer: tuple[str | None, float] = (None, -1.0)
        self._meta_cache: dict[str, _Meta] = {}
        self._chains: dict[str, tuple[list[int] | None, float]] = {}

    # -- plumbing -----------------------------------------------------------------------------
    def _unavailable(self, exc: redis.exceptions.RedisError, what: str) -> BackendUnavailable:
        if isinstance(exc, redis.exceptions.AuthenticationError):
            return BackendUnavailable(
                f"feature store redis {self._where} refused the credentials during {what}: {exc}; "
                "check MAMDR_FEATURE_STORE__USERNAME/PASSWORD", retry_after_s=5)
        if isinstance(exc, redis.exceptions.ConnectionError | redis.exceptions.TimeoutError):
            return BackendUnavailable(
                f"feature store redis {self._where} is unreachable during {what}: {exc}; "
                "check that it runs and MAMDR_FEATURE_STORE__URL")
        return BackendUnavailable(f"feature store redis {self._where} failed {what}: {exc}")

    @contextmanager
    def _guard(self, what: str) -> Iterator[None]:
        try:
            yield
        except redis.exceptions.RedisError as exc:
            raise self._unavailable(exc, what) from None

    def _read_meta(self, version: str) -> _Meta | None:
        with self._guard("reading version metadata"):
            pipe = self._r.pipeline(transaction=False)
            pipe.hgetall(self.keys.meta(version))
            pipe.get(self.keys.live(version))
            raw, token = pipe.execute()
        if not raw or token is None:
            self._meta_cache.pop(version, None)
            return None
        fields = {k.decode(): v.decode() for k, v in raw.items()}
        if fields.get("retired") == "1":
            self._meta_cache.pop(version, None)
            return None
        dims: dict[Kind, int] = {k: int(fields[f"dims.{k}"]) for k in KINDS if f"dims.{k}" in fields}
        meta = _Meta(dims, fields.get("dtype", "float32"), token, int(fields.get("seq", 0)),
                     fields.get("root", version), fields.get("parent") or None,
                     decode_lineage(fields.get("lineage", "")), fields.get("floored", "1") == "1",
                     legacy="seq" not in fields, read_hash=fields.get("rh") == "1")
        self._meta_cache[version] = meta
        return meta

    def _floor(self, meta: _Meta, kind: Kind) -> str:
        """Where a version's floor rows of ``kind`` live (a legacy version: its own old key prefix)."""
        if meta.legacy:
            return f"{self.keys.prefix(meta.root)}{KIND_TAG[kind]}:"
        return self.keys.floor_prefix(meta.root, kind)

    def _meta(self, version: str, fresh: bool = False) -> _Meta:
        meta = None if fresh else self._meta_cache.get(version)
        meta = meta or self._read_meta(version)
        if meta is None:
            raise NotFound(f"embedding version {version!r} does not exist in {self._where}")
        return meta

    def _current(self, max_age_s: float) -> str:
        name, at = self._pointer
        if name is None or time.monotonic() - at > max_age_s:
            name = self.current_version()
        if name is None:
            raise NotFound("no embedding version is published yet; load one (mamdr features load)")
        return name

    # -- writes -------------------------------------------------------------------------------
    def declare(self, version: str, dims: dict[Kind, int], parent: str | None = None) -> None:
        check_name(version, "version")
        dims = check_dims(dims)
        meta_key = self.keys.meta(version)
        now = time.time()
        with self._guard("declaring a version"):
            have = self._r.hmget(meta_key, ["seq", "parent", "retired"])
        fields: dict[str, Any] = {}
        if have[0] is None:  # new: a sequence number (never reused) and its lineage
            p = self._meta(check_name(parent, "parent version"), fresh=True) if parent is not None else None
            if p is not None and p.legacy:
                raise Conflict(f"version {parent!r} was written before incremental versions: declare "
                               f"{version!r} as a full version")
            with self._guard("declaring a version"):
                legacy = bool(self._r.exists(self.keys.meta(version)))
                seq = 0 if legacy else int(self._r.incr(self.keys.seq))
            if legacy:
                raise Conflict(f"version {version!r} was written before incremental versions; pick a new name")
            if p is None:
                fields = {"seq": seq, "root": version, "parent": "", "floored": 1,
                          "lineage": encode_lineage(((seq, seq),)), "dtype": self.settings.dtype}
            else:
                for kind, dim in dims.items():
                    if p.dims.get(kind, dim) != dim:
                        raise Conflict(f"version {version!r} declares {kind} dimension {dim}, its parent "
                                       f"{parent!r} {p.dims[kind]}")
                dims = {**p.dims, **dims}
                fields = {"seq": seq, "root": p.root, "parent": parent, "floored": 0,
                          "lineage": encode_lineage(extend(p.lineage, seq)), "dtype": p.dtype, "rh": 1}
        elif have[2] == b"1":
            raise Conflict(f"version {version!r} was deleted; declare a new version")
        elif parent is not None and parent != (have[1] or b"").decode():
            raise Conflict(f"version {version!r} has parent {(have[1] or b'').decode() or None!r}, not {parent!r}")
        with self._guard("declaring a version"):
            pipe = self._r.pipeline(transaction=True)
            pipe.hsetnx(meta_key, "created", repr(now))
            for name, value in fields.items():
                pipe.hsetnx(meta_key, name, value)
            pipe.hsetnx(meta_key, "dtype", self.settings.dtype)
            for kind, dim in dims.items():
                pipe.hsetnx(meta_key, f"dims.{kind}", dim)
            pipe.set(self.keys.live(version), secrets.token_hex(8), nx=True)
            pipe.zadd(self.keys.versions, {version: now}, nx=True)
            pipe.hgetall(meta_key)
            stored = pipe.execute()[-1]
        for kind, dim in dims.items():
            have_dim = int(stored[f"dims.{kind}".encode()])
            if have_dim != dim:
                raise Conflict(f"version {version!r} declares {kind} dimension {have_dim}, not {dim}")
        self._meta_cache.pop(version, None)
        self._chains.pop(version, None)

    def _writable(self, version: str, kind: Kind) -> _Meta:
        meta = self._meta(check_name(version, "version"), fresh=True)
        if version == self.current_version():
            raise Conflict(f"version {version!r} is live; write a new version and publish it")
        if kind not in meta.dims:
            raise DataError(f"version {version!r} has no declared {kind} dimension; declare it first")
        return meta

    def write(self, version: str, kind: Kind, ids: Sequence[str], vectors: np.ndarray) -> int:
        check_kind(kind)
        meta = self._writable(version, kind)
        rows = encode_rows(check_vectors(ids, vectors, meta.dims[kind], meta.dtype, f"{kind} vectors"))
        self._put(version, meta, kind, [str(i) for i in ids], rows)
        return len(rows)

    def forget(self, version: str, kind: Kind, ids: Sequence[str]) -> int:
        check_kind(kind)
        meta = self._writable(version, kind)
        keys = [str(i) for i in ids]
        if meta.floored:  # a full version being built: the rows simply go
            prefix = self._floor(meta, kind)
            with self._guard("forgetting vectors"):
                for start in range(0, len(keys), _UNLINK_BATCH):
                    self._r.delete(*[prefix + k for k in keys[start : start + _UNLINK_BATCH]])
        else:
            self._put(version, meta, kind, keys, [b""] * len(keys), count=False)
        return len(keys)

    def _put(self, version: str, meta: _Meta, kind: Kind, ids: list[str], rows: list[bytes],
             count: bool = True) -> None:
        n, chunk = len(rows), max(1, self.settings.write_chunk)
        with self._guard("writing vectors"):
            pipe = self._r.pipeline(transaction=False)
            queued = 0
            for start in range(0, n, chunk):
                stop = min(n, start + chunk)
                if meta.floored:  # a full version: plain keys, one MSET per chunk
                    prefix = self._floor(meta, kind)
                    args: list[Any] = [None] * (2 * (stop - start))
                    args[0::2] = [prefix + i for i in ids[start:stop]]
                    args[1::2] = rows[start:stop]
                    pipe.execute_command("MSET", *args)
                else:  # the index first: gc finds every write through it
                    prefix = self.keys.writes_prefix(meta.root, kind)
                    pipe.rpush(self.keys.index(version, kind), *ids[start:stop])
                    self._write_script(keys=[self.keys.above_floor(meta.root, kind),
                                             self.keys.read_hash(meta.root, meta.seq),
                                             *[prefix + i for i in ids[start:stop]]],
                                       args=[meta.seq, KIND_TAG[kind] + ":", *ids[start:stop], *rows[start:stop]],
                                       client=pipe)
                queued += 1
                if queued == _PIPELINE_CHUNKS:
                    pipe.execute()
                    queued = 0
            if count:
                pipe.hincrby(self.keys.meta(version), f"count.{kind}", n)
            pipe.execute()

    def publish(self, version: str) -> None:
        live = self.keys.live(check_name(version, "version"))
        self._meta(version, fresh=True)

        def switch(pipe: redis.client.Pipeline) -> None:
            # WATCHing the token: a gc that deletes this version meanwhile aborts the switch.
            if not pipe.exists(live):
                raise NotFound(f"embedding version {version!r} does not exist in {self._where}")
            pipe.multi()
            pipe.set(self.keys.current, version)

        with self._guard("publishing"):
            self._r.transaction(switch, live)
        self._pointer = (version, time.monotonic())

    # -- reads --------------------------------------------------------------------------------
    def current_version(self) -> str | None:
        with self._guard("reading the current version"):
            raw = self._r.get(self.keys.current)
        name = raw.decode() if raw is not None else None
        self._pointer = (name, time.monotonic())
        return name

    def dims(self, version: str | None = None) -> dict[Kind, int]:
        return dict(self._meta(version or self._current(0.0)).dims)

    def describe(self, version: str | None = None) -> VersionInfo:
        name = version or self._current(0.0)
        with self._guard("describing a version"):
            pipe = self._r.pipeline(transaction=False)
            pipe.hgetall(self.keys.meta(name))
            pipe.exists(self.keys.live(name))
            raw, live = pipe.execute()
        f = {k.decode(): v.decode() for k, v in (raw or {}).items()}
        if not raw or not live or f.get("retired") == "1":
            raise NotFound(f"embedding version {name!r} does not exist in {self._where}")
        dims: dict[Kind, int] = {k: int(f[f"dims.{k}"]) for k in KINDS if f"dims.{k}" in f}
        counts: dict[Kind, int] = {k: int(f.get(f"count.{k}", 0)) for k in KINDS}
        return VersionInfo(name, dims, f.get("dtype", "float32"), counts, float(f.get("created", 0.0)),
                           f.get("parent") or None)

    def _mget_version(
        self, version: str | None, user_ids: list[str], kind: Kind, ids: Sequence[str]
    ) -> tuple[str, _Meta, list[Any]]:
        """MGET [live token, *user keys, *keys of ids] of one version; re-resolve if it vanished."""
        for attempt in range(3):
            name = version or self._current(0.0 if attempt else self.settings.pointer_ttl_s)
            meta = self._meta(name, fresh=attempt > 0)
            prefix = self._floor(meta, kind)
            try:
                tail = [prefix + i for i in ids]  # type: ignore[operator]
            except TypeError:  # non-str ids (ints): the slower, general path
                tail = [prefix + str(i) for i in ids]
            users = [self._floor(meta, "user") + u for u in user_ids]
            try:  # not the _guard context manager: this is the hot path
                if meta.parent is None:  # a full version: its rows are plain keys
                    values = self._r.mget([self.keys.live(name), *users, *tail])
                elif (chain := self._chain(name, meta)) is not None:
                    values = self._read_pipelined(name, meta, chain, user_ids, kind, ids, [*users, *tail])
                else:
                    wu, wk = self.keys.writes_prefix(meta.root, "user"), self.keys.writes_prefix(meta.root, kind)
                    all_ids = [str(u) for u in user_ids] + [str(i) for i in ids]
                    hashes = [wu + u for u in all_ids[: len(user_ids)]] + [wk + i for i in all_ids[len(user_ids):]]
                    lin = flat(meta.lineage)
                    keys = [self.keys.live(name), self.keys.above_floor(meta.root, "user"),
                            self.keys.above_floor(meta.root, kind), *users, *tail, *hashes]
                    values = self._read(keys=keys, args=[len(lin), *lin, len(user_ids), *all_ids])
            except redis.exceptions.RedisError as exc:
                raise self._unavailable(exc, "reading embeddings") from None
            if values[0] == meta.token:
                return name, meta, values
            self._meta_cache.pop(name, None)
            self._chains.pop(name, None)
            if version is not None and values[0] is None:
                raise NotFound(f"embedding version {version!r} does not exist in {self._where}")
        raise BackendUnavailable("embedding versions changed three times during one read; retry")

    def _chain(self, name: str, meta: _Meta) -> list[int] | None:
        """Seqs of ``name`` and its ancestors whose writes are not folded into the floor yet, newest first;
        None when the read script must be used (``incremental_read=script``, or a link without a read hash).

        Folding goes in ascending seq and marks a version floored after its writes moved, so the walk stops
        at the first floored ancestor (or one whose metadata gc already forgot, which it does after a fold)."""
        if self.settings.incremental_read != "pipeline":
            return None
        cached = self._chains.get(name)
        if cached is not None and time.monotonic() - cached[1] < CHAIN_TTL_S:
            return cached[0]
        chain: list[int] | None = []
        link: str | None = name
        with self._guard("reading version metadata"):
            while link is not None and chain is not None and len(chain) < 10_000:
                raw = self._r.hmget(self.keys.meta(link), ["seq", "floored", "rh", "parent"])
                if raw[0] is None or raw[1] == b"1":
                    break
                if raw[2] != b"1":
                    chain = None  # written before read hashes existed: the script reads it
                    break
                chain.append(int(raw[0]))
                link = raw[3].decode() if raw[3] else None
        if len(self._chains) > 1000:
            self._chains.clear()
        self._chains[name] = (chain, time.monotonic())
        return chain

    def _read_pipelined(self, name: str, meta: _Meta, chain: list[int], user_ids: list[str], kind: Kind,
                        ids: Sequence[str], floor_keys: list[str]) -> list[Any]:
        """[token, one value per id] of an incremental version without a script: ONE MULTI/EXEC (atomic, so
        consistent across the ids) of GET token, MGET of the floor keys and, for each unfolded version of
        the lineage (newest first), an HMGET of its read hash; per id the newest write found wins (b"" =
        forgotten: no value), else the floor value. The same rule as the read script and the other stores."""
        fields = ["u:" + str(u) for u in user_ids] + [KIND_TAG[kind] + ":" + str(i) for i in ids]
        commands: list[tuple[Any, ...]] = [("GET", self.keys.live(name))]
        if fields:
            commands.append(("MGET", *floor_keys))
            commands += [("HMGET", self.keys.read_hash(meta.root, seq), *fields) for seq in chain]
        res = self._transaction(commands)
        if not fields:
            return [res[0]]
        values: list[Any] = [res[0], *res[1]]
        pending = range(len(fields))
        for writes in res[2:]:
            left = []
            for j in pending:
                v = writes[j]
                if v is None:
                    left.append(j)
                else:
                    values[1 + j] = v or None
            pending = left  # type: ignore[assignment]
            if not pending:
                break
        return values

    def _transaction(self, commands: list[tuple[Any, ...]]) -> list[Any]:
        """The replies of ``commands`` run in one MULTI/EXEC, sent in one write on a pooled connection.

        redis-py's transaction pipeline costs ~0.3 ms more here, most of it re-checking every argument's type
        before packing; the arguments are str, so hiredis packs them as they are. A connection error
        disconnects and retries once on a fresh connection (reads are idempotent)."""
        packed = b"".join(_pack(c) for c in [("MULTI",), *commands, ("EXEC",)])
        for attempt in (0, 1):
            conn = self._pool.get_connection()
            try:
                conn.send_packed_command([packed])
                for _ in range(len(commands) + 1):  # +OK for MULTI, then QUEUED per command
                    conn.read_response()
                replies = conn.read_response()
                break
            except (redis.exceptions.ConnectionError, redis.exceptions.TimeoutError):
                conn.disconnect()
                if attempt:
                    raise
            except BaseException:  # e.g. an error reply: the rest of the replies are unread, drop the connection
                conn.disconnect()
                raise
            finally:
                self._pool.release(conn)
        if replies is None or len(replies) != len(commands):
            raise redis.exceptions.ResponseError("a read transaction was aborted")
        for reply in replies:
            if isinstance(reply, Exception):
                raise reply
        return list(replies)

    def lookup(self, user_id: str, item_ids: Sequence[str], version: str | None = None) -> Lookup:
        name, meta, values = self._mget_version(version, [str(user_id)], "item", item_ids)
        if len(meta.dims) < 2:  # cached before the version declared both kinds
            meta = self._meta(name, fresh=True)
        raw_user = values[1]
        user = decode(raw_user, meta.dims["user"], meta.dtype) if raw_user is not None else None
        idim = meta.dims.get("item", 0)
        items = np.zeros((len(item_ids), idim), dtype=np.float32)
        missing = decode_into(items, values[2:], idim, meta.dtype)
        return Lookup(version=name, user=user, items=items, missing_items=missing)

    def get_many(
        self, kind: Kind, ids: Sequence[str], version: str | None = None
    ) -> tuple[np.ndarray, list[int]]:
        check_kind(kind)
        name = version or self._current(self.settings.pointer_ttl_s)
        meta = self._meta(name)
        if kind not in meta.dims:  # cached before the version declared this kind
            meta = self._meta(name, fresh=True)
        dim = meta.dims.get(kind, 0)
        out = np.zeros((len(ids), dim), dtype=np.float32)
        missing: list[int] = []
        step = max(1, self.settings.write_chunk)
        for start in range(0, len(ids), step):  # each chunk proves its own version is intact
            chunk = ids[start : start + step]
            _, _, values = self._mget_version(name, [], kind, chunk)
            missing.extend(start + i for i in decode_into(out[start : start + len(chunk)], values[1:], dim,
                                                          meta.dtype))
        return out, missing

    def versions(self) -> list[str]:
        with self._guard("listing versions"):
            return [v.decode() for v in self._r.zrange(self.keys.versions, 0, -1)]

    # -- maintenance --------------------------------------------------------------------------
    def gc(self, keep: int, protect: Collection[str] = ()) -> list[str]:
        if keep < 0:
            raise DataError(f"keep must be >= 0, got {keep}")
        doomed: list[str] = []
        plans: list[Any] = []
        keys = self.keys

        def retire(pipe: redis.client.Pipeline) -> None:
            # WATCHing the pointer: a publish meanwhile aborts and re-plans, so the current
            # version is never retired. Tokens first: from then on no reader accepts a doomed
            # version; every doomed version becomes a ghost, and the rest of gc works on ghosts,
            # so a gc that dies halfway is finished by the next one.
            doomed.clear()
            plans.clear()
            names = [v.decode() for v in pipe.zrange(keys.versions, 0, -1)]
            ghosts = [v.decode() for v in pipe.zrange(keys.ghosts, 0, -1)]
            raw = pipe.get(keys.current)
            current = raw.decode() if raw is not None else None
            nodes, lost = [], []
            for n, name in enumerate(names + ghosts):
                f = {k.decode(): v.decode() for k, v in pipe.hgetall(keys.meta(name)).items()}
                if not f:  # a declare that died before its metadata
                    lost.append(name)
                    continue
                retired = f.get("retired") == "1" or name in ghosts
                if "seq" not in f:  # a full version written before incremental versions: its own tree
                    nodes.append(Node(name, -n - 1, name, ((-n - 1, -n - 1),), float(f.get("created", 0.0)), True,
                                      retired))
                    continue
                nodes.append(Node(name, int(f["seq"]), f.get("root", name), decode_lineage(f.get("lineage", "")),
                                  float(f.get("created", 0.0)), f.get("floored") == "1", retired))
            plan = plan_gc(nodes, current, keep, protect)
            plans.append(plan)
            doomed.extend(plan.doomed)
            pipe.multi()
            for name in plan.doomed:
                pipe.delete(keys.live(name))
                pipe.hset(keys.meta(name), "retired", 1)
                pipe.zrem(keys.versions, name)
                pipe.zadd(keys.ghosts, {name: 0})
            for name in lost:
                pipe.zrem(keys.versions, name)
                pipe.zrem(keys.ghosts, name)

        with self._guard("deleting old versions"):
            self._r.transaction(retire, keys.current)
            plan = plans[0]
            for root in plan.drop_trees:
                self._unlink_matching(keys.tree_glob(root))
                self._unlink_matching(keys.version_glob(root))  # a legacy version's rows live here
            for node in plan.fold:  # ascending seq: a newer fold overwrites an older one's floor value
                for kind in KINDS:
                    self._settle_writes(node, kind, "fold")
                pipe = self._r.pipeline(transaction=False)
                pipe.hset(keys.meta(node.name), "floored", 1)
                pipe.delete(keys.index(node.name, "user"), keys.index(node.name, "item"))
                pipe.execute()
            for node in plan.dead:
                for kind in KINDS:
                    self._settle_writes(node, kind, "drop")
            for node in plan.forget:
                self._r.delete(keys.meta(node.name), keys.live(node.name), keys.index(node.name, "user"),
                               keys.index(node.name, "item"))
                self._r.zrem(keys.ghosts, node.name)
                self._r.zrem(keys.versions, node.name)
                self._meta_cache.pop(node.name, None)
        return doomed

    def _settle_writes(self, node: Node, kind: Kind, how: str) -> None:
        """Fold a version's writes of ``kind`` into the floor, or drop them (gc)."""
        floor, writes = self.keys.floor_prefix(node.root, kind), self.keys.writes_prefix(node.root, kind)
        for chunk in self._index_chunks(node.name, kind):
            self._settle(keys=[self.keys.above_floor(node.root, kind), self.keys.read_hash(node.root, node.seq),
                               *(k for i in chunk for k in (floor + i, writes + i))],
                         args=[node.seq, how, KIND_TAG[kind] + ":", *chunk])

    def _index_chunks(self, version: str, kind: Kind) -> Iterator[list[str]]:
        key, start = self.keys.index(version, kind), 0
        while True:
            chunk = [v.decode() for v in self._r.lrange(key, start, start + _UNLINK_BATCH - 1)]
            if not chunk:
                return
            yield list(dict.fromkeys(chunk))
            start += _UNLINK_BATCH

    def _unlink_matching(self, pattern: str) -> None:
        batch: list[bytes] = []
        for key in self._r.scan_iter(match=pattern, count=_UNLINK_BATCH):
            batch.append(key)
            if len(batch) >= _UNLINK_BATCH:
                self._r.unlink(*batch)
                batch.clear()
        if batch:
            self._r.unlink(*batch)

    def health(self) -> bool:
        try:
            return bool(self._r.ping())
        except redis.exceptions.RedisError:
            return False

    def close(self) -> None:
        self._pool.disconnect()
