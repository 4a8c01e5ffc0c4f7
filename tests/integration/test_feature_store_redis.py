"""The feature-store contract, one-round-trip reads, credentials and outage recovery on real Redis."""

from __future__ import annotations

import shutil
import subprocess
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import redis

from contracts.errors import BackendUnavailable, Conflict, NotFound
from contracts.settings import FeatureStoreSettings
from feature_store import EmbeddingStore, open_store
from feature_store.redis_store import RedisStore
from tests.fixtures.redis_server import RedisServer, free_port
from tests.unit.test_feature_store_contract import MakeStore, StoreContract, fill


@pytest.fixture()
def make_store(redis_url: str) -> Iterator[MakeStore]:
    ns = f"t{uuid.uuid4().hex[:8]}"  # isolate each test by key prefix
    opened: list[EmbeddingStore] = []

    def make(**overrides: object) -> EmbeddingStore:
        store = open_store(redis_url, FeatureStoreSettings(namespace=ns, **overrides))  # type: ignore[arg-type]
        opened.append(store)
        return store

    yield make
    for store in opened:
        store.close()


class TestRedisBackend(StoreContract):
    pass


def _commands(client: redis.Redis) -> dict[str, int]:
    stats = client.info("commandstats")
    return {k.removeprefix("cmdstat_"): int(v["calls"]) for k, v in stats.items()}


def test_lookup_is_one_mget(make_store: MakeStore, redis_url: str) -> None:
    store = make_store()
    fill(store, "v1", 1.0, n_items=200)
    store.publish("v1")
    store.lookup("u0", ["i0"])  # warm the pointer and metadata caches
    admin = redis.Redis.from_url(redis_url)
    admin.config_resetstat()
    got = store.lookup("u0", [f"i{i}" for i in range(100)] + ["missing"])
    calls = _commands(admin)
    calls.pop("config|resetstat", None)
    calls.pop("config", None)
    assert calls == {"mget": 1}, calls
    assert got.missing_items == [100]
    admin.close()


def test_gc_unlinks_every_key_of_old_versions(make_store: MakeStore, redis_url: str) -> None:
    store = make_store(write_chunk=7)
    for n in range(3):
        fill(store, f"v{n}", float(n), n_users=30, n_items=40)
    store.publish("v2")
    assert store.describe("v1").counts == {"user": 30, "item": 40}
    assert store.gc(keep=1) == ["v0", "v1"]
    admin = redis.Redis.from_url(redis_url)
    ns = store.settings.namespace  # type: ignore[attr-defined]
    for gone in ("v0", "v1"):
        assert not list(admin.scan_iter(match=f"{ns}:v:{gone}:*"))
        assert not list(admin.scan_iter(match=f"{ns}:t:{gone}:*"))
    assert len(list(admin.scan_iter(match=f"{ns}:v:v2:*"))) == 2  # meta + live token
    assert len(list(admin.scan_iter(match=f"{ns}:t:v2:*"))) == 30 + 40
    # A gc that died after retiring the token but before unlinking is finished by the next gc.
    fill(store, "v3", 3.0)
    admin.delete(f"{ns}:v:v2:live")
    store.publish("v3")
    assert store.gc(keep=0) == ["v2"]
    assert not list(admin.scan_iter(match=f"{ns}:v:v2:*")) and store.versions() == ["v3"]
    assert not list(admin.scan_iter(match=f"{ns}:t:v2:*"))
    admin.close()


