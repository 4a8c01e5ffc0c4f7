"""One behavioural suite for every registry backend.

``RegistrySuite`` holds the cases; a backend's test class subclasses it and provides the
``registry_url`` fixture. sqlite runs here (unit); redis runs the same class in
tests/integration/test_registry_redis.py against a real redis-server.
"""

from __future__ import annotations

import itertools
import json
import os
import random
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from contracts.errors import BackendUnavailable, Conflict, DataError, Gone, NotFound
from domain_registry import Registry, open_registry
from domain_registry.base import ModelVersion

REPO = Path(__file__).resolve().parents[2]

VALID_IDS = ["a", "comedy", "film-noir", "all_beauty", "x" * 64, "0day", "a-b_c-1"]
INVALID_IDS = ["", "Comedy", "a b", "-a", "a-", "_a", "x" * 65, "ü", "a/b", "a.b", "../etc"]


def model(version: str, parent: str | None = None, **extra: object) -> ModelVersion:
    return ModelVersion(id=version, parent=parent, created_at=time.time(),
                        artifact_uri=f"file:///tmp/artifacts/{version}", **extra)  # type: ignore[arg-type]


def statuses(reg: Registry) -> dict[str, str]:
    return {m.id: m.status for m in reg.list_models(1000)}


# Races: each worker tries to create the same ids and reports which ones it won.
RACE_WORKER = """
import json, sys, time
from domain_registry import open_registry
from contracts.errors import Conflict
url, start_at, ids = sys.argv[1], float(sys.argv[2]), sys.argv[3].split(",")
reg = open_registry(url)
time.sleep(max(0.0, start_at - time.time()))
won = []
for domain_id in ids:
    try:
        reg.create_domain(domain_id, actor="proc")
        won.append(domain_id)
    except Conflict:
        pass
print(json.dumps(won))
"""

# Crash safety: a spawner (one Python start-up) forks one writer per line of stdin, prints its pid,
# then how it ended. Each writer writes in a loop until the test kills it with SIGKILL (bounded in
# count and time if nobody does). Forking from this single-threaded process is cheap, so a test can
# afford many kills at random moments.
CRASH_SPAWNER = """
import os, sys, time
import domain_registry.redis_store, domain_registry.sqlite_store  # imported once, before the forks
from domain_registry import open_registry
from domain_registry.base import ModelVersion

def write_forever(url, tag):
    reg = open_registry(url)
    deadline = time.monotonic() + 30
    for i in range(100_000):
        if time.monotonic() > deadline:
            return
        reg.create_domain(f"{tag}-{i}", display_name=f"{tag} {i}", settings={"i": i, "tag": tag})
        reg.register_model(ModelVersion(id=f"{tag}-m{i}", created_at=time.time(),
                                        artifact_uri=f"file:///a/{tag}-m{i}", metrics={"i": i}))
        reg.promote(f"{tag}-m{i}")
        if i % 3 == 2:
            reg.rollback()

url = sys.argv[1]
for line in sys.stdin:
    pid = os.fork()
    if pid == 0:
        try:
            write_forever(url, line.strip())
        finally:
            os._exit(3)
    print(pid, flush=True)
    _, status = os.waitpid(pid, 0)
    print(-os.WTERMSIG(status) if os.WIFSIGNALED(status) else os.WEXITSTATUS(status), flush=True)
"""


def _python_env() -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = str(REPO) + os.pathsep + env.get("PYTHONPATH", "")
    return env


def assert_consistent(reg: Registry) -> None:
    """Every write complete or absent: rows, audit entries and the counter agree."""
    audit = reg.audit(100_000)
    counter = reg.change_counter()
    assert [e.seq for e in audit] == list(range(counter, 0, -1)), "audit seqs must be exactly 1..counter"
    created = {e.target for e in audit if e.action == "domain.create"}
    domains = reg.list_domains()
    assert {d.id for d in domains} == created
    for d in domains:
        tag, i = d.id.rsplit("-", 1)
        assert d.settings == {"i": int(i), "tag": tag} and d.display_name == f"{tag} {i}"
    registered = {e.target for e in audit if e.action == "model.register"}
    models = reg.list_models(100_000)
    assert {m.id for m in models} == registered
    live = [m for m in models if m.status == "live"]
    promoted = any(e.action == "model.promote" for e in audit)
    assert len(live) == (1 if promoted else 0)
    if live:
        assert reg.live_model() == live[0]
        last_live = next(e for e in audit if e.action in ("model.promote", "model.rollback"))
        assert last_live.target == live[0].id


