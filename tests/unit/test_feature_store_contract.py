"""One behavioural suite every feature-store backend must pass.

``StoreContract`` needs a ``make_store(**settings) -> EmbeddingStore`` fixture whose stores share
one backend (a second store = another reader/writer of the same data). Here it runs on memory://
and file://; tests/integration/test_feature_store_redis.py runs it on a real redis-server.
"""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import pytest

from contracts.errors import Conflict, DataError, NotFound
from contracts.settings import FeatureStoreSettings
from feature_store import EmbeddingStore, open_store

MakeStore = Callable[..., EmbeddingStore]


def fill(store: EmbeddingStore, version: str, value: float, n_users: int = 5, n_items: int = 50,
         dim: int = 8) -> None:
    """A version whose every vector element equals ``value`` (so a mix of versions is visible)."""
    store.declare(version, {"user": dim, "item": dim})
    store.write(version, "user", [f"u{i}" for i in range(n_users)], np.full((n_users, dim), value))
    store.write(version, "item", [f"i{i}" for i in range(n_items)], np.full((n_items, dim), value))


class StoreContract:
    def test_round_trip_and_cold_start(self, make_store: MakeStore) -> None:
        store = make_store()
        assert store.current_version() is None
        with pytest.raises(NotFound):
            store.lookup("u0", ["i0"])
        store.declare("v1", {"user": 4, "item": 3})
        users = np.arange(8, dtype=np.float32).reshape(2, 4)
        items = np.arange(9, dtype=np.float32).reshape(3, 3) / 7
        assert store.write("v1", "user", ["a", "b"], users) == 2
        assert store.write("v1", "item", ["x", "y", "z"], items) == 3
        store.publish("v1")
        assert store.current_version() == "v1"
        assert store.dims() == {"user": 4, "item": 3}
        got = store.lookup("b", ["z", "nope", "x", "nope2"])
        assert got.version == "v1"
        np.testing.assert_array_equal(got.user, users[1])
        np.testing.assert_array_equal(got.items[[0, 2]], items[[2, 0]])
        assert got.missing_items == [1, 3]
        np.testing.assert_array_equal(got.items[[1, 3]], 0)
        cold = store.lookup("stranger", ["y"])
        assert cold.user is None and cold.user_missing and cold.missing_items == []
        vecs, missing = store.get_many("user", ["a", "zz", "b"])
        np.testing.assert_array_equal(vecs[[0, 2]], users)
        assert missing == [1]
        info = store.describe("v1")
        assert info.dims == {"user": 4, "item": 3} and info.counts == {"user": 2, "item": 3}
        assert info.dtype == "float32"

    def test_second_store_sees_publish(self, make_store: MakeStore) -> None:
        writer, reader = make_store(), make_store(pointer_ttl_s=0.0)
        fill(writer, "v1", 1.0)
        writer.publish("v1")
        assert reader.lookup("u1", ["i1"]).version == "v1"
        fill(writer, "v2", 2.0)
        assert reader.lookup("u1", ["i1"]).version == "v1"  # written, not yet published
        writer.publish("v2")
        got = reader.lookup("u1", ["i1"])
        assert got.version == "v2" and float(got.items[0, 0]) == 2.0
        assert reader.lookup("u1", ["i1"], version="v1").items[0, 0] == 1.0

    def test_refuses_bad_writes(self, make_store: MakeStore) -> None:
        store = make_store()
        store.declare("v1", {"user": 4})
        with pytest.raises(DataError, match="dimension 5"):
            store.write("v1", "user", ["a"], np.zeros((1, 5)))
        bad = np.zeros((2, 4))
        bad[1, 2] = np.nan
        with pytest.raises(DataError, match="'b'"):
            store.write("v1", "user", ["a", "b"], bad)
        with pytest.raises(DataError, match="infinite"):
            store.write("v1", "user", ["a"], np.full((1, 4), np.inf))
        with pytest.raises(DataError, match="2 ids but 1"):
            store.write("v1", "user", ["a", "b"], np.zeros((1, 4)))
        with pytest.raises(DataError, match="declare"):
            store.write("v1", "item", ["x"], np.zeros((1, 4)))
        with pytest.raises(DataError, match="kind"):
            store.write("v1", "shop", ["x"], np.zeros((1, 4)))  # type: ignore[arg-type]
        with pytest.raises(NotFound):
            store.write("v9", "user", ["a"], np.zeros((1, 4)))
        with pytest.raises(DataError, match="version"):
            store.declare("bad version!", {"user": 4})
        with pytest.raises(Conflict):
            store.declare("v1", {"user": 8})
        store.declare("v1", {"item": 2})  # merging a new kind is fine
        assert store.dims("v1") == {"user": 4, "item": 2}
        assert store.describe("v1").counts["user"] == 0  # nothing of the refused batches landed
        with pytest.raises(NotFound):
            store.publish("v9")

    def test_kinds_declared_in_steps(self, make_store: MakeStore) -> None:
        writer, reader = make_store(), make_store()
        writer.declare("v1", {"user": 2})
        writer.write("v1", "user", ["a"], np.ones((1, 2)))
        assert reader.lookup("a", [], version="v1").user is not None  # reader caches what it saw
        writer.declare("v1", {"item": np.int64(3)})  # type: ignore[dict-item]
        writer.write("v1", "item", ["x"], np.ones((1, 3)))
        got = reader.lookup("a", ["x"], version="v1")
        assert got.items.shape == (1, 3) and not got.missing_items
        with pytest.raises(DataError, match="positive integer"):
            writer.declare("v1", {"item": 0})
        with pytest.raises(DataError, match="positive integer"):
            writer.declare("v2", {"user": True})

    def test_live_version_is_read_only(self, make_store: MakeStore) -> None:
        store = make_store()
        fill(store, "v1", 1.0)
        store.publish("v1")
        with pytest.raises(Conflict, match="live"):
            store.write("v1", "user", ["u0"], np.zeros((1, 8)))

    def test_gc_keeps_last_k_and_current(self, make_store: MakeStore) -> None:
        store = make_store()
        for n in range(1, 6):
            fill(store, f"v{n}", float(n), n_users=2, n_items=3)
            time.sleep(0.002)  # distinct creation times
        store.publish("v2")
        assert store.versions() == ["v1", "v2", "v3", "v4", "v5"]
        assert sorted(store.gc(keep=2)) == ["v1", "v3"]
        assert store.versions() == ["v2", "v4", "v5"]
        for gone in ("v1", "v3"):
            with pytest.raises(NotFound):
                store.lookup("u0", ["i0"], version=gone)
        assert store.lookup("u0", ["i0"]).items[0, 0] == 2.0
        assert store.gc(keep=0) == ["v4", "v5"]
        assert store.versions() == ["v2"]
        with pytest.raises(DataError):
            store.gc(keep=-1)

    def test_gc_never_deletes_protected_versions(self, make_store: MakeStore) -> None:
        store = make_store()
        for n in range(1, 6):
            fill(store, f"v{n}", float(n), n_users=2, n_items=3)
            time.sleep(0.002)
        store.publish("v5")
        # model retention: keep exactly the versions kept manifests name (v2 is a rollback target)
        assert sorted(store.gc(keep=0, protect={"v2", "v4"})) == ["v1", "v3"]
        assert store.versions() == ["v2", "v4", "v5"]
        assert store.gc(keep=0, protect={"v2", "v4"}) == []  # idempotent
        assert store.lookup("u0", ["i0"], version="v2").items[0, 0] == 2.0

    def test_float16_round_trip(self, make_store: MakeStore) -> None:
        store = make_store(dtype="float16")
        store.declare("h1", {"user": 4, "item": 4})
        vec = np.array([[0.1, -2.5, 1000.0, 3e-3]], dtype=np.float32)
        store.write("h1", "user", ["a"], vec)
        with pytest.raises(DataError, match="float16"):
            store.write("h1", "item", ["x"], np.full((1, 4), 1e6))  # overflows float16
        store.publish("h1")
        got = store.lookup("a", [])
        assert got.user is not None and got.user.dtype == np.float32
        np.testing.assert_allclose(got.user, vec[0], rtol=1e-3)
        assert got.items.shape == (0, 4)
        assert store.describe().dtype == "float16"

    def test_version_switch_never_mixes(self, make_store: MakeStore) -> None:
        """A reader hammering lookups while versions are published and collected sees whole versions."""
        writer = make_store(pointer_ttl_s=0.01)
        reader = make_store(pointer_ttl_s=0.01)
        ids = [f"i{i}" for i in range(50)]
        fill(writer, "s0", 0.0)
        writer.publish("s0")
        stop = threading.Event()
        seen: list[tuple[str, set[float]]] = []
        errors: list[BaseException] = []

        def read() -> None:
            try:
                deadline = time.monotonic() + 20
                while not stop.is_set() and time.monotonic() < deadline and len(seen) < 50_000:
                    got = reader.lookup("u1", ids)
                    assert got.user is not None and not got.missing_items
                    values = {*np.unique(got.items).tolist(), *np.unique(got.user).tolist()}
                    seen.append((got.version, values))
            except BaseException as exc:  # surfaced in the main thread
                errors.append(exc)

        thread = threading.Thread(target=read)
        thread.start()
        try:
            for n in range(1, 9):
                fill(writer, f"s{n}", float(n))
                writer.publish(f"s{n}")
                writer.gc(keep=1)  # deletes the previous version while the reader may still hold it
                time.sleep(0.02)
        finally:
            stop.set()
            thread.join(timeout=30)
        assert not errors, errors[0]
        assert len(seen) > 10
        for version, values in seen:
            assert values == {float(version[1:])}, (version, values)
        assert len({v for v, _ in seen}) >= 2


    # -- incremental versions (a version holds what changed; reads resolve through its parents) -------
    def test_incremental_versions_read_through_their_lineage(self, make_store: MakeStore) -> None:
        store, reader = make_store(), make_store(pointer_ttl_s=0.0)
        views = _incremental_history(store)
        for version, view in views.items():
            _assert_view(reader, version, view)
        info = store.describe("b2")
        assert info.parent == "b1" and info.counts == {"user": 0, "item": 1}  # its writes (not the forgotten u2)
        assert store.describe("b0").parent is None
        assert reader.lookup("u2", ["i0"], version="b2").user is None  # forgotten in b2
        with pytest.raises(NotFound):
            store.declare("c1", {"user": 4, "item": 4}, parent="nope")
        with pytest.raises(Conflict):
            store.declare("c1", {"user": 5}, parent="b0")  # a tree has one dimension per kind
        with pytest.raises(Conflict):
            store.declare("b2", {"user": 4}, parent="b0")  # b2 already has a parent

    def test_gc_keeps_every_row_a_kept_version_reads_through_its_parents(self, make_store: MakeStore) -> None:
        store, reader = make_store(), make_store(pointer_ttl_s=0.0)
        views = _incremental_history(store)
        store.publish("b4")
        # keep b3 (an ancestor of b4 on the first branch), b4 and b2's child b5 is gone: what each kept
        # version reads must not change, though b0..b2 (their base and parents) are deleted
        assert sorted(store.gc(keep=0, protect={"b3", "b5"})) == ["b0", "b1", "b2", "r1"]
        assert store.versions() == ["b3", "b4", "b5"]
        for version in ("b3", "b4", "b5"):
            _assert_view(reader, version, views[version])
        for gone in ("b0", "b1", "b2", "r1"):
            with pytest.raises(NotFound):
                reader.lookup("u0", ["i0"], version=gone)
        assert store.gc(keep=0, protect={"b3", "b5"}) == []  # idempotent
        assert sorted(store.gc(keep=0, protect={"b5"})) == ["b3"]
        for version in ("b4", "b5"):
            _assert_view(reader, version, views[version])
        assert store.gc(keep=0) == ["b5"]  # b5's branch is dead: its rows go, b4 still reads its own
        _assert_view(reader, "b4", views["b4"])
        store.declare("b6", {"user": 4, "item": 4}, parent="b4")
        store.write("b6", "user", ["u0"], np.full((1, 4), 60.0))
        store.publish("b6")
        assert store.gc(keep=0) == ["b4"]
        _assert_view(reader, "b6", {**views["b4"], ("user", "u0"): 60.0})


