"""Buffers, vocabulary and prequential metrics of the continual trainer."""

from __future__ import annotations

import numpy as np
import pytest

from trainer.evaluation import auc
from trainer.service.buffers import DomainBuffers
from trainer.service.prequential import BINS, Prequential
from trainer.service.vocab import Vocab


def test_vocab_rows_are_stable_and_grow(tmp_path):
    v = Vocab(["a", "b"])
    assert list(v.rows(["b", "c", "a"])) == [1, 2, 0]
    assert list(v.rows(["zz"], add=False)) == [-1]
    v.save(tmp_path / "v.json")
    assert Vocab.load(tmp_path / "v.json").ids == ["a", "b", "c"]


def test_buffers_stay_bounded_and_count_drops():
    buf = DomainBuffers(per_domain=100, reservoir=50, seed=1)
    n = 1_000
    buf.add(3, np.arange(n), np.arange(n), np.ones(n, dtype=np.float32))
    assert buf.pending() == 100 and buf.dropped == 900
    fresh = buf.take_fresh()
    # a uniform sample, not the first 100 rows
    assert fresh[3]["user"].max() > 200
    buf.retire(fresh)
    assert len(buf.replay_rows(3)) == 50 and buf.pending() == 0


def test_histogram_auc_tracks_exact_auc():
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 2, 5_000).astype(np.float32)
    probs = np.clip(0.5 + 0.2 * (labels - 0.5) + rng.normal(0, 0.2, 5_000), 0, 1)
    pq = Prequential()
    pq.update_many(["d"], np.zeros(len(labels), dtype=np.int64), labels, probs)
    assert abs(pq.cumulative()["d"]["auc"] - auc(labels, probs)) < 2e-3


def test_the_trainer_never_dead_letters_because_the_registry_came_back_empty(tmp_path) -> None:
    from contracts.errors import BackendUnavailable
    from contracts.settings import StreamSettings, load_settings
    from domain_registry import open_registry
    from feature_store import open_store
    from stream import open_stream
    from trainer.service.loop import ContinualTrainer

    registry = open_registry(f"sqlite://{tmp_path}/r.db")
    registry.create_domain("comedy", actor="test")
    url = f"file://{tmp_path}/clicks"
    stream = open_stream(url, StreamSettings(url=url, create_topics=True))
    trainer = ContinualTrainer(load_settings(), stream=stream, store=open_store("memory://wiped"), registry=registry,
                               artifacts=tmp_path / "artifacts")
    trainer._refresh_domains(force=True)
    assert trainer._known == {"comedy": "active"}
    # what a Redis registry looks like after it came back empty: counter reset, no domains
    trainer.registry = type("Wiped", (), {"change_counter": lambda self: 0, "list_domains": lambda self: []})()
    with pytest.raises(BackendUnavailable, match="came back empty"):
        trainer._refresh_domains(now=True)
    assert stream.dead_letters_sent == 0


def test_batched_prequential_update_equals_per_domain_updates() -> None:
    rng = np.random.default_rng(1)
    codes = rng.integers(0, 5, 3_000)
    labels = rng.integers(0, 2, 3_000).astype(np.float32)
    probs = rng.random(3_000).astype(np.float32)
    many = Prequential()
    names = [f"d{k}" for k in range(6)]  # d5 has no event: it gets no figures
    many.update_many(names, codes, labels, probs)
    assert set(many.domains) == set(names[:5])
    for k in range(5):  # the per-domain definition: a histogram of each class's scores, the summed log loss
        y, p = labels[codes == k], probs[codes == k]
        bins = np.clip((p * BINS).astype(np.int64), 0, BINS - 1)
        stats = many.domains[names[k]]
        assert (stats.pos == np.bincount(bins[y > 0.5], minlength=BINS)).all()
        assert (stats.neg == np.bincount(bins[y <= 0.5], minlength=BINS)).all() and stats.n == len(y)
        q = np.clip(p.astype(np.float64), 1e-7, 1 - 1e-7)
        assert abs(stats.loss_sum + np.sum(y * np.log(q) + (1 - y) * np.log(1 - q))) < 1e-6 * len(y)


def test_batched_scoring_equals_scoring_domain_by_domain() -> None:
    import torch

    from trainer.models import ModelConfig
    from trainer.service.state import ModelState

    state = ModelState("mlp", ModelConfig(n_users=8, n_items=8, n_domains=0, emb_dim=8, hidden=(8,)), seed=2)
    domains = [f"d{k}" for k in range(5)]
    state.ensure([f"u{k}" for k in range(20)], [f"i{k}" for k in range(20)], domains)
    for vocab in (state.users, state.items, state.domains):
        vocab.clear_changes()  # published: the live version holds these rows
    published = state.cold_start()  # what the version published here holds for ids without a row
    state.ensure(["u-late"], ["i-late"], [])  # a row given after the publish: scored as an id without one
    for kind in ("user", "item"):  # and the cold-start vector stays the published one
        assert state._published_mean(kind).tolist() == published[kind]
    torch.manual_seed(0)
    for slot in (1, 3, 4):  # domains with a θi; 0 and 2 are served by θS
        state.params.set_delta(slot, {n: torch.randn_like(t) * 0.3 for n, t in state.params.delta(slot).items()})
    rng = np.random.default_rng(0)
    slots = rng.integers(0, 5, 300)
    slots[slots == 4] = 3  # d4 has a delta but no row in the batch
    slots[:1] = 4
    users = [f"u{k}" for k in rng.integers(0, 25, 300)]  # some without a row: the mean vector
    items = [f"i{k}" for k in rng.integers(0, 25, 300)]
    users[5], items[7] = "u-late", "i-late"
    shared, specific = state.predict_rows(slots, state.users.rows(users, add=False), state.items.rows(items, add=False))
    for slot in range(5):
        rows = np.flatnonzero(slots == slot)
        if not len(rows):
            continue
        u, i = [users[j] for j in rows], [items[j] for j in rows]
        np.testing.assert_allclose(shared[rows], state.predict(domains[slot], u, i, with_delta=False), atol=1e-6)
        np.testing.assert_allclose(specific[rows], state.predict(domains[slot], u, i), atol=1e-6)
    late = state.predict(domains[int(slots[5])], ["u-late", "u-never"], [items[5]] * 2)
    assert late[0] == late[1]  # the row given after the publish is not the live version's yet


def test_auc_is_sklearns_with_ties() -> None:
    from sklearn.metrics import roc_auc_score

    rng = np.random.default_rng(3)
    for n in (2, 7, 300, 4_000):
        labels = rng.integers(0, 2, n).astype(np.float32)
        labels[:2] = (0.0, 1.0)
        scores = np.round(rng.random(n), 1 if n > 7 else 3)  # many ties
        assert abs(auc(labels, scores) - roc_auc_score(labels, scores)) < 1e-12
