"""The in-memory multi-domain CTR benchmark every framework trains on.

Users and items are global (indices into the shared tables, with their external string ids kept for
the feature store); each domain has train/val/test splits of (user, item, label) rows.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch


@dataclass
class Split:
    """Rows of one domain: user and item indices and 0/1 labels (numpy, contiguous)."""

    user: np.ndarray  # int64 [n]
    item: np.ndarray  # int64 [n]
    label: np.ndarray  # float32 [n]

    def __len__(self) -> int:
        return int(self.user.shape[0])

    def batches(self, domain: int, batch_size: int, generator: torch.Generator | None = None,
                shuffle: bool = True) -> Iterator[tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]]:
        """(user, item, domain, label) tensors; shuffled with ``generator`` for determinism."""
        n = len(self)
        order = torch.randperm(n, generator=generator) if shuffle else torch.arange(n)
        for start in range(0, n, batch_size):
            yield self.take(domain, order[start:start + batch_size])

    def take(self, domain: int, idx: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """The rows ``idx`` as one (user, item, domain, label) batch (``from_numpy`` shares memory: no copy
        but the gather)."""
        return (torch.from_numpy(self.user)[idx], torch.from_numpy(self.item)[idx],
                torch.full((idx.shape[0],), domain, dtype=torch.long), torch.from_numpy(self.label)[idx])


@dataclass
class MultiDomainDataset:
    """A benchmark: domains (ids in index order), global user/item vocabularies, splits per domain."""

    name: str
    domains: list[str]
    user_ids: list[str]
    item_ids: list[str]
    train: dict[int, Split]
    val: dict[int, Split]
    test: dict[int, Split]
    ctr_ratio: dict[int, float] = field(default_factory=dict)
    # Fixed pretrained vectors (Taobao's user_emb.json/item_emb.json); None when learned.
    user_vectors: np.ndarray | None = None
    item_vectors: np.ndarray | None = None
    # Provenance: seed, negatives mode, display names of domains (e.g. "Film-Noir"), synthetic ground truth.
    info: dict[str, Any] = field(default_factory=dict)

    @property
    def n_domains(self) -> int:
        return len(self.domains)

    @property
    def n_users(self) -> int:
        return len(self.user_ids)

    @property
    def n_items(self) -> int:
        return len(self.item_ids)

    def summary(self) -> str:
        sizes = [len(self.train[d]) + len(self.val[d]) + len(self.test[d]) for d in range(self.n_domains)]
        return (f"{self.name}: {self.n_domains} domains, {self.n_users} users, {self.n_items} items, "
                f"{sum(sizes)} rows ({min(sizes)}-{max(sizes)} per domain)")