def _incremental_history(store: EmbeddingStore) -> dict[str, dict[tuple[str, str], float | None]]:
    """A base, a chain, a rollback branch and an unrelated full version; what each version reads.

    b0 (full) ← b1 ← b2 ← b3 ← b4 and b2 ← b5 (a rollback to b2 then a new version); r1 (full).
    """
    ids = {"user": [f"u{i}" for i in range(4)], "item": [f"i{i}" for i in range(6)]}
    view: dict[tuple[str, str], float | None] = {(k, i): 0.5 for k, v in ids.items() for i in v}
    views: dict[str, dict[tuple[str, str], float | None]] = {}
    store.declare("b0", {"user": 4, "item": 4})
    for kind, keys in ids.items():
        store.write("b0", kind, keys, np.full((len(keys), 4), 0.5))
    views["b0"] = dict(view)
    changes = {  # version: (parent, {(kind, id): value or None to forget})
        "b1": ("b0", {("user", "u1"): 1.0, ("item", "i1"): 1.0, ("item", "i5"): None}),
        "b2": ("b1", {("user", "u2"): None, ("item", "i1"): 2.0}),
        "b3": ("b2", {("user", "u1"): 3.0, ("item", "i2"): 3.0, ("item", "i5"): 3.0}),
        "b4": ("b3", {("user", "u3"): 4.0, ("item", "i2"): 4.0}),
        "b5": ("b2", {("user", "u1"): 5.0, ("item", "i0"): 5.0}),
    }
    for version, (parent, change) in changes.items():
        view = dict(views[parent])
        store.declare(version, {"user": 4, "item": 4}, parent=parent)
        for (kind, key), value in change.items():
            if value is None:
                store.forget(version, kind, [key])  # type: ignore[arg-type]
            else:
                store.write(version, kind, [key], np.full((1, 4), value))  # type: ignore[arg-type]
            view[(kind, key)] = value
        views[version] = view
    store.declare("r1", {"user": 4, "item": 4})
    store.write("r1", "user", ["u0"], np.full((1, 4), 9.0))
    return views


