"""``file://PATH`` backend: SQLite in WAL mode, shared by several local processes (the quickstart).

PATH is a directory (``embeddings.sqlite3`` is created inside) or a file ending in .db/.sqlite/
.sqlite3. Vectors are stored as the same raw little-endian bytes as in Redis. WAL lets readers in
other processes run beside one writer; every read (pointer + vectors) happens in ONE read
transaction, so it sees one snapshot: a publish in another process is visible to the next lookup
and a lookup never mixes versions. gc deletes a version in one transaction.
"""

from __future__ import annotations

import sqlite3
import threading
import time
from collections.abc import Collection, Iterator, Sequence
from contextlib import contextmanager, suppress
from pathlib import Path

import numpy as np

from contracts.errors import BackendUnavailable, ConfigError, Conflict, DataError, NotFound
from contracts.settings import FeatureStoreSettings
from contracts.urls import BackendUrl
from feature_store.base import KINDS, EmbeddingStore, Kind, Lookup, VersionInfo
from feature_store.codec import check_vectors, decode, decode_into, encode_rows, wire_dtype
from feature_store.keys import KIND_TAG, check_dims, check_kind, check_name, check_namespace

DB_NAME = "embeddings.sqlite3"
_SQL_VARS = 900  # ids per IN (...) clause, under SQLite's host-parameter limit
_SCHEMA = """
CREATE TABLE IF NOT EXISTS versions (
    ns TEXT NOT NULL, version TEXT NOT NULL, created REAL NOT NULL, dtype TEXT NOT NULL,
    dim_u INTEGER, dim_i INTEGER, PRIMARY KEY (ns, version)) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS vectors (
    ns TEXT NOT NULL, version TEXT NOT NULL, kind TEXT NOT NULL, id TEXT NOT NULL, vec BLOB NOT NULL,
    PRIMARY KEY (ns, version, kind, id)) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS pointer (ns TEXT PRIMARY KEY, version TEXT NOT NULL) WITHOUT ROWID;
"""


def db_path(path: Path) -> Path:
    """The database file for a file:// path (a directory gets ``embeddings.sqlite3`` inside)."""
    is_file = path.suffix in {".db", ".sqlite", ".sqlite3"} or path.is_file()
    try:
        (path.parent if is_file else path).mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ConfigError(f"cannot create the feature store folder for {path}: {exc}; "
                          "set MAMDR_FEATURE_STORE__URL to a writable file://PATH") from None
    return path if is_file else path / DB_NAME


