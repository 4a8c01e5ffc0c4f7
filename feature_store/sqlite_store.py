"""``file://PATH`` backend: SQLite in WAL mode, shared by several local processes (the quickstart).

PATH is a directory (``embeddings.sqlite3`` is created inside) or a file ending in .db/.sqlite/
.sqlite3. Vectors are stored as the same raw little-endian bytes as in Redis. WAL lets readers in
other processes run beside one writer; every read (pointer + vectors) happens in ONE read
transaction, so it sees one snapshot: a publish in another process is visible to the next lookup
and a lookup never mixes versions. gc runs in one transaction.

Incremental versions (feature_store/lineage.py): ``fs_writes`` holds one row per (tree, kind, id,
seq); seq 0 is the tree's floor. A read takes an id's rows of its tree and picks the newest on the
version's lineage. The tables are new (``fs_*``): a store of the older layout starts empty.
"""

from __future__ import annotations

import sqlite3
import threading
import time
from collections.abc import Collection, Iterator, Sequence
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from contracts.errors import BackendUnavailable, ConfigError, Conflict, DataError, NotFound
from contracts.settings import FeatureStoreSettings
from contracts.sqlite import enable_wal
from contracts.urls import BackendUrl
from feature_store.base import KINDS, EmbeddingStore, Kind, Lookup, VersionInfo
from feature_store.codec import check_vectors, decode, decode_into, encode_rows, wire_dtype
from feature_store.keys import KIND_TAG, check_dims, check_kind, check_name, check_namespace
from feature_store.lineage import FLOOR, Intervals, Node, decode_lineage, encode_lineage, extend, pick, plan_gc

DB_NAME = "embeddings.sqlite3"
_SQL_VARS = 900  # ids per IN (...) clause, under SQLite's host-parameter limit
_SCHEMA = """
CREATE TABLE IF NOT EXISTS fs_versions (
    ns TEXT NOT NULL, version TEXT NOT NULL, created REAL NOT NULL, dtype TEXT NOT NULL,
    dim_u INTEGER, dim_i INTEGER, seq INTEGER NOT NULL, root TEXT NOT NULL, parent TEXT,
    lineage TEXT NOT NULL, floored INTEGER NOT NULL, retired INTEGER NOT NULL DEFAULT 0,
    count_u INTEGER NOT NULL DEFAULT 0, count_i INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (ns, version)) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS fs_writes (
    ns TEXT NOT NULL, root TEXT NOT NULL, kind TEXT NOT NULL, id TEXT NOT NULL, seq INTEGER NOT NULL,
    vec BLOB NOT NULL, PRIMARY KEY (ns, root, kind, id, seq)) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS fs_writes_by_seq ON fs_writes (ns, root, seq);
CREATE TABLE IF NOT EXISTS fs_seq (ns TEXT PRIMARY KEY, seq INTEGER NOT NULL) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS fs_pointer (ns TEXT PRIMARY KEY, version TEXT NOT NULL) WITHOUT ROWID;
"""