def _assert_view(store: EmbeddingStore, version: str, view: dict[tuple[str, str], float | None]) -> None:
    for kind in ("user", "item"):
        keys = sorted(i for k, i in view if k == kind)
        vecs, missing = store.get_many(kind, keys, version=version)  # type: ignore[arg-type]
        for n, key in enumerate(keys):
            want = view[(kind, key)]
            assert (n in missing) == (want is None), (version, kind, key)
            if want is not None:
                assert float(vecs[n, 0]) == want, (version, kind, key, float(vecs[n, 0]), want)
    items = sorted(i for k, i in view if k == "item")
    got = store.lookup("u1", items, version=version)
    assert got.version == version and got.user is not None and float(got.user[0]) == view[("user", "u1")]


@pytest.fixture(params=["memory", "file"])
def make_store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[MakeStore]:
    name = uuid.uuid4().hex
    opened: list[EmbeddingStore] = []

    def make(**overrides: object) -> EmbeddingStore:
        url = f"memory://{name}" if request.param == "memory" else f"file://{tmp_path / 'fs'}"
        store = open_store(url, FeatureStoreSettings(**overrides))  # type: ignore[arg-type]
        opened.append(store)
        return store

    yield make
    for store in opened:
        store.close()


class TestLocalBackends(StoreContract):
    pass
