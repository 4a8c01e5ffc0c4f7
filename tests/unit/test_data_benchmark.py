"""The paper's CTR benchmark built from the shipped ml-latest-small (genre domains)."""

from __future__ import annotations

import time

import numpy as np
import pytest

from contracts.events import is_domain_id
from trainer.data import MultiDomainDataset, build_benchmark_table, ctr_benchmark, load_dataset, read_interactions
from trainer.data.ctr_benchmark import BenchmarkTable, build_ctr_benchmark
from trainer.data.interactions import Interactions


@pytest.fixture(scope="module")
def table() -> BenchmarkTable:
    return build_benchmark_table("ml-latest-small", seed=0)


@pytest.fixture(scope="module")
def ml(table: BenchmarkTable) -> MultiDomainDataset:
    return table.to_dataset()


def _all_rows(ds: MultiDomainDataset, d: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    parts = (ds.train[d], ds.val[d], ds.test[d])
    return (np.concatenate([p.user for p in parts]), np.concatenate([p.item for p in parts]),
            np.concatenate([p.label for p in parts]))


def test_shipped_copy_builds_genre_domains_quickly() -> None:
    start = time.perf_counter()
    ds = load_dataset("ml-latest-small", seed=3)
    elapsed = time.perf_counter() - start
    assert elapsed < 10.0, f"building ml-latest-small took {elapsed:.1f}s"
    assert ds.n_domains >= 10
    assert ds.n_domains == 19  # 20 genres, "(no genres listed)" dropped
    assert all(is_domain_id(d) for d in ds.domains)
    assert {"film-noir", "sci-fi", "crime", "imax"} <= set(ds.domains)
    assert "no-genres-listed" not in ds.domains
    assert ds.info["domain_names"][ds.domains.index("film-noir")] == "Film-Noir"
    assert ds.n_users == 610 and "1" in ds.user_ids and "318" in ds.item_ids
    for split in (ds.train, ds.val, ds.test):
        assert set(split) == set(range(ds.n_domains))
        for s in split.values():
            assert s.user.dtype == np.int64 and s.item.dtype == np.int64 and s.label.dtype == np.float32
            assert s.user.max() < ds.n_users and s.item.max() < ds.n_items


def test_keep_no_genre_adds_that_domain() -> None:
    inter = read_interactions("ml-latest-small", keep_no_genre=True)
    assert len(inter.domains) == 20 and "no-genres-listed" in inter.domains
    assert int((inter.domain == inter.domains.index("no-genres-listed")).sum()) == 47


def test_items_are_disjoint_across_domains_and_domains_match_rarest_genre(ml: MultiDomainDataset) -> None:
    owner: dict[int, int] = {}
    for d in range(ml.n_domains):
        for i in np.unique(_all_rows(ml, d)[1]).tolist():
            assert owner.setdefault(i, d) == d
    crime = ml.domains.index("crime")
    # 12,100 ratings go to Crime under the rarest-genre rule (trainer/datasets/ml_latest_small/SOURCE.md);
    # all are positives here
    assert int(_all_rows(ml, crime)[2].sum()) == 12_100


def test_same_seed_same_arrays_and_another_seed_differs(ml: MultiDomainDataset) -> None:
    again = load_dataset("ml-latest-small", seed=0)
    other = load_dataset("ml-latest-small", seed=1)
    assert again.domains == ml.domains and again.ctr_ratio == ml.ctr_ratio
    for d in range(ml.n_domains):
        for a, b in ((ml.train[d], again.train[d]), (ml.val[d], again.val[d]), (ml.test[d], again.test[d])):
            np.testing.assert_array_equal(a.user, b.user)
            np.testing.assert_array_equal(a.item, b.item)
            np.testing.assert_array_equal(a.label, b.label)
    assert other.ctr_ratio != ml.ctr_ratio
    assert not all(np.array_equal(ml.train[d].item, other.train[d].item) for d in range(ml.n_domains))


def test_split_is_60_20_20_per_domain_and_stratified(ml: MultiDomainDataset) -> None:
    for d in range(ml.n_domains):
        sizes = np.array([len(ml.train[d]), len(ml.val[d]), len(ml.test[d])], dtype=float)
        np.testing.assert_allclose(sizes / sizes.sum(), [0.6, 0.2, 0.2], atol=0.03)
        pos = np.array([ml.train[d].label.sum(), ml.val[d].label.sum(), ml.test[d].label.sum()])
        np.testing.assert_allclose(pos / pos.sum(), [0.6, 0.2, 0.2], atol=0.01)
        for s in (ml.val[d], ml.test[d]):
            assert 0 < s.label.mean() < 1  # both classes, so AUC is defined


def test_ctr_ratios_in_range_and_negatives_follow_the_paper(table: BenchmarkTable) -> None:
    src = table.source
    observed = set(zip(src.domain.tolist(), src.user.tolist(), src.item.tolist(), strict=True))
    assert all(0.2 <= r <= 0.5 for r in table.ctr_ratio)
    assert len(set(np.round(table.ctr_ratio, 6).tolist())) == len(table.ctr_ratio)  # drawn per domain
    neg = table.label == 0
    triples = list(zip(table.domain[neg].tolist(), table.user[neg].tolist(), table.item[neg].tolist(),
                       strict=True))
    assert not observed & set(triples), "a negative is an item the user interacted with"
    assert len(set(triples)) == len(triples), "negatives are drawn without replacement"
    item_domain = dict(zip(src.item.tolist(), src.domain.tolist(), strict=True))
    assert all(item_domain[i] == d for d, _, i in triples), "negatives come from the domain's own pool"
    pool = np.bincount(np.array(list(item_domain.values())), minlength=len(src.domains))
    # per (user, domain): int(#pos / ratio) negatives, capped at the unclicked part of the pool
    key_pos = table.domain[~neg] * len(src.user_ids) + table.user[~neg]
    key_neg = table.domain[neg] * len(src.user_ids) + table.user[neg]
    keys, n_pos = np.unique(key_pos, return_counts=True)
    n_neg = np.bincount(np.searchsorted(keys, key_neg), minlength=keys.shape[0])
    d = keys // len(src.user_ids)
    want = np.minimum((n_pos / table.ctr_ratio[d]).astype(np.int64), pool[d] - n_pos)
    np.testing.assert_array_equal(n_neg, want)


def test_each_users_negatives_are_split_60_20_20(table: BenchmarkTable) -> None:
    neg = table.label == 0
    key = table.domain[neg] * len(table.source.user_ids) + table.user[neg]
    _, inverse, counts = np.unique(key, return_inverse=True, return_counts=True)
    for code, share in ((0, 0.6), (1, 0.2)):
        got = np.bincount(inverse, weights=table.split[neg] == code)
        np.testing.assert_array_equal(got, np.floor(share * counts + 0.5) if code == 0 else
                                      np.floor(0.8 * counts + 0.5) - np.floor(0.6 * counts + 0.5))


def test_rating_variant_has_real_negatives() -> None:
    ds = load_dataset("ml-latest-small", seed=0, negatives="rating", domains="crime,film-noir")
    assert ds.domains == ["crime", "film-noir"]
    rows = sum(len(s) for s in (*ds.train.values(), *ds.val.values(), *ds.test.values()))
    assert rows == 12_100 + 870
    # trainer/datasets/ml_latest_small/SOURCE.md: 53.5% of Crime ratings are >= 4
    assert ds.ctr_ratio[0] == pytest.approx(0.535, abs=0.001)
    assert ds.ctr_ratio[1] == pytest.approx(0.676, abs=0.001)


def test_max_domains_keeps_the_largest() -> None:
    ds = load_dataset("ml-latest-small", max_domains=10)
    assert ds.domains == ["crime", "romance", "sci-fi", "comedy", "horror", "drama", "mystery", "fantasy",
                          "animation", "war"]


def test_large_pools_sample_exactly_by_rejection_and_small_remainders_densely(monkeypatch) -> None:
    """Pools above 4,096 items take the rejection path for light users; a heavy user takes the dense one."""
    rng = np.random.default_rng(0)
    n_users = 300
    light = [rng.choice(6000, size=8, replace=False) for _ in range(n_users - 1)]
    item = np.concatenate([*light, np.arange(4000)]).astype(np.int64)  # the last user clicks 4,000 items
    user = np.repeat(np.arange(n_users), [8] * (n_users - 1) + [4000]).astype(np.int64)
    m = int(item.max()) + 1
    src = Interactions(name="big", domains=["big"], domain_names=["big"],
                       user_ids=[str(u) for u in range(n_users)], item_ids=[str(i) for i in range(m)],
                       user=user, item=item, domain=np.zeros_like(user),
                       ts=rng.random(user.shape[0]) * 1e6, rating=np.full(user.shape[0], np.nan, np.float32))
    calls: dict[str, int] = {}
    for name in ("_rejection_draw", "_dense_draw"):
        real = getattr(ctr_benchmark, name)

        def counted(rows, *args, _real=real, _name=name):  # type: ignore[no-untyped-def]
            calls[_name] = calls.get(_name, 0) + int(rows.shape[0])
            return _real(rows, *args)

        monkeypatch.setattr(ctr_benchmark, name, counted)
    table = build_ctr_benchmark(src, seed=5)
    assert calls == {"_rejection_draw": n_users - 1, "_dense_draw": 1}
    neg = table.label == 0
    pool = np.unique(item)
    assert pool.shape[0] > 4096
    clicked = set((user * m + item).tolist())
    codes = (table.user[neg] * m + table.item[neg]).tolist()
    assert not clicked & set(codes) and len(set(codes)) == len(codes)
    n_pos = np.bincount(user, minlength=n_users)
    want = np.minimum((n_pos / table.ctr_ratio[0]).astype(np.int64), pool.shape[0] - n_pos)
    assert want[-1] == pool.shape[0] - 4000  # the heavy user takes every unclicked item
    np.testing.assert_array_equal(np.bincount(table.user[neg], minlength=n_users), want)
    light_rows = neg & (table.user < n_users - 1)
    counts = np.bincount(table.item[light_rows], minlength=m)[pool]
    expected = light_rows.sum() / pool.shape[0]
    assert abs(counts.mean() - expected) < 1e-9 and counts.var() < 2.0 * expected  # ~Poisson: uniform draws
