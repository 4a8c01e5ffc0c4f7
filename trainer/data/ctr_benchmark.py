"""The paper's CTR benchmark builder, shared by every raw source (MovieLens, Amazon).

Sampled variant (the paper's, default): positives are the observed interactions (deduplicated per
domain, earliest time kept); per user and domain, ``int(#positives / ctr_ratio)`` negatives are drawn
without replacement from the items of that domain the user never touched (capped at what is left), with
``ctr_ratio`` drawn per domain uniformly from ``ctr_range`` (so a domain's share of positive rows is
ratio / (1 + ratio), as in the authors' split.py). Each negative takes the timestamp of the positive it was
sampled against (a user's negatives are spread evenly over that user's positives in time order), so a
replay in time order interleaves them. Split: random 60/20/20 per domain over the positives, and per
(user, domain) over the negatives (stratified, as the authors did).

Rating variant (``negatives="rating"``): every rating is a row, label = rating >= ``click_threshold``; real
negatives, split 60/20/20 per domain stratified by label; ``ctr_ratio`` is then the observed click rate.

One ``numpy.random.Generator`` seeded once drives every draw, so the same seed gives identical arrays.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from contracts.errors import ConfigError, DataError
from trainer.data.base import MultiDomainDataset, Split
from trainer.data.interactions import Interactions

SPLITS = ("train", "val", "test")
_CHUNK_CELLS = 1 << 22  # users x pool cells drawn at once while sampling negatives (32 MB of float64)
_SPARSE_POOL = 4096  # pools larger than this use rejection sampling for users who need few of them


@dataclass
class BenchmarkTable:
    """All rows of a built benchmark, with time and split, before they become per-domain Splits."""

    source: Interactions
    domain: np.ndarray  # int64 [n]
    user: np.ndarray  # int64 [n]
    item: np.ndarray  # int64 [n]
    label: np.ndarray  # float32 [n]
    ts: np.ndarray  # float64 [n]
    split: np.ndarray  # int8 [n]: 0 train, 1 val, 2 test
    ctr_ratio: np.ndarray  # float64 [n_domains]
    seed: int
    negatives: str

    def __len__(self) -> int:
        return int(self.user.shape[0])

    def to_dataset(self) -> MultiDomainDataset:
        src = self.source
        n_domains = len(src.domains)
        key = self.domain * 3 + self.split
        order = np.argsort(key, kind="stable")
        bounds = np.searchsorted(key[order], np.arange(n_domains * 3 + 1))
        parts: list[dict[int, Split]] = [{}, {}, {}]
        for d in range(n_domains):
            for s in range(3):
                idx = order[bounds[d * 3 + s]: bounds[d * 3 + s + 1]]
                parts[s][d] = Split(user=np.ascontiguousarray(self.user[idx]),
                                    item=np.ascontiguousarray(self.item[idx]),
                                    label=np.ascontiguousarray(self.label[idx]))
        return MultiDomainDataset(
            name=src.name,
            domains=list(src.domains),
            user_ids=list(src.user_ids),
            item_ids=list(src.item_ids),
            train=parts[0],
            val=parts[1],
            test=parts[2],
            ctr_ratio={d: float(r) for d, r in enumerate(self.ctr_ratio)},
            info={"domain_names": list(src.domain_names), "seed": self.seed, "negatives": self.negatives},
        )


def _check_fractions(split: Sequence[float]) -> tuple[float, float, float]:
    if len(split) != 3 or min(split) < 0 or abs(sum(split) - 1.0) > 1e-6 or split[0] <= 0:
        raise ConfigError(f"split must be three fractions (train, val, test) summing to 1, got {list(split)}")
    return float(split[0]), float(split[1]), float(split[2])


def split_groups(group: np.ndarray, rng: np.random.Generator, fractions: Sequence[float]) -> np.ndarray:
    """Random train/val/test code per row, stratified within each group (60/20/20 of every group)."""
    n = group.shape[0]
    codes = np.zeros(n, dtype=np.int8)
    if n == 0:
        return codes
    keys = rng.random(n)
    order = np.lexsort((keys, group))
    g = group[order]
    starts = np.flatnonzero(np.r_[True, g[1:] != g[:-1]])
    sizes = np.diff(np.r_[starts, n])
    rank = np.arange(n) - np.repeat(starts, sizes)
    size = np.repeat(sizes, sizes)
    c1 = np.floor(fractions[0] * size + 0.5)
    c2 = np.floor((fractions[0] + fractions[1]) * size + 0.5)
    codes[order] = np.where(rank < c1, 0, np.where(rank < c2, 1, 2)).astype(np.int8)
    return codes


def dedupe_positives(src: Interactions) -> np.ndarray:
    """Row indices of the first (earliest) occurrence of each (domain, user, item)."""
    order = np.lexsort((src.ts, src.item, src.user, src.domain))
    d, u, i = src.domain[order], src.user[order], src.item[order]
    first = np.r_[True, (d[1:] != d[:-1]) | (u[1:] != u[:-1]) | (i[1:] != i[:-1])]
    return order[first]


def _dense_draw(rows: np.ndarray, want: np.ndarray, row_of: np.ndarray, local: np.ndarray, m: int,
                rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Exact draw for the given user rows: random keys over the whole pool, own items forced last."""
    out: list[tuple[np.ndarray, np.ndarray, np.ndarray]] = []
    slot = np.full(want.shape[0], -1, dtype=np.int64)
    step = max(1, _CHUNK_CELLS // max(m, 1))
    for lo in range(0, rows.shape[0], step):
        chunk = rows[lo:lo + step]
        slot[chunk] = np.arange(chunk.shape[0])
        keys = rng.random((chunk.shape[0], m))
        sel = slot[row_of] >= 0
        keys[slot[row_of[sel]], local[sel]] = 2.0  # the user's own items sort last and are never taken
        slot[chunk] = -1
        k = want[chunk]
        kmax = int(k.max())
        if kmax < m:
            part = np.argpartition(keys, kmax - 1, axis=1)[:, :kmax]
            ranked = np.take_along_axis(part, np.argsort(np.take_along_axis(keys, part, 1), axis=1), 1)
        else:
            ranked = np.argsort(keys, axis=1)
        r, j = np.nonzero(np.arange(kmax)[None, :] < k[:, None])
        out.append((chunk[r], ranked[r, j], j))
    return tuple(np.concatenate(col) for col in zip(*out, strict=True))  # type: ignore[return-value]


def _rejection_draw(rows: np.ndarray, want: np.ndarray, row_of: np.ndarray, local: np.ndarray, m: int,
                    rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Draw for users who need at most half of their unclicked pool: uniform candidates, rejecting the
    user's own items and repeats, until each has its count. Cost follows the negatives, not users x pool."""
    banned = np.sort(row_of * m + local)
    got = np.zeros(want.shape[0], dtype=np.int64)
    out: list[tuple[np.ndarray, np.ndarray, np.ndarray]] = []
    pending = rows
    for _ in range(200):  # each round keeps >= half the candidates in expectation; 200 is never reached
        if pending.shape[0] == 0:
            break
        need = want[pending] - got[pending]
        draws = (need * 3) // 2 + 4
        cand_row = np.repeat(pending, draws)
        code = cand_row * m + rng.integers(0, m, size=cand_row.shape[0])
        hit = np.searchsorted(banned, code)
        fresh = banned[np.minimum(hit, banned.shape[0] - 1)] != code
        _, first = np.unique(code, return_index=True)
        keep = np.zeros(code.shape[0], dtype=bool)
        keep[first] = True
        keep &= fresh
        code, cand_row = code[keep], cand_row[keep]  # still grouped by row, in draw order
        starts = np.searchsorted(cand_row, pending)
        rank = np.arange(cand_row.shape[0]) - np.repeat(starts, np.diff(np.r_[starts, cand_row.shape[0]]))
        take = rank < np.repeat(need, np.diff(np.r_[starts, cand_row.shape[0]]))
        code, cand_row, rank = code[take], cand_row[take], rank[take]
        out.append((cand_row, code % m, got[cand_row] + rank))
        got[pending] += np.bincount(np.searchsorted(pending, cand_row), minlength=pending.shape[0])
        banned = np.sort(np.r_[banned, code])
        pending = pending[got[pending] < want[pending]]
    if pending.shape[0]:
        raise DataError("negative sampling did not converge; report this with the data set")
    if not out:
        empty = np.zeros(0, dtype=np.int64)
        return empty, empty, empty
    return tuple(np.concatenate(col) for col in zip(*out, strict=True))  # type: ignore[return-value]


def _sample_domain_negatives(user: np.ndarray, item: np.ndarray, ts: np.ndarray, ratio: float,
                             rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Negatives of one domain: (user, item, ts) arrays. Rows are positives sorted by (user, ts)."""
    pool, local = np.unique(item, return_inverse=True)
    m = pool.shape[0]
    users, starts, n_pos = np.unique(user, return_index=True, return_counts=True)
    want = np.minimum((n_pos / ratio).astype(np.int64), m - n_pos)
    row_of = np.repeat(np.arange(users.shape[0]), n_pos)
    active = want > 0
    sparse = active & (m > _SPARSE_POOL) & (2 * want <= m - n_pos)
    parts = [draw(np.flatnonzero(mask), want, row_of, local, m, rng)
             for draw, mask in ((_dense_draw, active & ~sparse), (_rejection_draw, sparse)) if mask.any()]
    if not parts:
        empty = np.zeros(0, dtype=np.int64)
        return empty, empty, np.zeros(0, dtype=np.float64)
    r, i, j = (np.concatenate(col) for col in zip(*parts, strict=True))
    # negative j of k is sampled against positive floor(j * n_pos / k) in the user's time order
    pos = starts[r] + (j * n_pos[r]) // want[r]
    return users[r], pool[i], ts[pos]


def build_ctr_benchmark(src: Interactions, *, seed: int = 0, negatives: str = "sampled",
                        ctr_range: Sequence[float] = (0.2, 0.5), split: Sequence[float] = (0.6, 0.2, 0.2),
                        click_threshold: float = 4.0) -> BenchmarkTable:
    """Turn raw interactions into the paper's CTR benchmark (see the module docstring)."""
    fractions = _check_fractions(split)
    if len(set(src.domains)) != len(src.domains):
        raise DataError(f"{src.name}: two domains share an id in {src.domains}; rename one source domain")
    if len(src) == 0:
        raise DataError(f"{src.name}: no interactions to build a benchmark from")
    rng = np.random.default_rng(seed)
    n_domains = len(src.domains)
    if negatives == "rating":
        if np.isnan(src.rating).any():
            raise ConfigError(f"{src.name} has no ratings; use negatives='sampled'")
        keep = dedupe_positives(src)
        keep = keep[np.lexsort((src.item[keep], src.user[keep], src.domain[keep]))]
        d, u, i, t = src.domain[keep], src.user[keep], src.item[keep], src.ts[keep]
        label = (src.rating[keep] >= click_threshold).astype(np.float32)
        codes = split_groups(d * 2 + label.astype(np.int64), rng, fractions)
        clicks = np.bincount(d, weights=label, minlength=n_domains)
        rows = np.maximum(np.bincount(d, minlength=n_domains), 1)
        return BenchmarkTable(src, d, u, i, label, t, codes, clicks / rows, seed, negatives)
    if negatives != "sampled":
        raise ConfigError(f"negatives must be 'sampled' or 'rating', got {negatives!r}")
    lo, hi = (float(x) for x in ctr_range)
    if not 0.0 < lo <= hi <= 1.0:
        raise ConfigError(f"ctr_range must satisfy 0 < low <= high <= 1, got {list(ctr_range)}")

    keep = dedupe_positives(src)
    keep = keep[np.lexsort((src.ts[keep], src.user[keep], src.domain[keep]))]  # (domain, user, time)
    pd_, pu, pi, pt = src.domain[keep], src.user[keep], src.item[keep], src.ts[keep]
    ratios = rng.uniform(lo, hi, size=n_domains)
    pos_codes = split_groups(pd_, rng, fractions)
    bounds = np.searchsorted(pd_, np.arange(n_domains + 1))
    neg: list[tuple[np.ndarray, ...]] = []
    for d in range(n_domains):
        sl = slice(bounds[d], bounds[d + 1])
        if bounds[d] == bounds[d + 1]:
            raise DataError(f"{src.name}: domain {src.domains[d]!r} has no interactions; drop it")
        nu, ni, nt = _sample_domain_negatives(pu[sl], pi[sl], pt[sl], float(ratios[d]), rng)
        neg.append((np.full(nu.shape[0], d, dtype=np.int64), nu, ni, nt))
    nd = np.concatenate([x[0] for x in neg])
    nu = np.concatenate([x[1] for x in neg])
    ni = np.concatenate([x[2] for x in neg])
    nt = np.concatenate([x[3] for x in neg])
    neg_codes = split_groups(nd * len(src.user_ids) + nu, rng, fractions)
    return BenchmarkTable(
        source=src,
        domain=np.concatenate([pd_, nd]),
        user=np.concatenate([pu, nu]),
        item=np.concatenate([pi, ni]),
        label=np.concatenate([np.ones(pd_.shape[0], np.float32), np.zeros(nd.shape[0], np.float32)]),
        ts=np.concatenate([pt, nt]),
        split=np.concatenate([pos_codes, neg_codes]),
        ctr_ratio=ratios,
        seed=seed,
        negatives=negatives,
    )
