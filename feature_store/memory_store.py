"""``memory://`` backend: one process, for tests and demos.

``memory://`` gives a private store; ``memory://NAME`` a store shared by every ``open_store`` call
with that name in this process (so a test can load vectors and hand the URL to serving).
Values are kept in the same wire format as the other backends, so float16 behaves identically.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Collection, Sequence
from dataclasses import dataclass, field

import numpy as np

from contracts.errors import Conflict, DataError, NotFound
from contracts.settings import FeatureStoreSettings
from contracts.urls import BackendUrl
from feature_store.base import KINDS, EmbeddingStore, Kind, Lookup, VersionInfo
from feature_store.codec import check_vectors, decode, decode_into, encode_rows, wire_dtype
from feature_store.keys import check_dims, check_kind, check_name, check_namespace
from feature_store.lineage import FLOOR, Intervals, Node, extend, pick, plan_gc


@dataclass
class _Version:
    dims: dict[Kind, int]
    dtype: str
    created: float
    seq: int
    root: str
    lineage: Intervals
    parent: str | None = None
    floored: bool = False
    retired: bool = False
    index: dict[Kind, set[str]] = field(default_factory=lambda: {k: set() for k in KINDS})  # ids written
    counts: dict[Kind, int] = field(default_factory=lambda: {k: 0 for k in KINDS})


@dataclass
class _Space:
    """One namespace's data. Guarded by ``lock``."""

    lock: threading.RLock = field(default_factory=threading.RLock)
    versions: dict[str, _Version] = field(default_factory=dict)  # insertion order = creation order (+ ghosts)
    current: str | None = None
    seq: int = 0
    # root -> kind -> id -> {seq: wire bytes (b"": forgotten)}
    data: dict[str, dict[Kind, dict[str, dict[int, bytes]]]] = field(default_factory=dict)


_SHARED: dict[tuple[str, str], _Space] = {}
_SHARED_LOCK = threading.Lock()


