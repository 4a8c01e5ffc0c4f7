"""Incremental publish (issue 13.3): a version writes what changed since its parent, with the same guarantees.

The trainer runs in-process on the embedded backends (file:// stream and feature store, sqlite
registry) with a tiny MLP. Rounds touch a slice of many users and items, and ids expire, so an
incremental version holds trained rows, new rows and tombstones. Checked: every version the store
keeps reads exactly the trainer's tables of that version; a rolled-back-to incremental version
scores exactly as when it was published (serving's path), and a trainer resumed from its chained
checkpoint predicts exactly as the trainer that published it; retention keeps the base and parents
kept versions need; the bytes a version writes follow the rows it changed, not the table.
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import torch

from contracts.events import ClickEvent
from contracts.settings import ServingSettings, StreamSettings, load_settings
from domain_registry import open_registry
from feature_store import open_store
from feature_store.base import EmbeddingStore
from serving.live import build_live
from stream import open_stream
from trainer.service.loop import ContinualTrainer
from trainer.service.retention import published_versions
from trainer.service.state import CHECKPOINT_DIR, ModelState, checkpoint_chain, read_chain

DOMAINS = ("alpha", "beta", "gamma")


def produce(url: str, start: int, count: int, users: int = 600, items: int = 400, window: int = 150) -> int:
    """Clicks on a sliding window of ids: each round touches a slice, old ids stop being seen."""
    stream = open_stream(url, StreamSettings(partitions=1, create_topics=True))
    with stream.producer() as producer:
        for n in range(start, start + count):
            base = (start // 300) * 40
            producer.send(ClickEvent(event_id=f"e{n}", ts=time.time(), domain=DOMAINS[n % 3],
                                     user_id=f"u{(base + n * 7) % window + base}",
                                     item_id=f"i{(base + n * 11) % window + base}", clicked=(n // 3) % 2))
        producer.flush()
    stream.close()
    return start + count


def make_trainer(tmp: Path, **trainer: object) -> ContinualTrainer:
    overrides = {f"trainer.{k}": v for k, v in {"round_events": 300, "inner_batches": 1, "batch_size": 64,
                                                 "round_seconds": 3600.0, "min_batches": 2, **trainer}.items()}
    settings = load_settings(**{"stream.url": f"file://{tmp}/stream/clicks", "stream.partitions": 1,
                                "stream.create_topics": True, "feature_store.url": f"file://{tmp}/fs",
                                "registry.url": f"sqlite://{tmp}/reg.db", "artifacts_url": f"file://{tmp}/artifacts",
                                **overrides})
    registry = open_registry(settings.registry.url)
    for d in DOMAINS:
        if d not in {x.id for x in registry.list_domains()}:
            registry.create_domain(d)
    return ContinualTrainer(settings, stream=open_stream(settings.stream.url, settings.stream),
                            store=open_store(settings.feature_store.url, settings.feature_store), registry=registry,
                            artifacts=tmp / "artifacts", model_config={"emb_dim": 4, "hidden": (8,)})


def assert_store_matches(store: EmbeddingStore, state: ModelState, version: str) -> None:
    """The store at ``version`` holds exactly the rows ids own in ``state``, nothing else."""
    for kind, vocab, table in (("user", state.users, state.model.user_embedding),
                               ("item", state.items, state.model.item_embedding)):
        ids, rows = vocab.live()
        got, missing = store.get_many(kind, ids, version=version)  # type: ignore[arg-type]
        assert missing == [], (version, kind, [ids[m] for m in missing][:5])
        np.testing.assert_array_equal(got, table.weight.detach()[rows].numpy(), err_msg=f"{version} {kind}")
        gone = [k for k in (vocab.ids + [f"{kind[0]}{n}" for n in range(2000)]) if k is not None and k not in vocab]
        assert len(store.get_many(kind, gone, version=version)[1]) == len(gone), (version, kind)  # type: ignore[arg-type]


def serve(root: Path, store: EmbeddingStore, version: str, requests: list[tuple[str, str, list[str]]]) -> list:
    """Scores as serving computes them: the version's graph + deltas and the embeddings it names."""
    live = build_live(root / version, ServingSettings())
    out = []
    for domain, user, items in requests:
        found = store.lookup(user, items, version=live.feature_store_version)
        u = live.cold_user if found.user is None else found.user
        vecs = found.items.copy()
        vecs[found.missing_items] = live.cold_item
        users = np.ascontiguousarray(u, dtype=np.float32).reshape(1, -1)  # one user row, as scoring feeds it
        out.append(live.composer.logits(domain, users, np.ascontiguousarray(vecs, dtype=np.float32)).tolist())
    return out


