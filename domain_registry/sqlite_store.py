"""``sqlite://PATH``: the embedded registry (default), shared by local processes through one file.

Durability: WAL journal with ``synchronous=FULL``; every write (row changes, its audit entry and the
change counter) is one ``BEGIN IMMEDIATE`` transaction, so a process killed with SIGKILL mid-write
leaves the old state or the new one, never a mix. ``BEGIN IMMEDIATE`` takes the write lock before
reading, so check-then-write (a create racing a create, promotes racing promotes) is serialized
across threads and processes; ``busy_timeout`` makes the loser wait instead of failing. A partial
unique index makes "at most one live version" a database invariant, not just a code path.
"""

from __future__ import annotations

import json
import sqlite3
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any, TypeVar

from contracts.errors import BackendUnavailable, ConfigError, Conflict, NotFound
from contracts.settings import RegistrySettings
from contracts.sqlite import enable_wal
from contracts.urls import BackendUrl
from domain_registry import rules
from domain_registry.base import AuditEntry, Domain, DomainStatus, ModelVersion, Registry

T = TypeVar("T")

SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value INTEGER NOT NULL);
INSERT OR IGNORE INTO meta (key, value) VALUES ('change_counter', 0), ('schema_version', 1);
CREATE TABLE IF NOT EXISTS domains (
    id TEXT PRIMARY KEY,
    display_name TEXT NOT NULL,
    status TEXT NOT NULL CHECK (status IN ('active', 'paused', 'retired')),
    created_at REAL NOT NULL,
    updated_at REAL NOT NULL,
    settings TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS models (
    id TEXT PRIMARY KEY,
    parent TEXT,
    created_at REAL NOT NULL,
    artifact_uri TEXT NOT NULL,
    delta_checksums TEXT NOT NULL,
    metrics TEXT NOT NULL,
    status TEXT NOT NULL CHECK (status IN ('candidate', 'live', 'superseded', 'rolled_back')),
    promoted_at REAL,
    live_seq INTEGER,
    registered_seq INTEGER NOT NULL
);
CREATE UNIQUE INDEX IF NOT EXISTS models_one_live ON models (status) WHERE status = 'live';
CREATE INDEX IF NOT EXISTS models_by_registration ON models (registered_seq);
CREATE TABLE IF NOT EXISTS audit (
    seq INTEGER PRIMARY KEY,
    ts REAL NOT NULL,
    actor TEXT NOT NULL,
    action TEXT NOT NULL,
    target TEXT NOT NULL,
    detail TEXT NOT NULL
);
"""

_DOMAIN_COLS = "id, display_name, status, created_at, updated_at, settings"
_MODEL_COLS = "id, parent, created_at, artifact_uri, delta_checksums, metrics, status, promoted_at"


def _domain(row: Sequence[Any]) -> Domain:
    return Domain(id=row[0], display_name=row[1], status=row[2], created_at=row[3], updated_at=row[4],
                  settings=json.loads(row[5]))


def _model(row: Sequence[Any]) -> ModelVersion:
    return ModelVersion(id=row[0], parent=row[1], created_at=row[2], artifact_uri=row[3],
                        delta_checksums=json.loads(row[4]), metrics=json.loads(row[5]), status=row[6],
                        promoted_at=row[7])


class SqliteRegistry(Registry):
    """One connection per instance, guarded by a lock (FastAPI runs sync endpoints in threads)."""

    @classmethod
    def from_url(cls, parsed: BackendUrl, settings: RegistrySettings) -> SqliteRegistry:
        return cls(parsed.path)

    def __init__(self, path: str | Path, busy_timeout_s: float = 10.0) -> None:
        self.path = Path(path)
        self._lock = threading.RLock()
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._conn = sqlite3.connect(str(self.path), timeout=busy_timeout_s, isolation_level=None,
                                         check_same_thread=False)
        except (OSError, sqlite3.Error) as exc:
            raise ConfigError(f"cannot open the registry database {self.path}: {exc}; "
                              "check the sqlite:// path and its permissions") from None
        try:
            self._conn.execute(f"PRAGMA busy_timeout = {int(busy_timeout_s * 1000)}")
            enable_wal(self._conn, busy_timeout_s)
            self._conn.execute("PRAGMA synchronous = FULL")
            with self._write():
                self._create_schema()
        except sqlite3.OperationalError as exc:  # locked by another process, disk full, ...
            self._conn.close()
            raise BackendUnavailable(f"cannot open the registry database {self.path} ({exc}); retry shortly"
                                     ) from None
        except sqlite3.DatabaseError as exc:  # not an SQLite file at all
            self._conn.close()
            raise ConfigError(f"{self.path} is not a usable registry database ({exc}); "
                              "point sqlite:// at a registry file or a new path") from None
        except BackendUnavailable:
            self._conn.close()
            raise

    def _create_schema(self) -> None:
        # executescript would COMMIT our open transaction; run the statements one by one instead.
        for statement in SCHEMA.split(";"):
            if statement.strip():
                self._conn.execute(statement)

    # -- plumbing
    @contextmanager
    def _write(self) -> Iterator[sqlite3.Connection]:
        """One IMMEDIATE transaction: commit on success, roll back on any error."""
        with self._lock, self._errors():
            self._conn.execute("BEGIN IMMEDIATE")
            try:
                yield self._conn
            except BaseException:
                self._conn.execute("ROLLBACK")
                raise
            self._conn.execute("COMMIT")

    @contextmanager
    def _errors(self) -> Iterator[None]:
        try:
            yield
        except sqlite3.IntegrityError as exc:
            raise Conflict(f"registry constraint violated: {exc}") from None
        except sqlite3.OperationalError as exc:
            raise BackendUnavailable(f"registry database {self.path} is unavailable ({exc}); retry shortly",
                                     retry_after_s=1) from None
        except sqlite3.ProgrammingError as exc:
            raise BackendUnavailable(f"registry database {self.path} is closed ({exc})") from None
        except sqlite3.DatabaseError as exc:
            raise BackendUnavailable(f"registry database {self.path} is damaged ({exc}); "
                                     "restore it from a backup") from None

    def _read(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        with self._lock, self._errors():
            return fn(self._conn)

    def _bump(self, conn: sqlite3.Connection, actor: str, action: str, target: str,
              detail: dict[str, Any], now: float) -> int:
        """Advance the change counter and append the matching audit entry (inside the write)."""
        conn.execute("UPDATE meta SET value = value + 1 WHERE key = 'change_counter'")
        seq = int(conn.execute("SELECT value FROM meta WHERE key = 'change_counter'").fetchone()[0])
        conn.execute("INSERT INTO audit (seq, ts, actor, action, target, detail) VALUES (?, ?, ?, ?, ?, ?)",
                     (seq, now, actor, action, target, rules.dumps(detail)))
        return seq

    @staticmethod
    def _get_domain(conn: sqlite3.Connection, domain_id: str) -> Domain:
        row = conn.execute(f"SELECT {_DOMAIN_COLS} FROM domains WHERE id = ?", (domain_id,)).fetchone()
        if row is None:
            raise NotFound(f"domain {domain_id!r} does not exist; create it with POST /v1/domains "
                           "or `mamdr domains add`")
        return _domain(row)

    @staticmethod
    def _get_model(conn: sqlite3.Connection, version_id: str) -> ModelVersion:
        row = conn.execute(f"SELECT {_MODEL_COLS} FROM models WHERE id = ?", (version_id,)).fetchone()
        if row is None:
            raise NotFound(f"model version {version_id!r} is not registered; see `mamdr models list`")
        return _model(row)

    @staticmethod
    def _live(conn: sqlite3.Connection) -> ModelVersion | None:
        row = conn.execute(f"SELECT {_MODEL_COLS} FROM models WHERE status = 'live'").fetchone()
        return None if row is None else _model(row)

    # -- domains
    def create_domain(self, domain_id: str, display_name: str | None = None,
                      settings: dict[str, Any] | None = None, actor: str = "system") -> Domain:
        now = time.time()
        domain = rules.new_domain(domain_id, display_name, settings, now)
        with self._write() as conn:
            row = conn.execute("SELECT status FROM domains WHERE id = ?", (domain_id,)).fetchone()
            if row is not None:
                raise rules.domain_exists(domain_id, row[0])
            conn.execute(f"INSERT INTO domains ({_DOMAIN_COLS}) VALUES (?, ?, ?, ?, ?, ?)",
                         (domain.id, domain.display_name, domain.status, domain.created_at,
                          domain.updated_at, rules.dumps(domain.settings)))
            self._bump(conn, actor, "domain.create", domain.id,
                       {"display_name": domain.display_name, "settings": domain.settings}, now)
        return domain

    def create_domains(self, domain_ids: Sequence[str], actor: str = "system") -> list[str]:
        """One transaction for the whole batch (one commit instead of one per domain)."""
        now = time.time()
        domains = [rules.new_domain(d, None, None, now) for d in dict.fromkeys(domain_ids)]
        created: list[str] = []
        with self._write() as conn:
            for domain in domains:
                if conn.execute("SELECT 1 FROM domains WHERE id = ?", (domain.id,)).fetchone() is not None:
                    continue
                conn.execute(f"INSERT INTO domains ({_DOMAIN_COLS}) VALUES (?, ?, ?, ?, ?, ?)",
                             (domain.id, domain.display_name, domain.status, domain.created_at,
                              domain.updated_at, rules.dumps(domain.settings)))
                self._bump(conn, actor, "domain.create", domain.id,
                           {"display_name": domain.display_name, "settings": domain.settings}, now)
                created.append(domain.id)
        return created

    def get_domain(self, domain_id: str) -> Domain:
        rules.check_domain_id(domain_id)
        return self._read(lambda conn: self._get_domain(conn, domain_id))

    def list_domains(self, status: DomainStatus | None = None) -> list[Domain]:
        def run(conn: sqlite3.Connection) -> list[Domain]:
            if status is None:
                rows = conn.execute(f"SELECT {_DOMAIN_COLS} FROM domains ORDER BY id").fetchall()
            else:
                rows = conn.execute(f"SELECT {_DOMAIN_COLS} FROM domains WHERE status = ? ORDER BY id",
                                    (status,)).fetchall()
            return [_domain(r) for r in rows]

        return self._read(run)

    def update_domain(self, domain_id: str, *, display_name: str | None = None,
                      status: DomainStatus | None = None, settings: dict[str, Any] | None = None,
                      actor: str = "system") -> Domain:
        rules.check_domain_id(domain_id)
        now = time.time()
        with self._write() as conn:
            current = self._get_domain(conn, domain_id)
            domain, changes = rules.updated_domain(current, display_name=display_name, status=status,
                                                   settings=settings, now=now)
            if not changes:
                return current
            conn.execute("UPDATE domains SET display_name = ?, status = ?, updated_at = ?, settings = ? "
                         "WHERE id = ?",
                         (domain.display_name, domain.status, domain.updated_at, rules.dumps(domain.settings),
                          domain.id))
            self._bump(conn, actor, rules.update_action(changes), domain.id, changes, now)
        return domain

    # -- model versions
    def register_model(self, version: ModelVersion, actor: str = "system") -> ModelVersion:
        model = rules.new_model(version)
        now = time.time()
        with self._write() as conn:
            if conn.execute("SELECT 1 FROM models WHERE id = ?", (model.id,)).fetchone() is not None:
                raise Conflict(f"model version {model.id!r} is already registered; versions are immutable")
            seq = self._bump(conn, actor, "model.register", model.id,
                             {"parent": model.parent, "artifact_uri": model.artifact_uri}, now)
            conn.execute(f"INSERT INTO models ({_MODEL_COLS}, live_seq, registered_seq) "
                         "VALUES (?, ?, ?, ?, ?, ?, ?, NULL, NULL, ?)",
                         (model.id, model.parent, model.created_at, model.artifact_uri,
                          rules.dumps(model.delta_checksums), rules.dumps(model.metrics), model.status, seq))
        return model

    def get_model(self, version_id: str) -> ModelVersion:
        rules.check_version_id(version_id)
        return self._read(lambda conn: self._get_model(conn, version_id))

    def list_models(self, limit: int = 100) -> list[ModelVersion]:
        rows = self._read(lambda conn: conn.execute(
            f"SELECT {_MODEL_COLS} FROM models ORDER BY registered_seq DESC LIMIT ?", (max(0, limit),)
        ).fetchall())
        return [_model(r) for r in rows]

    def live_model(self) -> ModelVersion | None:
        return self._read(self._live)

    def promote(self, version_id: str, actor: str = "system") -> ModelVersion:
        rules.check_version_id(version_id)
        now = time.time()
        with self._write() as conn:
            model = self._get_model(conn, version_id)
            if model.status == "live":
                return model
            previous = self._live(conn)
            if previous is not None:
                conn.execute("UPDATE models SET status = 'superseded' WHERE id = ?", (previous.id,))
            detail = {"previous": previous.id if previous else None, "from_status": model.status}
            seq = self._bump(conn, actor, "model.promote", model.id, detail, now)
            conn.execute("UPDATE models SET status = 'live', promoted_at = ?, live_seq = ? WHERE id = ?",
                         (now, seq, model.id))
        return model.model_copy(update={"status": "live", "promoted_at": now})

    def rollback(self, actor: str = "system") -> ModelVersion:
        now = time.time()
        with self._write() as conn:
            live = self._live(conn)
            rows = conn.execute(f"SELECT live_seq, {_MODEL_COLS} FROM models WHERE status = 'superseded' "
                                "ORDER BY live_seq DESC LIMIT 1").fetchall()
            target = rules.rollback_target(live, [(int(r[0]), _model(r[1:])) for r in rows])
            assert live is not None  # rollback_target raised otherwise
            conn.execute("UPDATE models SET status = 'rolled_back' WHERE id = ?", (live.id,))
            seq = self._bump(conn, actor, "model.rollback", target.id,
                             {"rolled_back": live.id, "restored": target.id}, now)
            conn.execute("UPDATE models SET status = 'live', promoted_at = ?, live_seq = ? WHERE id = ?",
                         (now, seq, target.id))
        return target.model_copy(update={"status": "live", "promoted_at": now})

    def delete_model(self, version_id: str, actor: str = "system") -> bool:
        rules.check_version_id(version_id)
        now = time.time()
        with self._write() as conn:
            row = conn.execute("SELECT status FROM models WHERE id = ?", (version_id,)).fetchone()
            if row is None:
                return False
            rules.check_deletable(version_id, row[0])
            conn.execute("DELETE FROM models WHERE id = ?", (version_id,))
            self._bump(conn, actor, "model.delete", version_id, {"status": row[0]}, now)
        return True

    # -- change notification and audit
    def change_counter(self) -> int:
        return self._read(lambda conn: int(conn.execute(
            "SELECT value FROM meta WHERE key = 'change_counter'").fetchone()[0]))

    def audit(self, limit: int = 100) -> list[AuditEntry]:
        rows = self._read(lambda conn: conn.execute(
            "SELECT seq, ts, actor, action, target, detail FROM audit ORDER BY seq DESC LIMIT ?",
            (max(0, limit),)).fetchall())
        return [AuditEntry(seq=r[0], ts=r[1], actor=r[2], action=r[3], target=r[4], detail=json.loads(r[5]))
                for r in rows]

    def close(self) -> None:
        with self._lock:
            self._conn.close()
