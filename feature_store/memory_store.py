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


@dataclass
class _Version:
    dims: dict[Kind, int]
    dtype: str
    created: float
    tables: dict[Kind, dict[str, bytes]] = field(default_factory=lambda: {k: {} for k in KINDS})


@dataclass
class _Space:
    """One namespace's data. Guarded by ``lock``."""

    lock: threading.RLock = field(default_factory=threading.RLock)
    versions: dict[str, _Version] = field(default_factory=dict)  # insertion order = creation order
    current: str | None = None


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
        if v is None:
            raise NotFound(f"embedding version {version!r} does not exist")
        return version, v

    def declare(self, version: str, dims: dict[Kind, int]) -> None:
        check_name(version, "version")
        dims = check_dims(dims)
        with self._space.lock:
            v = self._space.versions.get(version)
            if v is None:
                self._space.versions[version] = _Version(dict(dims), self.dtype, time.time())
                return
            for kind, dim in dims.items():
                if v.dims.get(kind, dim) != dim:
                    raise Conflict(f"version {version!r} declares {kind} dimension {v.dims[kind]}, not {dim}")
            v.dims.update(dims)

    def write(self, version: str, kind: Kind, ids: Sequence[str], vectors: np.ndarray) -> int:
        check_kind(kind)
        with self._space.lock:
            version, v = self._get(check_name(version, "version"))
            if version == self._space.current:
                raise Conflict(f"version {version!r} is live; write a new version and publish it")
            if kind not in v.dims:
                raise DataError(f"version {version!r} has no declared {kind} dimension; declare it first")
            wire = check_vectors(ids, vectors, v.dims[kind], v.dtype, f"{kind} vectors")
            v.tables[kind].update(zip(map(str, ids), encode_rows(wire), strict=True))
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
            counts: dict[Kind, int] = {k: len(v.tables[k]) for k in KINDS}
            return VersionInfo(name, dict(v.dims), v.dtype, counts, v.created)

    def lookup(self, user_id: str, item_ids: Sequence[str], version: str | None = None) -> Lookup:
        with self._space.lock:  # one snapshot: a concurrent publish cannot mix versions
            name, v = self._get(version)
            raw_user = v.tables["user"].get(str(user_id))
            user = decode(raw_user, v.dims["user"], v.dtype) if raw_user is not None else None
            items = np.zeros((len(item_ids), v.dims.get("item", 0)), dtype=np.float32)
            table = v.tables["item"]
            missing = decode_into(items, [table.get(str(i)) for i in item_ids], items.shape[1], v.dtype)
        return Lookup(version=name, user=user, items=items, missing_items=missing)

    def get_many(
        self, kind: Kind, ids: Sequence[str], version: str | None = None
    ) -> tuple[np.ndarray, list[int]]:
        check_kind(kind)
        with self._space.lock:
            _, v = self._get(version)
            out = np.zeros((len(ids), v.dims.get(kind, 0)), dtype=np.float32)
            table = v.tables[kind]
            missing = decode_into(out, [table.get(str(i)) for i in ids], out.shape[1], v.dtype)
        return out, missing

    def versions(self) -> list[str]:
        with self._space.lock:
            return list(self._space.versions)

    def gc(self, keep: int, protect: Collection[str] = ()) -> list[str]:
        if keep < 0:
            raise DataError(f"keep must be >= 0, got {keep}")
        with self._space.lock:
            names = list(self._space.versions)
            kept = set(names[max(0, len(names) - keep) :] if keep else [])
            doomed = [n for n in names if n not in kept and n != self._space.current and n not in protect]
            for n in doomed:
                del self._space.versions[n]
        return doomed

    def health(self) -> bool:
        return True