def test_incremental_versions_cost_their_changed_rows_in_one_round_trip(make_store: MakeStore,
                                                                         redis_url: str) -> None:
    """Redis memory per incremental version follows the rows it changed, not the table; gc folds
    what every kept version reads into the floor, and a lookup stays one command."""
    store = make_store(write_chunk=500)
    admin = redis.Redis.from_url(redis_url)
    ns = store.settings.namespace  # type: ignore[attr-defined]
    n, dim, changed = 4000, 32, 20
    store.declare("v0", {"user": dim, "item": dim})
    store.write("v0", "user", [f"u{i}" for i in range(n)], np.zeros((n, dim)))
    store.write("v0", "item", [f"i{i}" for i in range(n)], np.zeros((n, dim)))
    store.publish("v0")
    keys_base = admin.dbsize()
    parent = "v0"
    for k in range(1, 7):
        version = f"v{k}"
        store.declare(version, {"user": dim, "item": dim}, parent=parent)
        rows = [f"u{(k * 37 + j) % n}" for j in range(changed)]
        store.write(version, "user", rows, np.full((changed, dim), float(k)))
        store.forget(version, "item", [f"i{k}"])
        store.publish(version)
        store.gc(keep=2)
        parent = version
    # the floor (one key per id) + the writes of the two kept versions (hashes) + a few version keys
    extra = admin.dbsize() - keys_base
    assert extra <= 2 * (changed + 1) + 12, extra
    assert not list(admin.scan_iter(match=f"{ns}:v:v0:*"))  # the base is gone as a version ...
    got = store.get_many("user", [f"u{(6 * 37 + j) % n}" for j in range(changed)] + ["u3999"], version="v6")
    assert (got[0][:changed] == 6.0).all() and (got[0][changed] == 0.0).all()  # ... its rows are not
    assert store.lookup("u0", ["i6", "i5", "i0"], version="v6").missing_items == [0, 1]
    store.lookup("u0", ["i0"])  # warm the caches
    admin.config_resetstat()
    store.lookup("u1", [f"i{i}" for i in range(100)])
    calls = _commands(admin)
    calls.pop("config|resetstat", None)
    calls.pop("config", None)
    # one MULTI/EXEC: the token, one MGET of the floor keys, one HMGET per version above the floor (v6 only:
    # v5, the newest version both kept ones descend from, was folded into the floor)
    assert calls == {"multi": 1, "get": 1, "mget": 1, "hmget": 1, "exec": 1}, calls
    script = make_store(incremental_read="script")
    script.lookup("u0", ["i0"])
    admin.config_resetstat()
    script.lookup("u1", [f"i{i}" for i in range(100)])
    calls = _commands(admin)
    calls.pop("config|resetstat", None)
    calls.pop("config", None)
    assert calls.pop("evalsha") == 1 and set(calls) <= {"hgetall", "get", "mget", "smismember"}, calls  # in it
    admin.close()


def test_pipelined_reads_equal_the_read_script_through_tombstones_branches_and_gc(make_store: MakeStore,
                                                                                  redis_url: str) -> None:
    """The read path without a script returns what the script returns, at every version, also when a gc
    folds versions between a reader's walk of the lineage and its read (its list of versions is stale)."""
    pipelined, script = make_store(), make_store(incremental_read="script")
    dim, n = 4, 60
    users, items = [f"u{i}" for i in range(n)], [f"i{i}" for i in range(n)]

    def same_everywhere(versions: list[str]) -> None:
        for v in versions:
            for kind, ids in (("user", users), ("item", items)):
                asked = [*ids, "never"]
                a, b = pipelined.get_many(kind, asked, version=v), script.get_many(kind, asked, version=v)
                assert (a[0] == b[0]).all() and a[1] == b[1], (v, kind)
            la, lb = pipelined.lookup("u3", items[:30], version=v), script.lookup("u3", items[:30], version=v)
            assert (la.items == lb.items).all() and la.missing_items == lb.missing_items
            assert (la.user is None) == (lb.user is None) and (la.user is None or (la.user == lb.user).all())

    pipelined.declare("b0", {"user": dim, "item": dim})
    pipelined.write("b0", "user", users, np.zeros((n, dim)))
    pipelined.write("b0", "item", items, np.zeros((n, dim)))
    pipelined.publish("b0")
    rng = np.random.default_rng(0)
    parent, made = "b0", ["b0"]
    for k in range(1, 7):
        version = f"b{k}"
        if k == 4:  # a rollback branch: b4 is a child of b2, beside b3
            parent = "b2"
        pipelined.declare(version, {"user": dim, "item": dim}, parent=parent)
        for kind, ids in (("user", users), ("item", items)):
            changed = sorted(set(rng.choice(n, 15).tolist()))
            pipelined.write(version, kind, [ids[j] for j in changed], np.full((len(changed), dim), float(k)))
            gone = [ids[j] for j in rng.choice(n, 3)]
            pipelined.forget(version, kind, gone)  # tombstones, some of ids written in this version or before
        if k == 5:  # a forgotten id written again later in the lineage
            pipelined.write(version, "item", [items[0]], np.full((1, dim), 55.0))
        pipelined.publish(version)
        made.append(version)
        parent = version
        same_everywhere(made)
    # walk every lineage now (cached), then fold: the cached lists name versions whose writes moved
    same_everywhere(["b6", "b5"])
    removed = pipelined.gc(keep=2)
    assert removed and "b6" in pipelined.versions()
    same_everywhere([v for v in made if v in pipelined.versions()])
    # a version declared before read hashes existed (no "rh" mark) is read by the script
    admin = redis.Redis.from_url(redis_url)
    admin.hdel(f"{pipelined.settings.namespace}:v:b6:meta", "rh")  # type: ignore[attr-defined]
    pipelined = make_store()
    same_everywhere(["b6"])
    assert pipelined._chains["b6"][0] is None  # type: ignore[attr-defined]
    admin.close()


