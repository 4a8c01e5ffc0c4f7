"""Raw multi-domain interactions: what every real source reads before the CTR benchmark is built.

Sources (MovieLens, Amazon) only parse files into this one shape; negative sampling and splitting live in
``ctr_benchmark`` so every source is turned into a benchmark the same way.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from contracts.errors import ConfigError


@dataclass
class Interactions:
    """Observed (user, item, domain) events with time and rating; indices into the id lists."""

    name: str
    domains: list[str]  # slug ids, index = domain index
    domain_names: list[str]  # display names ("Film-Noir", "All_Beauty")
    user_ids: list[str]
    item_ids: list[str]
    user: np.ndarray  # int64 [n]
    item: np.ndarray  # int64 [n]
    domain: np.ndarray  # int64 [n]
    ts: np.ndarray  # float64 [n], seconds since the epoch
    rating: np.ndarray  # float32 [n]; NaN when the source has none

    def __len__(self) -> int:
        return int(self.user.shape[0])

    def select_domains(self, wanted: Sequence[str]) -> Interactions:
        """Keep only the named domains (slug ids, in the given order) and the users/items they use."""
        index = {d: k for k, d in enumerate(self.domains)}
        missing = [d for d in wanted if d not in index]
        if missing:
            raise ConfigError(f"unknown domain(s) {missing} for {self.name}; choose from {self.domains}")
        old = np.array([index[d] for d in wanted], dtype=np.int64)
        remap = np.full(len(self.domains), -1, dtype=np.int64)
        remap[old] = np.arange(old.shape[0])
        keep = remap[self.domain] >= 0
        users, user = np.unique(self.user[keep], return_inverse=True)
        items, item = np.unique(self.item[keep], return_inverse=True)
        return Interactions(
            name=self.name,
            domains=[self.domains[k] for k in old],
            domain_names=[self.domain_names[k] for k in old],
            user_ids=[self.user_ids[k] for k in users],
            item_ids=[self.item_ids[k] for k in items],
            user=user.astype(np.int64),
            item=item.astype(np.int64),
            domain=remap[self.domain[keep]],
            ts=self.ts[keep],
            rating=self.rating[keep],
        )


def encode(values: Sequence[str]) -> tuple[list[str], np.ndarray]:
    """Sorted unique external ids and each value's index into them (deterministic vocabularies)."""
    vocab, codes = np.unique(np.asarray(values, dtype=object).astype(str), return_inverse=True)
    return [str(v) for v in vocab], codes.astype(np.int64)