class MemoryStore(EmbeddingStore):
    @classmethod
    def from_url(cls, parsed: BackendUrl, settings: FeatureStoreSettings) -> MemoryStore:
        """``memory://NAME``: stores opened with the same NAME in one process share their data."""
        return cls(parsed.rest, namespace=settings.namespace, dtype=settings.dtype)

    def __init__(self, name: str = "", namespace: str = "mamdr", dtype: str = "float32") -> None:
        check_namespace(namespace)
        wire_dtype(dtype)
        self.dtype = dtype
        if name:
            with _SHARED_LOCK:
                self._space = _SHARED.setdefault((name, namespace), _Space())
        else:
            self._space = _Space()

    def _get(self, version: str | None) -> tuple[str, _Version]:
        sp = self._space
        if version is None:
            if sp.current is None:
                raise NotFound("no embedding version is published yet; load one (mamdr features load)")
            version = sp.current
        v = sp.versions.get(version)
        if v is None or v.retired:
            raise NotFound(f"embedding version {version!r} does not exist")
        return version, v

    def declare(self, version: str, dims: dict[Kind, int], parent: str | None = None) -> None:
        check_name(version, "version")
        dims = check_dims(dims)
        with self._space.lock:
            sp = self._space
            v = sp.versions.get(version)
            if v is None:
                sp.seq += 1
                if parent is None:
                    sp.versions[version] = _Version(dict(dims), self.dtype, time.time(), sp.seq, version,
                                                    ((sp.seq, sp.seq),), floored=True)
                    return
                _, p = self._get(check_name(parent, "parent version"))
                for kind, dim in dims.items():
                    if p.dims.get(kind, dim) != dim:
                        raise Conflict(f"version {version!r} declares {kind} dimension {dim}, its parent "
                                       f"{parent!r} {p.dims[kind]}")
                sp.versions[version] = _Version({**p.dims, **dims}, p.dtype, time.time(), sp.seq, p.root,
                                                extend(p.lineage, sp.seq), parent=parent)
                return
            if v.retired:
                raise Conflict(f"version {version!r} was deleted; declare a new version")
            if parent != v.parent and parent is not None:
                raise Conflict(f"version {version!r} has parent {v.parent!r}, not {parent!r}")
            for kind, dim in dims.items():
                if v.dims.get(kind, dim) != dim:
                    raise Conflict(f"version {version!r} declares {kind} dimension {v.dims[kind]}, not {dim}")
            v.dims.update(dims)

    def _put(self, version: str, kind: Kind, ids: Sequence[str], rows: list[bytes]) -> None:
        with self._space.lock:
            version, v = self._get(check_name(version, "version"))
            if version == self._space.current:
                raise Conflict(f"version {version!r} is live; write a new version and publish it")
            if kind not in v.dims:
                raise DataError(f"version {version!r} has no declared {kind} dimension; declare it first")
            table = self._space.data.setdefault(v.root, {k: {} for k in KINDS})[kind]
            seq = FLOOR if v.floored else v.seq
            keys = list(map(str, ids))
            for key, row in zip(keys, rows, strict=True):
                if seq == FLOOR and not row:
                    table.pop(key, None)
                else:
                    table.setdefault(key, {})[seq] = row
            if seq != FLOOR:
                v.index[kind].update(keys)
            v.counts[kind] += sum(1 for r in rows if r)

    def write(self, version: str, kind: Kind, ids: Sequence[str], vectors: np.ndarray) -> int:
        check_kind(kind)
        with self._space.lock:
            _, v = self._get(check_name(version, "version"))
            if kind not in v.dims:
                raise DataError(f"version {version!r} has no declared {kind} dimension; declare it first")
            wire = check_vectors(ids, vectors, v.dims[kind], v.dtype, f"{kind} vectors")
            self._put(version, kind, ids, encode_rows(wire))
        return len(ids)

    def forget(self, version: str, kind: Kind, ids: Sequence[str]) -> int:
        check_kind(kind)
        self._put(version, kind, ids, [b""] * len(ids))
        return len(ids)

    def publish(self, version: str) -> None:
        with self._space.lock:
            self._get(check_name(version, "version"))
            self._space.current = version

    def current_version(self) -> str | None:
        return self._space.current

    def dims(self, version: str | None = None) -> dict[Kind, int]:
        with self._space.lock:
            return dict(self._get(version)[1].dims)

    def describe(self, version: str | None = None) -> VersionInfo:
        with self._space.lock:
            name, v = self._get(version)
            if v.parent is None:  # a root: its rows are the floor until a fold rewrites it
                table = self._space.data.get(v.root, {})
                counts: dict[Kind, int] = {k: sum(1 for w in table.get(k, {}).values() if w.get(FLOOR))
                                           for k in KINDS}
            else:
                counts = dict(v.counts)
            return VersionInfo(name, dict(v.dims), v.dtype, counts, v.created, v.parent)

    def _values(self, v: _Version, kind: Kind, ids: Sequence[str]) -> list[bytes | None]:
        table = self._space.data.get(v.root, {}).get(kind, {})
        return [pick(table.get(str(i)), v.lineage) for i in ids]

    def lookup(self, user_id: str, item_ids: Sequence[str], version: str | None = None) -> Lookup:
        with self._space.lock:  # one snapshot: a concurrent publish cannot mix versions
            name, v = self._get(version)
            raw_user = self._values(v, "user", [user_id])[0]
            user = decode(raw_user, v.dims["user"], v.dtype) if raw_user is not None else None
            items = np.zeros((len(item_ids), v.dims.get("item", 0)), dtype=np.float32)
            missing = decode_into(items, self._values(v, "item", item_ids), items.shape[1], v.dtype)
        return Lookup(version=name, user=user, items=items, missing_items=missing)

    def get_many(
        self, kind: Kind, ids: Sequence[str], version: str | None = None
    ) -> tuple[np.ndarray, list[int]]:
        check_kind(kind)
        with self._space.lock:
            _, v = self._get(version)
            out = np.zeros((len(ids), v.dims.get(kind, 0)), dtype=np.float32)
            missing = decode_into(out, self._values(v, kind, ids), out.shape[1], v.dtype)
        return out, missing

    def versions(self) -> list[str]:
        with self._space.lock:
            return [n for n, v in self._space.versions.items() if not v.retired]

    def _settle(self, v: _Version, seq: int, fold: bool) -> None:
        """Move version ``seq``'s writes into the floor (``fold``) or delete them; an id left with no
        writes leaves its table (the Redis backend's settle script does the same)."""
        data = self._space.data.get(v.root, {})
        for kind in KINDS:
            table = data.get(kind, {})
            for key in v.index[kind]:
                writes = table.get(key)
                if writes is None or seq not in writes:
                    continue
                value = writes.pop(seq)
                if fold:
                    if value:
                        writes[FLOOR] = value
                    else:
                        writes.pop(FLOOR, None)
                if not writes:
                    del table[key]
        if fold:
            for kind in KINDS:
                v.index[kind] = set()
            v.floored = True

    def gc(self, keep: int, protect: Collection[str] = ()) -> list[str]:
        if keep < 0:
            raise DataError(f"keep must be >= 0, got {keep}")
        with self._space.lock:
            sp = self._space
            nodes = [Node(n, v.seq, v.root, v.lineage, v.created, v.floored, v.retired) for n, v in sp.versions.items()]
            plan = plan_gc(nodes, sp.current, keep, protect)
            for root in plan.drop_trees:
                sp.data.pop(root, None)
            for node in plan.fold:  # ascending seq: the newest fold wins
                self._settle(sp.versions[node.name], node.seq, fold=True)
            for node in plan.dead:
                self._settle(sp.versions[node.name], node.seq, fold=False)
            for node in plan.retire:
                sp.versions[node.name].retired = True
            for node in plan.forget:
                sp.versions.pop(node.name, None)
        return plan.doomed

    def health(self) -> bool:
        return True
