"""Tiny multi-domain datasets and models for the framework tests (built directly on the contract)."""

from __future__ import annotations

import numpy as np

from trainer.data.base import MultiDomainDataset, Split
from trainer.models import ModelConfig, build_model
from trainer.models.base import CTRModel


def toy_dataset(n_domains: int = 3, n_users: int = 24, n_items: int = 30, rows: int = 96,
                seed: int = 0) -> MultiDomainDataset:
    """Labels follow a user·item affinity that each domain tilts differently (so domains conflict)."""
    rng = np.random.default_rng(seed)
    u_vec, i_vec = rng.normal(size=(n_users, 4)), rng.normal(size=(n_items, 4))
    splits: list[dict[int, Split]] = [{}, {}, {}]
    for d in range(n_domains):
        tilt = rng.normal(size=4)
        for part, n in enumerate((rows, rows // 3, rows // 3)):
            user = rng.integers(0, n_users, n).astype(np.int64)
            item = rng.integers(0, n_items, n).astype(np.int64)
            logit = (u_vec[user] * (i_vec[item] + tilt)).sum(1)
            label = (logit + rng.normal(scale=0.5, size=n) > 0).astype(np.float32)
            label[:2] = (0.0, 1.0)  # both classes in every split
            splits[part][d] = Split(user, item, label)
    return MultiDomainDataset(
        name="toy", domains=[f"d{d}" for d in range(n_domains)],
        user_ids=[f"u{u}" for u in range(n_users)], item_ids=[f"i{i}" for i in range(n_items)],
        train=splits[0], val=splits[1], test=splits[2],
    )


def toy_model(dataset: MultiDomainDataset, name: str = "mlp", dropout: float = 0.0) -> CTRModel:
    cfg = ModelConfig(n_users=dataset.n_users, n_items=dataset.n_items, n_domains=dataset.n_domains,
                      emb_dim=8, hidden=(16, 8), dropout=dropout)
    return build_model(name, cfg)
