"""The paired AUC test behind the per-domain θi selection, and the selection's one-standard-error rule."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
import torch

from tests.support.frameworks_toy import toy_dataset, toy_model
from trainer.evaluation import auc, paired_auc_z
from trainer.frameworks import FrameworkConfig, build_framework, fit


def _delong_by_pairs(labels: np.ndarray, a: np.ndarray, b: np.ndarray) -> float:
    """DeLong's z written out over every positive/negative pair (the definition, O(m n))."""
    pos, neg = np.flatnonzero(labels), np.flatnonzero(~labels)

    def psi(s: np.ndarray) -> np.ndarray:
        out = np.zeros((len(pos), len(neg)))
        for (i, p), (j, n) in itertools.product(enumerate(pos), enumerate(neg)):
            out[i, j] = 1.0 if s[p] > s[n] else 0.5 if s[p] == s[n] else 0.0
        return out

    pa, pb = psi(a), psi(b)
    d10 = pa.mean(axis=1) - pb.mean(axis=1)
    d01 = pa.mean(axis=0) - pb.mean(axis=0)
    var = d10.var(ddof=1) / len(pos) + d01.var(ddof=1) / len(neg)
    return float((pa.mean() - pb.mean()) / np.sqrt(var))


def test_paired_z_matches_the_pairwise_definition_with_ties() -> None:
    rng = np.random.default_rng(3)
    labels = rng.random(60) < 0.4
    a = np.round(labels + rng.normal(0, 1, 60), 1)  # rounding makes ties
    b = np.round(0.5 * labels + rng.normal(0, 1, 60), 1)
    assert paired_auc_z(labels, a, b) == pytest.approx(_delong_by_pairs(labels, a, b), rel=1e-9)
    assert paired_auc_z(labels, b, a) == pytest.approx(-paired_auc_z(labels, a, b))
    assert paired_auc_z(labels, a, a) == 0.0
    assert np.isnan(paired_auc_z(np.ones(5, dtype=bool), a[:5], b[:5]))
    one_positive = np.array([True, False, False, False])
    assert np.isnan(paired_auc_z(one_positive, np.array([0.9, 0.1, 0.2, 0.3]), np.array([0.1, 0.9, 0.2, 0.3])))


def test_paired_z_grows_with_the_evidence() -> None:
    """The same AUC gap is noise on a few rows and certain on many: z scales with √n."""
    rng = np.random.default_rng(0)
    zs = []
    for n in (200, 20_000):
        labels = rng.random(n) < 0.3
        noise = rng.normal(0, 1, n)
        a, b = 1.0 * labels + noise, 0.9 * labels + noise + rng.normal(0, 0.3, n)
        assert auc(labels, a) > auc(labels, b)
        zs.append(paired_auc_z(labels, a, b))
    assert 5 < zs[1] / zs[0] < 20  # √100 = 10


def test_selection_keeps_theta_i_only_beyond_noise() -> None:
    """A stricter rule keeps a subset of the looser rule's θi, and an impossible bar keeps none (θS alone)."""
    ds = toy_dataset(n_domains=3, rows=96)
    kept = {}
    for se in (0.0, 1.0, 1e9):
        torch.manual_seed(0)
        dr = build_framework("dr", toy_model(ds), ds, FrameworkConfig(batch_size=32, k=1, epochs=3, dr_epochs=3,
                                                                     patience=2, dr_select_se=se))
        result = fit(dr)
        kept[se] = set(dr.params.deltas)
        assert result.kept_deltas == len(kept[se])
    assert kept[0.0] and kept[1.0] <= kept[0.0] and kept[1e9] == set()