class SqliteStore(EmbeddingStore):
    @classmethod
    def from_url(cls, parsed: BackendUrl, settings: FeatureStoreSettings) -> SqliteStore:
        return cls(parsed.path, settings)

    def __init__(self, path: Path, settings: FeatureStoreSettings | None = None) -> None:
        self.settings = s = settings or FeatureStoreSettings()
        self.ns = check_namespace(s.namespace)
        wire_dtype(s.dtype)
        self.path = db_path(Path(path))
        self._local = threading.local()
        self._all: list[sqlite3.Connection] = []
        self._lock = threading.Lock()
        with self._tx(write=True) as db:
            for stmt in _SCHEMA.split(";"):
                if stmt.strip():
                    db.execute(stmt)

    # -- plumbing -----------------------------------------------------------------------------
    def _conn(self) -> sqlite3.Connection:
        conn = getattr(self._local, "conn", None)
        if conn is None:
            try:
                conn = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False,
                                       timeout=max(5.0, self.settings.connect_timeout_s))
                conn.execute("PRAGMA journal_mode=WAL")
                conn.execute("PRAGMA synchronous=NORMAL")
            except sqlite3.Error as exc:
                raise BackendUnavailable(f"cannot open feature store file {self.path}: {exc}") from None
            self._local.conn = conn
            with self._lock:
                self._all.append(conn)
        return conn

    @contextmanager
    def _tx(self, write: bool = False) -> Iterator[sqlite3.Connection]:
        db = self._conn()
        try:
            db.execute("BEGIN IMMEDIATE" if write else "BEGIN")
            try:
                yield db
            except BaseException:
                db.execute("ROLLBACK")
                raise
            db.execute("COMMIT")
        except sqlite3.Error as exc:
            if db.in_transaction:
                with suppress(sqlite3.Error):
                    db.execute("ROLLBACK")
            raise BackendUnavailable(f"feature store file {self.path} failed: {exc}") from None

    def _version_row(self, db: sqlite3.Connection, version: str | None) -> tuple[str, dict[Kind, int], str]:
        if version is None:
            row = db.execute("SELECT version FROM pointer WHERE ns=?", (self.ns,)).fetchone()
            if row is None:
                raise NotFound("no embedding version is published yet; load one (mamdr features load)")
            version = str(row[0])
        row = db.execute("SELECT dim_u, dim_i, dtype FROM versions WHERE ns=? AND version=?",
                         (self.ns, version)).fetchone()
        if row is None:
            raise NotFound(f"embedding version {version!r} does not exist in {self.path}")
        dims: dict[Kind, int] = {k: int(d) for k, d in zip(KINDS, row[:2], strict=True) if d is not None}
        return version, dims, str(row[2])

    def _fetch(
        self, db: sqlite3.Connection, version: str, kind: Kind, ids: Sequence[str]
    ) -> list[bytes | None]:
        found: dict[str, bytes] = {}
        keys = [str(i) for i in ids]
        uniq = list(dict.fromkeys(keys))
        for start in range(0, len(uniq), _SQL_VARS):
            part = uniq[start : start + _SQL_VARS]
            sql = (f"SELECT id, vec FROM vectors WHERE ns=? AND version=? AND kind=? "
                   f"AND id IN ({','.join('?' * len(part))})")
            found.update(db.execute(sql, (self.ns, version, KIND_TAG[kind], *part)).fetchall())
        return [found.get(k) for k in keys]

    # -- writes -------------------------------------------------------------------------------
    def declare(self, version: str, dims: dict[Kind, int]) -> None:
        check_name(version, "version")
        dims = check_dims(dims)
        with self._tx(write=True) as db:
            db.execute("INSERT OR IGNORE INTO versions (ns, version, created, dtype) VALUES (?,?,?,?)",
                       (self.ns, version, time.time(), self.settings.dtype))
            _, have, _ = self._version_row(db, version)
            for kind, dim in dims.items():
                if have.get(kind, dim) != dim:
                    raise Conflict(f"version {version!r} declares {kind} dimension {have[kind]}, not {dim}")
                db.execute(f"UPDATE versions SET dim_{KIND_TAG[kind]}=? WHERE ns=? AND version=?",
                           (dim, self.ns, version))

    def write(self, version: str, kind: Kind, ids: Sequence[str], vectors: np.ndarray) -> int:
        check_kind(kind)
        check_name(version, "version")
        with self._tx(write=True) as db:
            _, dims, dtype = self._version_row(db, version)
            live = db.execute("SELECT version FROM pointer WHERE ns=?", (self.ns,)).fetchone()
            if live is not None and live[0] == version:
                raise Conflict(f"version {version!r} is live; write a new version and publish it")
            if kind not in dims:
                raise DataError(f"version {version!r} has no declared {kind} dimension; declare it first")
            rows = encode_rows(check_vectors(ids, vectors, dims[kind], dtype, f"{kind} vectors"))
            tag = KIND_TAG[kind]
            db.executemany("INSERT OR REPLACE INTO vectors VALUES (?,?,?,?,?)",
                           ((self.ns, version, tag, str(i), r) for i, r in zip(ids, rows, strict=True)))
        return len(rows)

    def publish(self, version: str) -> None:
        check_name(version, "version")
        with self._tx(write=True) as db:
            self._version_row(db, version)
            db.execute("INSERT OR REPLACE INTO pointer VALUES (?,?)", (self.ns, version))

    # -- reads --------------------------------------------------------------------------------
    def current_version(self) -> str | None:
        with self._tx() as db:
            row = db.execute("SELECT version FROM pointer WHERE ns=?", (self.ns,)).fetchone()
        return str(row[0]) if row else None

    def dims(self, version: str | None = None) -> dict[Kind, int]:
        with self._tx() as db:
            return self._version_row(db, version)[1]

    def describe(self, version: str | None = None) -> VersionInfo:
        with self._tx() as db:
            name, dims, dtype = self._version_row(db, version)
            created = db.execute("SELECT created FROM versions WHERE ns=? AND version=?",
                                 (self.ns, name)).fetchone()[0]
            counts: dict[Kind, int] = {
                k: int(db.execute("SELECT COUNT(*) FROM vectors WHERE ns=? AND version=? AND kind=?",
                                  (self.ns, name, KIND_TAG[k])).fetchone()[0])
                for k in KINDS
            }
        return VersionInfo(name, dims, dtype, counts, float(created))

    def lookup(self, user_id: str, item_ids: Sequence[str], version: str | None = None) -> Lookup:
        with self._tx() as db:  # one snapshot: pointer and vectors agree
            name, dims, dtype = self._version_row(db, version)
            raw_user = self._fetch(db, name, "user", [str(user_id)])[0]
            values = self._fetch(db, name, "item", item_ids)
        user = decode(raw_user, dims["user"], dtype) if raw_user is not None else None
        items = np.zeros((len(item_ids), dims.get("item", 0)), dtype=np.float32)
        missing = decode_into(items, values, items.shape[1], dtype)
        return Lookup(version=name, user=user, items=items, missing_items=missing)

    def get_many(
        self, kind: Kind, ids: Sequence[str], version: str | None = None
    ) -> tuple[np.ndarray, list[int]]:
        check_kind(kind)
        with self._tx() as db:
            name, dims, dtype = self._version_row(db, version)
            values = self._fetch(db, name, kind, ids)
        out = np.zeros((len(ids), dims.get(kind, 0)), dtype=np.float32)
        return out, decode_into(out, values, out.shape[1], dtype)

    def versions(self) -> list[str]:
        with self._tx() as db:
            rows = db.execute("SELECT version FROM versions WHERE ns=? ORDER BY created, version",
                              (self.ns,)).fetchall()
        return [str(r[0]) for r in rows]

    # -- maintenance --------------------------------------------------------------------------
    def gc(self, keep: int, protect: Collection[str] = ()) -> list[str]:
        if keep < 0:
            raise DataError(f"keep must be >= 0, got {keep}")
        with self._tx(write=True) as db:
            names = [str(r[0]) for r in db.execute(
                "SELECT version FROM versions WHERE ns=? ORDER BY created, version", (self.ns,))]
            row = db.execute("SELECT version FROM pointer WHERE ns=?", (self.ns,)).fetchone()
            current = row[0] if row else None
            kept = set(names[max(0, len(names) - keep) :] if keep else [])
            doomed = [n for n in names if n not in kept and n != current and n not in protect]
            for n in doomed:
                db.execute("DELETE FROM vectors WHERE ns=? AND version=?", (self.ns, n))
                db.execute("DELETE FROM versions WHERE ns=? AND version=?", (self.ns, n))
        return doomed

    def health(self) -> bool:
        try:
            with self._tx() as db:
                db.execute("SELECT 1").fetchone()
            return True
        except BackendUnavailable:
            return False

    def close(self) -> None:
        with self._lock:
            for conn in self._all:
                conn.close()
            self._all.clear()
        self._local = threading.local()
