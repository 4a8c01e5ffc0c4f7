"""A synthetic multi-domain CTR benchmark with a known logistic ground truth, for tests and scale runs.

Ground truth: users and items have latent vectors ``U_u, V_i ~ N(0, I_dim)``; domain ``d`` has a preference
direction ``w_d`` (unit) and a base click rate ``ctr_d ~ U(0.2, 0.5)``;
``P(click | u, i, d) = sigmoid(logit(ctr_d) + signal * <U_u * V_i, w_d>)``.
``w_d = normalize((1 - conflict) * w_shared + conflict * r_d)`` with ``r_d`` a random direction: at
``conflict=0`` every domain wants the same thing; at 1 they are independent, so about half of the domain
pairs pull shared parameters in opposing directions (their gradients conflict).
Domain sizes follow a Zipf law with exponent ``skew`` (0 = equal), in a random order over domains.

Memory stays linear in the number of rows (generated in chunks), so 10,000 domains build in about a second.
"""

from __future__ import annotations

import numpy as np

from contracts.errors import ConfigError
from trainer.data.base import MultiDomainDataset, Split
from trainer.data.ctr_benchmark import split_groups

_CHUNK = 1 << 18


def domain_sizes(n_domains: int, total: int, skew: float, min_rows: int,
                 rng: np.random.Generator) -> np.ndarray:
    """Rows per domain: Zipf(skew) shares of ``total``, at least ``min_rows`` each, shuffled over domains."""
    weights = 1.0 / np.arange(1, n_domains + 1, dtype=np.float64) ** skew
    sizes = np.maximum(np.floor(weights / weights.sum() * total).astype(np.int64), min_rows)
    return rng.permutation(sizes)


def make_synthetic(n_domains: int = 10, n_users: int = 1000, n_items: int = 500, rows_per_domain: int = 2000,
                   *, skew: float = 0.0, conflict: float = 0.5, seed: int = 0, dim: int = 8,
                   signal: float = 2.0, min_rows: int = 20,
                   split: tuple[float, float, float] = (0.6, 0.2, 0.2)) -> MultiDomainDataset:
    """Build the benchmark; ``info`` holds the ground truth (user/item latents, directions, biases)."""
    if n_domains < 1 or n_users < 1 or n_items < 1 or rows_per_domain < 1 or dim < 1:
        raise ConfigError("n_domains, n_users, n_items, rows_per_domain and dim must all be >= 1")
    if not 0.0 <= conflict <= 1.0:
        raise ConfigError(f"conflict must be in [0, 1], got {conflict}")
    if skew < 0:
        raise ConfigError(f"skew must be >= 0, got {skew}")
    rng = np.random.default_rng(seed)
    user_vec = rng.standard_normal((n_users, dim)).astype(np.float32)
    item_vec = rng.standard_normal((n_items, dim)).astype(np.float32)
    shared = rng.standard_normal(dim)
    shared /= np.linalg.norm(shared)
    own = rng.standard_normal((n_domains, dim))
    own /= np.linalg.norm(own, axis=1, keepdims=True)
    direction = (1.0 - conflict) * shared[None, :] + conflict * own
    direction /= np.maximum(np.linalg.norm(direction, axis=1, keepdims=True), 1e-12)
    direction = direction.astype(np.float32)
    base_ctr = rng.uniform(0.2, 0.5, size=n_domains)
    bias = np.log(base_ctr / (1.0 - base_ctr)).astype(np.float32)

    sizes = domain_sizes(n_domains, rows_per_domain * n_domains, skew, min_rows, rng)
    total = int(sizes.sum())
    domain = np.repeat(np.arange(n_domains, dtype=np.int64), sizes)
    user = rng.integers(0, n_users, size=total, dtype=np.int64)
    item = rng.integers(0, n_items, size=total, dtype=np.int64)
    label = np.empty(total, dtype=np.float32)
    for lo in range(0, total, _CHUNK):
        hi = min(lo + _CHUNK, total)
        d = domain[lo:hi]
        affinity = np.einsum("nk,nk->n", user_vec[user[lo:hi]] * item_vec[item[lo:hi]], direction[d])
        prob = 1.0 / (1.0 + np.exp(-(bias[d] + signal * affinity)))
        label[lo:hi] = (rng.random(hi - lo) < prob).astype(np.float32)
    info = {"seed": seed, "skew": skew, "conflict": conflict, "signal": signal,
            "user_latent": user_vec, "item_latent": item_vec, "direction": direction, "bias": bias}
    return _assemble("synthetic", domain, user, item, label, sizes, n_users, n_items, rng, split, info)