class RegistrySuite:
    """The cases. Subclasses provide ``registry_url``."""

    @pytest.fixture()
    def registry(self, registry_url: str) -> Iterator[Registry]:
        reg = open_registry(registry_url)
        yield reg
        reg.close()

    # -- domains
    def test_create_get_list(self, registry: Registry) -> None:
        created = registry.create_domain("comedy", display_name="Comedy films", settings={"dr_k": 3},
                                         actor="alice")
        assert (created.id, created.display_name, created.status) == ("comedy", "Comedy films", "active")
        assert created.settings == {"dr_k": 3} and created.created_at == created.updated_at
        assert registry.get_domain("comedy") == created
        registry.create_domain("action")
        assert registry.get_domain("action").display_name == "action"
        assert [d.id for d in registry.list_domains()] == ["action", "comedy"]

    def test_bulk_create_makes_only_the_missing_domains(self, registry: Registry) -> None:
        registry.create_domain("comedy")
        registry.update_domain("comedy", status="paused")
        before = registry.change_counter()
        created = registry.create_domains(["d1", "comedy", "d0", "d1"], actor="trainer:auto-onboard")
        assert created == ["d1", "d0"]  # in order, once each; an existing (paused) domain stays as it is
        assert {d.id: d.status for d in registry.list_domains()} == {"comedy": "paused", "d0": "active",
                                                                     "d1": "active"}
        assert registry.change_counter() == before + 2  # one counter step and audit entry per creation
        assert [(a.action, a.target, a.actor) for a in registry.audit(limit=2)] == [
            ("domain.create", "d0", "trainer:auto-onboard"), ("domain.create", "d1", "trainer:auto-onboard")]
        assert registry.create_domains([]) == [] and registry.change_counter() == before + 2
        with pytest.raises(DataError):
            registry.create_domains(["ok-one", "Not A Slug"])

    @pytest.mark.parametrize("domain_id", VALID_IDS)
    def test_valid_ids(self, registry: Registry, domain_id: str) -> None:
        assert registry.create_domain(domain_id).id == domain_id

    @pytest.mark.parametrize("domain_id", INVALID_IDS)
    def test_invalid_ids_are_data_errors(self, registry: Registry, domain_id: str) -> None:
        with pytest.raises(DataError, match="slug"):
            registry.create_domain(domain_id)
        with pytest.raises(DataError):
            registry.get_domain(domain_id)
        assert registry.change_counter() == 0

    def test_bad_settings_and_names_are_refused(self, registry: Registry) -> None:
        with pytest.raises(DataError):
            registry.create_domain("a", settings={"x": float("nan")})
        with pytest.raises(DataError):
            registry.create_domain("a", display_name="   ")
        with pytest.raises(DataError):
            registry.create_domain("a", settings={"big": "x" * 20_000})
        assert registry.list_domains() == []

    def test_duplicate_is_conflict(self, registry: Registry) -> None:
        registry.create_domain("comedy")
        with pytest.raises(Conflict, match="already exists"):
            registry.create_domain("comedy", display_name="other")
        assert registry.get_domain("comedy").display_name == "comedy"

    def test_missing_is_not_found(self, registry: Registry) -> None:
        with pytest.raises(NotFound):
            registry.get_domain("nope")
        with pytest.raises(NotFound):
            registry.update_domain("nope", status="paused")

    def test_pause_resume_and_settings_merge(self, registry: Registry) -> None:
        registry.create_domain("comedy", settings={"dr_k": 3, "note": "x"})
        assert registry.update_domain("comedy", status="paused").status == "paused"
        assert [d.id for d in registry.list_domains("paused")] == ["comedy"]
        assert registry.list_domains("active") == []
        resumed = registry.update_domain("comedy", status="active", settings={"dr_k": 5, "note": None,
                                                                              "beta": 0.2})
        assert resumed.status == "active" and resumed.settings == {"dr_k": 5, "beta": 0.2}
        assert resumed.updated_at >= resumed.created_at
        assert registry.get_domain("comedy") == resumed
        with pytest.raises(DataError):
            registry.update_domain("comedy", status="deleted")  # type: ignore[arg-type]
        before = registry.change_counter()
        unchanged = registry.update_domain("comedy", status="active", settings={"dr_k": 5})
        assert unchanged == resumed and registry.change_counter() == before, "a no-op update writes nothing"

    def test_retire_keeps_history_and_blocks_reuse(self, registry: Registry) -> None:
        registry.create_domain("comedy", settings={"dr_k": 3})
        retired = registry.update_domain("comedy", status="retired", actor="bob")
        assert retired.status == "retired" and retired.settings == {"dr_k": 3}
        assert registry.get_domain("comedy").status == "retired"
        assert [d.id for d in registry.list_domains("retired")] == ["comedy"]
        with pytest.raises(Conflict, match="retired"):
            registry.create_domain("comedy")
        with pytest.raises(Gone):
            registry.update_domain("comedy", status="active")
        entry = registry.audit(1)[0]
        assert (entry.action, entry.target, entry.actor) == ("domain.retire", "comedy", "bob")

    # -- model versions
    def test_register_and_list_newest_first(self, registry: Registry) -> None:
        for i in range(5):
            got = registry.register_model(model(f"v{i}", parent=f"v{i - 1}" if i else None,
                                                metrics={"auc": 0.7 + i / 100}, delta_checksums={"a": "00"}))
            assert got.status == "candidate"
        assert [m.id for m in registry.list_models()] == ["v4", "v3", "v2", "v1", "v0"]
        assert [m.id for m in registry.list_models(2)] == ["v4", "v3"]
        v3 = registry.get_model("v3")
        assert v3.parent == "v2" and v3.metrics == {"auc": 0.73} and v3.delta_checksums == {"a": "00"}
        assert registry.live_model() is None
        with pytest.raises(Conflict):
            registry.register_model(model("v1"))
        with pytest.raises(DataError):
            registry.register_model(model("bad/id"))
        with pytest.raises(DataError):
            registry.register_model(model("v9", status="live"))
        with pytest.raises(NotFound):
            registry.get_model("v9")

    def test_promote_supersedes_and_rollback_restores(self, registry: Registry) -> None:
        for i in range(4):
            registry.register_model(model(f"v{i}"))
        for i in range(4):
            promoted = registry.promote(f"v{i}", actor="ci")
            assert promoted.status == "live" and promoted.promoted_at is not None
        sup = "superseded"
        assert statuses(registry) == {"v0": sup, "v1": sup, "v2": sup, "v3": "live"}
        assert registry.rollback().id == "v2"
        assert statuses(registry) == {"v0": sup, "v1": sup, "v2": "live", "v3": "rolled_back"}
        assert registry.rollback().id == "v1"
        # A new promote after rollbacks: rollback then returns to v1 (the last live), never to v2/v3.
        registry.register_model(model("v4"))
        registry.promote("v4")
        assert registry.rollback().id == "v1"
        assert statuses(registry) == {"v0": "superseded", "v1": "live", "v2": "rolled_back",
                                      "v3": "rolled_back", "v4": "rolled_back"}
        assert registry.rollback().id == "v0"
        with pytest.raises(Conflict, match="no earlier"):
            registry.rollback()
        assert registry.live_model() is not None and registry.live_model().id == "v0"  # type: ignore[union-attr]
        # An operator may explicitly promote a rolled-back version again.
        assert registry.promote("v3").status == "live"
        assert registry.rollback().id == "v0"

    def test_delete_model_forgets_a_record_but_never_the_live_one(self, registry: Registry) -> None:
        for i in range(4):
            registry.register_model(model(f"v{i}"))
            registry.promote(f"v{i}")
        with pytest.raises(Conflict, match="live"):
            registry.delete_model("v3")
        before = registry.change_counter()
        assert registry.delete_model("v2", actor="retention") is True
        assert registry.change_counter() == before + 1
        entry = registry.audit(1)[0]
        assert (entry.action, entry.target, entry.actor) == ("model.delete", "v2", "retention")
        assert registry.delete_model("v2") is False  # idempotent: no write, no counter bump
        assert registry.change_counter() == before + 1
        with pytest.raises(NotFound):
            registry.get_model("v2")
        assert [m.id for m in registry.list_models()] == ["v3", "v1", "v0"]
        # a deleted version is no rollback target: the rollback skips to the one live before it
        assert registry.rollback().id == "v1"
        registry.delete_model("v0")
        with pytest.raises(Conflict, match="no earlier"):
            registry.rollback()
        with pytest.raises(NotFound):
            registry.promote("v0")
        with pytest.raises(DataError):
            registry.delete_model("../v1")

    def test_promote_edge_cases(self, registry: Registry) -> None:
        with pytest.raises(Conflict, match="no live"):
            registry.rollback()
        with pytest.raises(NotFound):
            registry.promote("v1")
        with pytest.raises(DataError):
            registry.promote("../v1")
        registry.register_model(model("v1"))
        registry.promote("v1")
        before = registry.change_counter()
        assert registry.promote("v1").status == "live"  # already live: no write
        assert registry.change_counter() == before

    # -- change counter, audit, notification
    def test_every_write_bumps_the_counter_once_and_is_audited(self, registry: Registry) -> None:
        assert registry.change_counter() == 0 and registry.audit() == []
        registry.create_domain("comedy", actor="alice")
        registry.update_domain("comedy", display_name="Comedy", actor="bob")
        registry.register_model(model("v1"), actor="trainer")
        registry.register_model(model("v2", parent="v1"), actor="trainer")
        registry.promote("v1", actor="ci")
        registry.promote("v2", actor="ci")
        registry.rollback(actor="oncall")
        with pytest.raises(Conflict):
            registry.create_domain("comedy")  # failed writes change nothing
        assert registry.change_counter() == 7
        entries = registry.audit()
        assert [e.seq for e in entries] == [7, 6, 5, 4, 3, 2, 1]
        assert [(e.actor, e.action, e.target) for e in reversed(entries)] == [
            ("alice", "domain.create", "comedy"), ("bob", "domain.update", "comedy"),
            ("trainer", "model.register", "v1"), ("trainer", "model.register", "v2"),
            ("ci", "model.promote", "v1"), ("ci", "model.promote", "v2"), ("oncall", "model.rollback", "v1"),
        ]
        assert entries[0].detail == {"rolled_back": "v2", "restored": "v1"}
        assert entries[5].detail["display_name"] == ["comedy", "Comedy"]
        assert entries[1].detail["previous"] == "v1"
        assert [e.seq for e in registry.audit(2)] == [7, 6]
        assert entries[0].ts >= entries[-1].ts

    def test_wait_for_change_wakes_on_a_write_from_another_client(self, registry: Registry,
                                                                  registry_url: str) -> None:
        since = registry.change_counter()
        assert registry.wait_for_change(since, timeout_s=0.05) == since

        def write_later() -> None:
            time.sleep(0.1)
            with open_registry(registry_url) as other:
                other.create_domain("late")

        t = threading.Thread(target=write_later)
        started = time.monotonic()
        t.start()
        assert registry.wait_for_change(since, timeout_s=5.0) == since + 1
        assert time.monotonic() - started < 4.0
        t.join()
        assert registry.get_domain("late").id == "late"

    # -- concurrency
    def test_threads_racing_to_create_one_wins(self, registry_url: str) -> None:
        ids = [f"race-{i}" for i in range(10)]
        n = 4
        barrier = threading.Barrier(n)
        won: list[list[str]] = [[] for _ in range(n)]
        conflicts = [0] * n
        errors: list[BaseException] = []

        def worker(k: int) -> None:
            try:
                with open_registry(registry_url) as reg:
                    barrier.wait()
                    for domain_id in ids:
                        for attempt in range(3):  # a busy database is retryable (503), as a client retries it
                            try:
                                reg.create_domain(domain_id, actor=f"t{k}")
                                won[k].append(domain_id)
                            except Conflict:
                                conflicts[k] += 1
                            except BackendUnavailable:
                                if attempt == 2:
                                    raise
                                continue
                            break
            except BaseException as exc:  # surfaced below: a thread's error must fail the test, not vanish
                errors.append(exc)

        threads = [threading.Thread(target=worker, args=(k,)) for k in range(n)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(60)
        assert not errors, errors
        flat = [d for w in won for d in w]
        assert sorted(flat) == sorted(ids), "each id created exactly once"
        assert sum(conflicts) == len(ids) * (n - 1)
        with open_registry(registry_url) as reg:
            assert reg.change_counter() == len(ids)
            assert_consistent_domains(reg, ids)

    def test_processes_racing_to_create_one_wins(self, registry_url: str) -> None:
        ids = [f"proc-{i}" for i in range(15)]
        with open_registry(registry_url) as reg:  # create the schema before the race
            reg.change_counter()
        start_at = time.time() + 2.0
        argv = [sys.executable, "-c", RACE_WORKER, registry_url, str(start_at), ",".join(ids)]
        procs = [subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=_python_env(),
                                  text=True) for _ in range(2)]
        results = []
        for p in procs:
            out, err = p.communicate(timeout=60)
            assert p.returncode == 0, err
            results.append(json.loads(out))
        assert sorted(results[0] + results[1]) == sorted(ids), "each id created by exactly one process"
        assert not set(results[0]) & set(results[1])
        with open_registry(registry_url) as reg:
            assert reg.change_counter() == len(ids)

    def test_concurrent_promotes_leave_exactly_one_live(self, registry_url: str, registry: Registry) -> None:
        versions = [f"v{i}" for i in range(8)]
        for v in versions:
            registry.register_model(model(v))
        n, rounds = 4, 6
        barrier = threading.Barrier(n)
        errors: list[BaseException] = []

        def worker(k: int) -> None:
            try:
                with open_registry(registry_url) as reg:
                    barrier.wait()
                    for r in range(rounds):
                        reg.promote(versions[(k * 3 + r) % len(versions)], actor=f"t{k}")
            except BaseException as exc:
                errors.append(exc)

        threads = [threading.Thread(target=worker, args=(k,)) for k in range(n)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(60)
        assert not errors
        final = statuses(registry)
        assert list(final.values()).count("live") == 1
        live = registry.live_model()
        assert live is not None and final[live.id] == "live"
        promotes = [e for e in registry.audit(1000) if e.action == "model.promote"]
        assert promotes[0].target == live.id, "the last audited promote is the live version"
        # Live history is a chain: each promote's "previous" is the version promoted just before it.
        for before, after in itertools.pairwise(reversed(promotes)):
            assert after.detail["previous"] == before.target
        assert_consistent(registry)

    # -- crash safety
    def test_kill_9_mid_write_leaves_a_consistent_registry(self, registry_url: str) -> None:
        with open_registry(registry_url) as reg:
            reg.change_counter()
        rng = random.Random(7)
        spawner = subprocess.Popen([sys.executable, "-c", CRASH_SPAWNER, registry_url], stdin=subprocess.PIPE,
                                   stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=_python_env(), text=True)
        assert spawner.stdin is not None and spawner.stdout is not None
        watcher = open_registry(registry_url)
        try:
            for round_no in range(20):
                start = watcher.change_counter()
                spawner.stdin.write(f"r{round_no}\n")
                spawner.stdin.flush()
                pid = int(spawner.stdout.readline())
                kill_after = rng.randint(3, 30)
                deadline = time.monotonic() + 30
                while watcher.change_counter() < start + kill_after:
                    assert time.monotonic() < deadline, "writer made no progress"
                    time.sleep(0.002)
                time.sleep(rng.uniform(0, 0.03))  # do not kill in step with the commits we observe
                os.kill(pid, signal.SIGKILL)
                assert int(spawner.stdout.readline()) == -signal.SIGKILL, "the writer failed on its own"
                self.check_storage(registry_url)
                with open_registry(registry_url) as reg:
                    assert_consistent(reg)
                    assert reg.change_counter() >= start + kill_after
        finally:
            watcher.close()
            spawner.kill()
            _, err = spawner.communicate(timeout=10)
        assert "Traceback" not in err, err

    def check_storage(self, registry_url: str) -> None:
        """Backend-specific checks after a crash (sqlite: integrity_check)."""


def assert_consistent_domains(reg: Registry, ids: list[str]) -> None:
    assert [d.id for d in reg.list_domains()] == sorted(ids)
    creators = {e.target: e.actor for e in reg.audit(1000) if e.action == "domain.create"}
    assert set(creators) == set(ids)


class TestSqliteRegistry(RegistrySuite):
    @pytest.fixture()
    def registry_url(self, tmp_path: Path) -> str:
        return f"sqlite://{tmp_path}/registry.db"

    def check_storage(self, registry_url: str) -> None:
        import sqlite3

        conn = sqlite3.connect(registry_url.removeprefix("sqlite://"))
        try:
            assert conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
            assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        finally:
            conn.close()
