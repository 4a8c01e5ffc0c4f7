"""The synthetic generator: scale, skew, conflict and a learnable logistic ground truth."""

from __future__ import annotations

import time

import numpy as np

from trainer.data import load_dataset, make_synthetic
from trainer.data.synthetic import true_logit
from trainer.evaluation import auc


def _sizes(ds) -> np.ndarray:
    return np.array([len(ds.train[d]) + len(ds.val[d]) + len(ds.test[d]) for d in range(ds.n_domains)])


def test_ten_thousand_domains_build_fast_and_light() -> None:
    start = time.perf_counter()
    ds = make_synthetic(10_000, 20_000, 5_000, 50, skew=1.0, conflict=0.5, seed=0)
    elapsed = time.perf_counter() - start
    assert ds.n_domains == 10_000 and len(set(ds.domains)) == 10_000
    assert elapsed < 8.0, f"10,000 domains took {elapsed:.1f}s"
    # rows are views into one array per column: 20 bytes a row, no per-domain copies
    bases = {id(s.user.base) for part in (ds.train, ds.val, ds.test) for s in part.values()}
    assert len(bases) == 1
    sizes = _sizes(ds)
    assert sizes.min() >= 20 and sizes.max() > 50 * sizes.min()  # Zipf(1) skew over domains


def test_skew_zero_gives_equal_sizes_and_splits_are_60_20_20() -> None:
    ds = make_synthetic(5, 100, 50, 1000, skew=0.0, seed=1)
    assert (_sizes(ds) == 1000).all()
    assert [len(ds.train[d]) for d in range(5)] == [600] * 5
    assert [len(ds.val[d]) for d in range(5)] == [200] * 5


def test_conflict_controls_how_far_domain_directions_depart() -> None:
    def mean_cos(conflict: float) -> float:
        w = make_synthetic(40, 50, 50, 20, conflict=conflict, seed=2).info["direction"]
        cos = w @ w.T
        return float(cos[np.triu_indices(40, 1)].mean())

    assert mean_cos(0.0) > 0.999
    assert mean_cos(0.0) > mean_cos(0.3) > mean_cos(0.7) > mean_cos(1.0)
    assert abs(mean_cos(1.0)) < 0.2  # independent directions: about half the pairs conflict


def test_labels_follow_the_logistic_ground_truth() -> None:
    ds = make_synthetic(4, 500, 300, 5000, conflict=0.8, seed=3, signal=3.0)
    for d in range(4):
        s = ds.test[d]
        logit = true_logit(ds, s.user, s.item, np.full(len(s), d))
        assert auc(s.label, logit) > 0.75
        # calibrated: mean predicted probability matches the click rate
        assert abs(float((1 / (1 + np.exp(-logit))).mean() - s.label.mean())) < 0.04
    # under high conflict, one domain's truth ranks another domain's rows worse than its own truth
    s = ds.test[0]
    own = auc(s.label, true_logit(ds, s.user, s.item, np.zeros(len(s), dtype=np.int64)))
    other = auc(s.label, true_logit(ds, s.user, s.item, np.ones(len(s), dtype=np.int64)))
    assert own > other + 0.05


def test_synthetic_is_deterministic_and_reachable_by_name() -> None:
    a = load_dataset("synthetic", seed=4, n_domains=3, n_users=40, n_items=30, rows_per_domain=100)
    b = make_synthetic(3, 40, 30, 100, seed=4)
    c = make_synthetic(3, 40, 30, 100, seed=5)
    for d in range(3):
        np.testing.assert_array_equal(a.train[d].item, b.train[d].item)
        np.testing.assert_array_equal(a.train[d].label, b.train[d].label)
    assert not np.array_equal(a.train[0].item, c.train[0].item)