def _assemble(name: str, domain: np.ndarray, user: np.ndarray, item: np.ndarray, label: np.ndarray,
              sizes: np.ndarray, n_users: int, n_items: int, rng: np.random.Generator,
              split: tuple[float, float, float], info: dict) -> MultiDomainDataset:
    """Rows (sorted by domain) → per-domain train/val/test splits."""
    n_domains = len(sizes)
    codes = split_groups(domain, rng, split)
    click_rate = np.bincount(domain, weights=label, minlength=n_domains) / sizes

    key = domain * 3 + codes
    order = np.argsort(key, kind="stable")
    bounds = np.searchsorted(key[order], np.arange(n_domains * 3 + 1))
    user, item, label = user[order], item[order], label[order]
    parts: list[dict[int, Split]] = [{}, {}, {}]
    for d in range(n_domains):
        for s in range(3):
            a, b = bounds[d * 3 + s], bounds[d * 3 + s + 1]
            parts[s][d] = Split(user=user[a:b], item=item[a:b], label=label[a:b])
    width = len(str(n_domains - 1))
    return MultiDomainDataset(
        name=name,
        domains=[f"d{k:0{width}d}" for k in range(n_domains)],
        user_ids=[f"u{k}" for k in range(n_users)],
        item_ids=[f"i{k}" for k in range(n_items)],
        train=parts[0],
        val=parts[1],
        test=parts[2],
        ctr_ratio={d: float(r) for d, r in enumerate(click_rate)},  # observed click rate
        info=info,
    )


def make_conflict(n_domains: int = 6, n_users: int = 300, n_items: int = 120, rows_per_domain: int = 4000,
                  *, conflict: float = 0.5, seed: int = 0, signal: float = 2.5, user_signal: float = 1.0,
                  groups: int = 0, split: tuple[float, float, float] = (0.6, 0.2, 0.2)) -> MultiDomainDataset:
    """A benchmark whose domains share structure and conflict by a controlled amount, learnt in few epochs.

    Every item has a shared appeal ``a_i`` ~ N(0, 1) and, per domain, a domain-specific taste ``t_{d,i}``
    ~ N(0, 1); users have a shared activity ``b_u`` ~ N(0, 1):

        logit(click | u, i, d) = bias_d + user_signal * b_u + signal * ((1 - c) * a_i + c * t_{d,i})

    ``conflict`` c = 0: every domain wants the same items (no conflict); c = 1: only the domain's own taste
    matters, uncorrelated between domains, so on every item about half of the domain pairs pull its shared
    embedding in opposite directions. In between, the domains share the appeal and conflict on the rest
    (the correlation of two domains' item preferences is (1 - c)² / ((1 - c)² + c²)). ``groups`` = G > 0
    instead gives G taste groups whose tastes are s_g * h_i with signs s_g spread over [-1, 1] (G = 2:
    opposite tastes); domain d is in group d % G. The signal lives in per-item and per-user terms with
    ``rows_per_domain / n_items`` rows per item and domain, so a CTR model learns it in a few epochs.
    ``info`` holds the ground truth.
    """
    if n_domains < 1 or n_users < 1 or n_items < 1 or rows_per_domain < 1:
        raise ConfigError("n_domains, n_users, n_items and rows_per_domain must all be >= 1")
    if not 0.0 <= conflict <= 1.0:
        raise ConfigError(f"conflict must be in [0, 1], got {conflict}")
    if groups < 0:
        raise ConfigError(f"groups must be >= 0, got {groups}")
    rng = np.random.default_rng(seed)
    appeal = rng.standard_normal(n_items)
    activity = rng.standard_normal(n_users)
    if groups == 0:
        taste = rng.standard_normal((n_domains, n_items))
    else:
        signs = np.linspace(1.0, -1.0, groups) if groups > 1 else np.ones(1)
        taste = signs[np.arange(n_domains) % groups, None] * rng.standard_normal(n_items)[None, :]
    base_ctr = rng.uniform(0.2, 0.5, size=n_domains)
    bias = np.log(base_ctr / (1.0 - base_ctr))
    sizes = np.full(n_domains, rows_per_domain, dtype=np.int64)
    domain = np.repeat(np.arange(n_domains, dtype=np.int64), sizes)
    total = int(sizes.sum())
    user = rng.integers(0, n_users, size=total, dtype=np.int64)
    item = rng.integers(0, n_items, size=total, dtype=np.int64)
    logit = (bias[domain] + user_signal * activity[user]
             + signal * ((1.0 - conflict) * appeal[item] + conflict * taste[domain, item]))
    label = (rng.random(total) < 1.0 / (1.0 + np.exp(-logit))).astype(np.float32)
    info = {"seed": seed, "conflict": conflict, "signal": signal, "user_signal": user_signal, "groups": groups,
            "appeal": appeal, "taste": taste, "activity": activity, "bias": bias}
    return _assemble("synthetic-conflict", domain, user, item, label, sizes, n_users, n_items, rng, split, info)


def conflict_true_logit(ds: MultiDomainDataset, user: np.ndarray, item: np.ndarray, domain: np.ndarray
                        ) -> np.ndarray:
    """The ground-truth logit of a ``make_conflict`` dataset (the Bayes-optimal scorer)."""
    f = ds.info
    c = f["conflict"]
    return (f["bias"][domain] + f["user_signal"] * f["activity"][user]
            + f["signal"] * ((1.0 - c) * f["appeal"][item] + c * f["taste"][domain, item]))


def true_logit(ds: MultiDomainDataset, user: np.ndarray, item: np.ndarray, domain: np.ndarray) -> np.ndarray:
    """The ground-truth logit of a synthetic dataset (the Bayes-optimal scorer)."""
    info = ds.info
    affinity = np.einsum("nk,nk->n", info["user_latent"][user] * info["item_latent"][item],
                         info["direction"][domain])
    return info["bias"][domain] + info["signal"] * affinity
