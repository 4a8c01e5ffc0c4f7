"""Buffers, vocabulary and prequential metrics of the continual trainer."""

from __future__ import annotations

import numpy as np
import pytest

from trainer.evaluation import auc
from trainer.service.buffers import DomainBuffers
from trainer.service.prequential import Prequential
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
    round_figs = pq.update("d", labels, probs)
    assert abs(round_figs["auc"] - auc(labels, probs)) < 1e-12
    assert abs(pq.cumulative()["d"]["auc"] - round_figs["auc"]) < 2e-3


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