def test_incremental_versions_keep_every_guarantee(tmp_path: Path) -> None:
    url = f"file://{tmp_path}/stream/clicks"
    root = tmp_path / "artifacts"
    trainer = make_trainer(tmp_path, keep_versions=2, pinned_versions=("v000003",), expire_rounds=2,
                           checkpoint_rebase_ratio=100.0)
    requests = [(d, f"u{n * 13}", [f"i{k}" for k in range(n * 20, n * 20 + 30)]) for n, d in enumerate(DOMAINS)]
    n, scores, predicted, published = 0, {}, {}, []
    for r in range(7):
        n = produce(url, n, 300)
        version = trainer.run(max_rounds=1, idle_exit_s=0.3)[-1].version
        published.append(version)
        state = trainer.state
        assert state is not None
        assert_store_matches(trainer.store, state, version)
        info = trainer.store.describe(version)
        if r == 0:
            assert info.parent is None and trainer.last_publish["checkpoint"] == "full"
        else:  # an incremental version: its parent, only the rows this round changed
            assert info.parent == published[-2] and trainer.last_publish["fs_parent"] == published[-2]
            assert trainer.last_publish["checkpoint"] == "rows"
            assert info.counts["user"] < state.users.active + 1 and info.counts["user"] <= 300
        if r >= 3:
            assert trainer.last_publish["rows"]["forgotten"] > 0  # expired ids became tombstones
        scores[version] = serve(root, trainer.store, version, requests)
        predicted[version] = [state.predict(d, [u] * len(items), items).tolist() for d, u, items in requests]
        if version == "v000003":
            weights = {k: v.detach().clone() for k, v in state.model.state_dict().items()}
    trainer.close()
    # retention kept the newest two, the pinned v000003 and the live one, and every link their chains need
    kept = published_versions(root)
    assert kept == ["v000003", "v000006", "v000007"], kept
    chains = {v: checkpoint_chain(root, v) for v in kept}
    assert chains["v000007"][-1] == "v000001" and len(chains["v000007"]) == 7  # the base survives: referenced
    assert read_chain(root, "v000001")["kind"] == "full"
    assert sorted(p.name for p in (root / CHECKPOINT_DIR).iterdir()) == published
    store = open_store(f"file://{tmp_path}/fs")
    assert sorted(store.versions()) == kept
    for version in kept:  # the deleted parents' rows these versions read are all still there
        assert serve(root, store, version, requests) == scores[version], version
    # roll back to the pinned incremental version: serving's scores come back exactly
    registry = open_registry(f"sqlite://{tmp_path}/reg.db")
    registry.promote("v000003")
    assert serve(root, store, "v000003", requests) == scores["v000003"]
    # and a trainer resumed from its chained checkpoint is the trainer that published it
    resumed = make_trainer(tmp_path, keep_versions=2, pinned_versions=("v000003",), expire_rounds=2)
    resumed.start()
    assert resumed.live_version == "v000003"
    state = resumed.state
    assert state is not None
    assert [state.predict(d, [u] * len(items), items).tolist() for d, u, items in requests] == predicted["v000003"]
    restored = state.model.state_dict()  # every tensor, also the table rows no id owns (keyed draws)
    assert sorted(restored) == sorted(weights)
    for name, value in weights.items():
        assert torch.equal(restored[name], value), name
    assert_store_matches(store, state, "v000003")
    n = produce(url, n, 300)
    version = resumed.run(max_rounds=1, idle_exit_s=0.3)[-1].version
    assert resumed.store.describe(version).parent == "v000003"  # the new branch reads through v000003
    assert_store_matches(resumed.store, state, version)
    resumed.close()
    for v in published_versions(root):
        if v in scores:
            assert serve(root, store, v, requests) == scores[v], v


def test_bytes_per_version_follow_the_rows_changed_not_the_table(tmp_path: Path) -> None:
    """Two lineages whose tables saw 2,000 and 20,000 ids: same rounds, same incremental bytes."""
    written: dict[int, dict[str, int]] = {}
    for n_ids in (2_000, 20_000):
        tmp = tmp_path / str(n_ids)
        trainer = make_trainer(tmp, keep_versions=10)
        trainer.start()
        state = trainer.state
        assert state is not None
        state.ensure([f"u{k}" for k in range(n_ids)], [f"i{k}" for k in range(n_ids)], [])
        trainer._rebuild_framework()
        url, n, sizes = f"file://{tmp}/stream/clicks", 0, []
        for _ in range(3):
            n = produce(url, n, 300)
            version = trainer.run(max_rounds=1, idle_exit_s=0.3)[-1].version
            folder = tmp / "artifacts" / CHECKPOINT_DIR / version
            sizes.append(sum(p.stat().st_size for p in folder.iterdir()))
        info = trainer.store.describe(version)
        written[n_ids] = {"checkpoint_full": sizes[0], "checkpoint_last": sizes[-1],
                          "fs_rows": info.counts["user"] + info.counts["item"]}
        assert trainer.last_publish["checkpoint"] == "rows" and info.parent is not None
        trainer.close()
    small, big = written[2_000], written[20_000]
    assert big["checkpoint_full"] > 5 * small["checkpoint_full"]  # the first (full) version follows the table
    assert big["fs_rows"] == small["fs_rows"] < 600  # an incremental one follows the rows changed
    assert big["checkpoint_last"] < 1.2 * small["checkpoint_last"], written


def test_a_parent_the_store_refuses_gives_a_full_version(tmp_path: Path) -> None:
    """A store that cannot chain onto the live version (e.g. Redis data of the layout before
    incremental versions) gets a full version instead of a round that fails forever."""
    from contracts.errors import Conflict

    url = f"file://{tmp_path}/stream/clicks"
    trainer = make_trainer(tmp_path)
    n = produce(url, 0, 300)
    trainer.run(max_rounds=1, idle_exit_s=0.3)
    declare = trainer.store.declare

    def refuse_parents(version: str, dims: dict, parent: str | None = None) -> None:  # type: ignore[type-arg]
        if parent is not None:
            raise Conflict(f"version {parent!r} was written before incremental versions")
        declare(version, dims)

    trainer.store.declare = refuse_parents  # type: ignore[method-assign]
    produce(url, n, 300)
    version = trainer.run(max_rounds=1, idle_exit_s=0.3)[-1].version
    assert trainer.last_publish["fs_parent"] is None and trainer.store.describe(version).parent is None
    assert trainer.last_publish["checkpoint"] == "rows"  # the checkpoint chain does not depend on the store
    state = trainer.state
    assert state is not None
    assert_store_matches(trainer.store, state, version)
    trainer.close()