@dataclass(frozen=True)
class _Row:
    name: str
    dims: dict[Kind, int]
    dtype: str
    seq: int
    root: str
    parent: str | None
    lineage: Intervals
    floored: bool


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
                timeout = max(5.0, self.settings.connect_timeout_s)
                conn = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False, timeout=timeout)
                try:
                    enable_wal(conn, timeout)  # the trainer's ranks and serving may open a new file at once
                    conn.execute("PRAGMA synchronous=NORMAL")
                except sqlite3.Error:
                    conn.close()
                    raise
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

    _COLS = "version, dim_u, dim_i, dtype, seq, root, parent, lineage, floored"

    def _row(self, r: tuple) -> _Row:
        dims: dict[Kind, int] = {k: int(d) for k, d in zip(KINDS, r[1:3], strict=True) if d is not None}
        return _Row(str(r[0]), dims, str(r[3]), int(r[4]), str(r[5]), r[6], decode_lineage(r[7]), bool(r[8]))

    def _version_row(self, db: sqlite3.Connection, version: str | None) -> _Row:
        if version is None:
            row = db.execute("SELECT version FROM fs_pointer WHERE ns=?", (self.ns,)).fetchone()
            if row is None:
                raise NotFound("no embedding version is published yet; load one (mamdr features load)")
            version = str(row[0])
        row = db.execute(f"SELECT {self._COLS} FROM fs_versions WHERE ns=? AND version=? AND retired=0",
                         (self.ns, version)).fetchone()
        if row is None:
            raise NotFound(f"embedding version {version!r} does not exist in {self.path}")
        return self._row(row)

    def _fetch(self, db: sqlite3.Connection, v: _Row, kind: Kind, ids: Sequence[str]) -> list[bytes | None]:
        found: dict[str, dict[int, bytes]] = {}
        keys = [str(i) for i in ids]
        uniq = list(dict.fromkeys(keys))
        for start in range(0, len(uniq), _SQL_VARS):
            part = uniq[start : start + _SQL_VARS]
            sql = (f"SELECT id, seq, vec FROM fs_writes WHERE ns=? AND root=? AND kind=? "
                   f"AND id IN ({','.join('?' * len(part))})")
            for key, seq, vec in db.execute(sql, (self.ns, v.root, KIND_TAG[kind], *part)):
                found.setdefault(key, {})[seq] = vec
        return [pick(found.get(k), v.lineage) for k in keys]

    # -- writes -------------------------------------------------------------------------------
    def declare(self, version: str, dims: dict[Kind, int], parent: str | None = None) -> None:
        check_name(version, "version")
        dims = check_dims(dims)
        with self._tx(write=True) as db:
            have = db.execute("SELECT parent, retired FROM fs_versions WHERE ns=? AND version=?",
                              (self.ns, version)).fetchone()
            if have is None:
                db.execute("INSERT OR IGNORE INTO fs_seq VALUES (?, 0)", (self.ns,))
                db.execute("UPDATE fs_seq SET seq = seq + 1 WHERE ns=?", (self.ns,))
                seq = int(db.execute("SELECT seq FROM fs_seq WHERE ns=?", (self.ns,)).fetchone()[0])
                if parent is None:
                    db.execute("INSERT INTO fs_versions (ns, version, created, dtype, seq, root, parent, lineage, "
                               "floored) VALUES (?,?,?,?,?,?,?,?,1)",
                               (self.ns, version, time.time(), self.settings.dtype, seq, version, None,
                                encode_lineage(((seq, seq),))))
                else:
                    p = self._version_row(db, check_name(parent, "parent version"))
                    for kind, dim in dims.items():
                        if p.dims.get(kind, dim) != dim:
                            raise Conflict(f"version {version!r} declares {kind} dimension {dim}, its parent "
                                           f"{parent!r} {p.dims[kind]}")
                    db.execute("INSERT INTO fs_versions (ns, version, created, dtype, dim_u, dim_i, seq, root, "
                               "parent, lineage, floored) VALUES (?,?,?,?,?,?,?,?,?,?,0)",
                               (self.ns, version, time.time(), p.dtype, p.dims.get("user"), p.dims.get("item"),
                                seq, p.root, parent, encode_lineage(extend(p.lineage, seq))))
            elif have[1]:
                raise Conflict(f"version {version!r} was deleted; declare a new version")
            elif parent is not None and parent != have[0]:
                raise Conflict(f"version {version!r} has parent {have[0]!r}, not {parent!r}")
            v = self._version_row(db, version)
            for kind, dim in dims.items():
                if v.dims.get(kind, dim) != dim:
                    raise Conflict(f"version {version!r} declares {kind} dimension {v.dims[kind]}, not {dim}")
                db.execute(f"UPDATE fs_versions SET dim_{KIND_TAG[kind]}=? WHERE ns=? AND version=?",
                           (dim, self.ns, version))

    def _put(self, version: str, kind: Kind, ids: Sequence[str], vectors: np.ndarray | None) -> int:
        check_kind(kind)
        check_name(version, "version")
        with self._tx(write=True) as db:
            v = self._version_row(db, version)
            live = db.execute("SELECT version FROM fs_pointer WHERE ns=?", (self.ns,)).fetchone()
            if live is not None and live[0] == version:
                raise Conflict(f"version {version!r} is live; write a new version and publish it")
            if kind not in v.dims:
                raise DataError(f"version {version!r} has no declared {kind} dimension; declare it first")
            tag, seq = KIND_TAG[kind], FLOOR if v.floored else v.seq
            if vectors is None:
                if seq == FLOOR:
                    db.executemany("DELETE FROM fs_writes WHERE ns=? AND root=? AND kind=? AND id=? AND seq=0",
                                   ((self.ns, v.root, tag, str(i)) for i in ids))
                else:
                    db.executemany("INSERT OR REPLACE INTO fs_writes VALUES (?,?,?,?,?,?)",
                                   ((self.ns, v.root, tag, str(i), seq, b"") for i in ids))
                return len(ids)
            rows = encode_rows(check_vectors(ids, vectors, v.dims[kind], v.dtype, f"{kind} vectors"))
            db.executemany("INSERT OR REPLACE INTO fs_writes VALUES (?,?,?,?,?,?)",
                           ((self.ns, v.root, tag, str(i), seq, r) for i, r in zip(ids, rows, strict=True)))
            db.execute(f"UPDATE fs_versions SET count_{tag} = count_{tag} + ? WHERE ns=? AND version=?",
                       (len(rows), self.ns, version))
        return len(rows)

    def write(self, version: str, kind: Kind, ids: Sequence[str], vectors: np.ndarray) -> int:
        return self._put(version, kind, ids, vectors)

    def forget(self, version: str, kind: Kind, ids: Sequence[str]) -> int:
        return self._put(version, kind, ids, None)

    def publish(self, version: str) -> None:
        check_name(version, "version")
        with self._tx(write=True) as db:
            self._version_row(db, version)
            db.execute("INSERT OR REPLACE INTO fs_pointer VALUES (?,?)", (self.ns, version))

    # -- reads --------------------------------------------------------------------------------
    def current_version(self) -> str | None:
        with self._tx() as db:
            row = db.execute("SELECT version FROM fs_pointer WHERE ns=?", (self.ns,)).fetchone()
        return str(row[0]) if row else None

    def dims(self, version: str | None = None) -> dict[Kind, int]:
        with self._tx() as db:
            return self._version_row(db, version).dims

    def describe(self, version: str | None = None) -> VersionInfo:
        with self._tx() as db:
            v = self._version_row(db, version)
            created, cu, ci = db.execute("SELECT created, count_u, count_i FROM fs_versions WHERE ns=? AND "
                                         "version=?", (self.ns, v.name)).fetchone()
        return VersionInfo(v.name, v.dims, v.dtype, {"user": int(cu), "item": int(ci)}, float(created), v.parent)

    def lookup(self, user_id: str, item_ids: Sequence[str], version: str | None = None) -> Lookup:
        with self._tx() as db:  # one snapshot: pointer and vectors agree
            v = self._version_row(db, version)
            raw_user = self._fetch(db, v, "user", [str(user_id)])[0]
            values = self._fetch(db, v, "item", item_ids)
        user = decode(raw_user, v.dims["user"], v.dtype) if raw_user is not None else None
        items = np.zeros((len(item_ids), v.dims.get("item", 0)), dtype=np.float32)
        missing = decode_into(items, values, items.shape[1], v.dtype)
        return Lookup(version=v.name, user=user, items=items, missing_items=missing)

    def get_many(
        self, kind: Kind, ids: Sequence[str], version: str | None = None
    ) -> tuple[np.ndarray, list[int]]:
        check_kind(kind)
        with self._tx() as db:
            v = self._version_row(db, version)
            values = self._fetch(db, v, kind, ids)
        out = np.zeros((len(ids), v.dims.get(kind, 0)), dtype=np.float32)
        return out, decode_into(out, values, out.shape[1], v.dtype)

    def versions(self) -> list[str]:
        with self._tx() as db:
            rows = db.execute("SELECT version FROM fs_versions WHERE ns=? AND retired=0 ORDER BY created, seq",
                              (self.ns,)).fetchall()
        return [str(r[0]) for r in rows]

    # -- maintenance --------------------------------------------------------------------------
    def gc(self, keep: int, protect: Collection[str] = ()) -> list[str]:
        if keep < 0:
            raise DataError(f"keep must be >= 0, got {keep}")
        ns = self.ns
        with self._tx(write=True) as db:
            nodes = [Node(str(n), int(seq), str(root), decode_lineage(lin), float(c), bool(f), bool(r))
                     for n, seq, root, lin, c, f, r in db.execute(
                         "SELECT version, seq, root, lineage, created, floored, retired FROM fs_versions WHERE ns=?",
                         (ns,))]
            row = db.execute("SELECT version FROM fs_pointer WHERE ns=?", (ns,)).fetchone()
            plan = plan_gc(nodes, row[0] if row else None, keep, protect)
            for root in plan.drop_trees:
                db.execute("DELETE FROM fs_writes WHERE ns=? AND root=?", (ns, root))
            for node in plan.fold:  # ascending seq: a newer fold overwrites an older one's floor value
                db.execute("DELETE FROM fs_writes WHERE ns=? AND root=? AND seq=0 AND (kind, id) IN "
                           "(SELECT kind, id FROM fs_writes WHERE ns=? AND root=? AND seq=?)",
                           (ns, node.root, ns, node.root, node.seq))
                db.execute("DELETE FROM fs_writes WHERE ns=? AND root=? AND seq=? AND vec=X''",
                           (ns, node.root, node.seq))
                db.execute("UPDATE fs_writes SET seq=0 WHERE ns=? AND root=? AND seq=?", (ns, node.root, node.seq))
                db.execute("UPDATE fs_versions SET floored=1 WHERE ns=? AND version=?", (ns, node.name))
            for node in plan.dead:
                db.execute("DELETE FROM fs_writes WHERE ns=? AND root=? AND seq=?", (ns, node.root, node.seq))
            for node in plan.retire:
                db.execute("UPDATE fs_versions SET retired=1 WHERE ns=? AND version=?", (ns, node.name))
            for node in plan.forget:
                db.execute("DELETE FROM fs_versions WHERE ns=? AND version=?", (ns, node.name))
        return plan.doomed

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
