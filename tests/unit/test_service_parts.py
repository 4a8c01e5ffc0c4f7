"""Buffers, vocabulary and prequential metrics of the continual trainer."""

from __future__ import annotations

import numpy as np

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