def test_password_and_acl_user(redis_url: str) -> None:
    admin = redis.Redis.from_url(redis_url)
    name = f"fs{uuid.uuid4().hex[:6]}"
    admin.acl_setuser(name, enabled=True, passwords=["+s3cret"], keys=["*"], commands=["+@all"])
    try:
        ok = open_store(redis_url, FeatureStoreSettings(username=name, password="s3cret"))  # type: ignore[arg-type]
        assert ok.health()
        ok.declare("v1", {"user": 2})
        ok.close()
        bad = open_store(redis_url, FeatureStoreSettings(username=name, password="wrong"))  # type: ignore[arg-type]
        assert not bad.health()
        with pytest.raises(BackendUnavailable, match="credentials"):
            bad.versions()
        bad.close()
    finally:
        admin.acl_deluser(name)
        admin.close()


def test_outage_then_recovery(redis_server: RedisServer, redis_url: str) -> None:
    store = open_store(redis_url, FeatureStoreSettings(namespace="outage", pointer_ttl_s=0.0))
    assert isinstance(store, RedisStore)
    fill(store, "v1", 1.0)
    store.publish("v1")
    assert store.lookup("u0", ["i0"]).version == "v1"
    redis_server.stop()
    try:
        started = time.monotonic()
        with pytest.raises(BackendUnavailable, match="unreachable") as err:
            store.lookup("u0", ["i0"])
        assert err.value.http_status == 503 and err.value.retry_after_s >= 1
        assert time.monotonic() - started < 3  # bounded retries, no hang
        assert not store.health()
        with pytest.raises(BackendUnavailable):
            store.write("v1", "user", ["u0"], np.zeros((1, 8)))
    finally:
        redis_server.start_again()
    # Same store object, no reconnect call: the pool recovers by itself (the data was in memory only).
    assert store.health()
    fill(store, "v2", 2.0)
    store.publish("v2")
    assert store.lookup("u0", ["i0"]).items[0, 0] == 2.0
    store.close()


def test_stale_pointer_never_reads_a_collected_version(make_store: MakeStore) -> None:
    """A reader caching the pointer for a minute still switches as soon as its version is collected."""
    writer, reader = make_store(), make_store(pointer_ttl_s=60.0)
    fill(writer, "v1", 1.0)
    writer.publish("v1")
    assert reader.lookup("u0", ["i0"]).version == "v1"
    fill(writer, "v2", 2.0)
    writer.publish("v2")
    assert reader.lookup("u0", ["i0"]).version == "v1"  # cached pointer; v1 is still whole
    assert writer.gc(keep=1) == ["v1"]
    got = reader.lookup("u0", ["i0", "i1"])
    assert got.version == "v2" and not got.missing_items and float(got.items.min()) == 2.0
    # A version rebuilt under the same name with another dimension: the token tells the reader.
    writer.declare("v1", {"user": 3, "item": 3})
    writer.write("v1", "item", ["i0"], np.ones((1, 3)))
    assert reader.lookup("u0", ["i0"], version="v1").items.shape == (1, 3)


def test_publish_of_a_collected_version_is_refused(make_store: MakeStore) -> None:
    store = make_store()
    fill(store, "v1", 1.0)
    fill(store, "v2", 2.0)
    store.publish("v2")
    store.gc(keep=1)
    with pytest.raises(NotFound):
        store.publish("v1")
    assert store.current_version() == "v2"


@pytest.fixture(scope="module")
def tls_redis(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[int, Path]]:
    """A TLS-only redis-server with a self-signed certificate for 127.0.0.1."""
    openssl, server = shutil.which("openssl"), shutil.which("redis-server")
    if openssl is None or server is None:
        pytest.skip("openssl and redis-server are needed for the TLS test")
    tmp = tmp_path_factory.mktemp("tls")
    subprocess.run([openssl, "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", str(tmp / "key.pem"),
                    "-out", str(tmp / "cert.pem"), "-days", "1", "-subj", "/CN=127.0.0.1",
                    "-addext", "subjectAltName=IP:127.0.0.1"], check=True, capture_output=True, timeout=60)
    port = free_port()
    proc = subprocess.Popen(
        [server, "--port", "0", "--tls-port", str(port), "--bind", "127.0.0.1", "--save", "",
         "--appendonly", "no", "--dir", str(tmp), "--tls-cert-file", str(tmp / "cert.pem"),
         "--tls-key-file", str(tmp / "key.pem"), "--tls-ca-cert-file", str(tmp / "cert.pem"),
         "--tls-auth-clients", "no"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        yield port, tmp / "cert.pem"
    finally:
        proc.terminate()
        proc.wait(timeout=10)


def test_tls(tls_redis: tuple[int, Path]) -> None:
    port, ca = tls_redis
    store = open_store(f"redis://127.0.0.1:{port}", FeatureStoreSettings(tls=True, tls_ca_file=str(ca)))
    deadline = time.monotonic() + 10
    while not store.health() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert store.health()
    fill(store, "t1", 1.5)
    store.publish("t1")
    assert store.lookup("u0", ["i0"]).items[0, 0] == 1.5
    store.close()
    untrusted = open_store(f"rediss://127.0.0.1:{port}")  # system CAs do not know the self-signed cert
    with pytest.raises(BackendUnavailable):
        untrusted.versions()
    plain = open_store(f"redis://127.0.0.1:{port}")  # plaintext against a TLS port
    assert not plain.health()


def test_versions_written_before_incremental_versions_stay_readable_and_collectable(make_store: MakeStore,
                                                                                      redis_url: str) -> None:
    """An upgraded deployment: serving still reads the live version of the old key layout, a new
    lineage starts beside it with a full version, and gc deletes the old one with all its keys."""
    store = make_store()
    ns = store.settings.namespace  # type: ignore[attr-defined]
    admin = redis.Redis.from_url(redis_url)
    admin.hset(f"{ns}:v:old:meta", mapping={"created": repr(time.time() - 60), "dtype": "float32",
                                            "dims.user": 4, "dims.item": 4, "count.user": 1, "count.item": 2})
    admin.set(f"{ns}:v:old:live", "tok")
    admin.zadd(f"{ns}:versions", {"old": time.time() - 60})
    admin.set(f"{ns}:v:old:u:a", np.full(4, 1.0, dtype="<f4").tobytes())
    admin.mset({f"{ns}:v:old:i:{k}": np.full(4, 2.0, dtype="<f4").tobytes() for k in ("x", "y")})
    admin.set(f"{ns}:current", "old")
    got = store.lookup("a", ["x", "zz", "y"])
    assert got.version == "old" and got.user is not None and float(got.user[0]) == 1.0 and got.missing_items == [1]
    assert store.gc(keep=0) == []  # the current one stays
    assert store.versions() == ["old"]
    with pytest.raises(Conflict, match="before incremental"):
        store.declare("new", {"user": 4, "item": 4}, parent="old")
    fill(store, "new", 3.0)
    store.publish("new")
    assert store.gc(keep=0) == ["old"]
    assert not list(admin.scan_iter(match=f"{ns}:v:old:*")) and store.versions() == ["new"]
    assert float(store.lookup("u1", ["i1"]).items[0, 0]) == 3.0
    admin.close()


def test_a_failed_pipelined_read_leaves_the_connection_pool_usable(make_store: MakeStore, redis_url: str) -> None:
    from contracts.errors import BackendUnavailable

    store = make_store(max_connections=1)  # one connection: a dirty one would break the next read
    fill(store, "p0", 1.0)
    store.publish("p0")
    store.declare("p1", {"user": 8, "item": 8}, parent="p0")
    store.write("p1", "item", ["i1"], np.full((1, 8), 2.0))
    store.publish("p1")
    assert float(store.lookup("u1", ["i1", "i2"]).items[0, 0]) == 2.0
    admin = redis.Redis.from_url(redis_url)
    ns = store.settings.namespace  # type: ignore[attr-defined]
    key = next(k for k in admin.scan_iter(match=f"{ns}:t:p0:r:*"))
    saved = admin.dump(key)
    admin.delete(key)
    admin.set(key, b"not a hash")  # HMGET inside the transaction answers WRONGTYPE
    with pytest.raises(BackendUnavailable):
        store.lookup("u1", ["i1", "i2"])
    admin.delete(key)
    admin.restore(key, 0, saved)
    got = store.lookup("u1", ["i1", "i2"])
    assert float(got.items[0, 0]) == 2.0 and float(got.items[1, 0]) == 1.0
    admin.close()
