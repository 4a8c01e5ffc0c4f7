"""A small trained model with non-zero θi, for export/serving tests, benchmarks and demos.

θS is trained for a few Adam steps on synthetic mixed-domain clicks, then each domain's θi for a
few steps on that domain's clicks alone (θS frozen), so every domain scores differently. Not a
learning experiment: just real gradients through the real model, quickly.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F

from trainer.models import ModelConfig, build_model
from trainer.params import DomainParameters

if TYPE_CHECKING:
    from contracts.manifest import Manifest
    from domain_registry.base import Registry
    from feature_store.base import EmbeddingStore


@dataclass
class TinyModel:
    params: DomainParameters
    user_ids: list[str]
    item_ids: list[str]
    domains: dict[str, int]  # domain id -> slot


def train_tiny(
    model_name: str = "mlp",
    *,
    n_users: int = 200,
    n_items: int = 120,
    n_domains: int = 4,
    emb_dim: int = 16,
    hidden: tuple[int, ...] = (32, 16),
    steps: int = 15,
    delta_steps: int = 5,
    batch: int = 256,
    seed: int = 0,
) -> TinyModel:
    torch.manual_seed(seed)
    config = ModelConfig(n_users=n_users, n_items=n_items, n_domains=n_domains, emb_dim=emb_dim, hidden=hidden,
                         dropout=0.0)
    model = build_model(model_name, config)
    params = DomainParameters(model)
    gen = torch.Generator().manual_seed(seed)

    def clicks(domain: int | None) -> tuple[torch.Tensor, ...]:
        u = torch.randint(0, n_users, (batch,), generator=gen)
        i = torch.randint(0, n_items, (batch,), generator=gen)
        d = (torch.randint(0, n_domains, (batch,), generator=gen) if domain is None
             else torch.full((batch,), domain))
        y = ((u + i * (d + 1)) % 3 == 0).float()  # a learnable, domain-dependent pattern
        return u, i, d, y

    model.train()
    opt = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=1e-2)
    for _ in range(steps):
        u, i, d, y = clicks(None)
        loss = F.binary_cross_entropy_with_logits(model(u, i, d), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
    for slot in range(n_domains):
        delta = {n: t.clone().requires_grad_(True) for n, t in params.delta(slot).items()}
        dopt = torch.optim.Adam(list(delta.values()), lr=1e-2)
        for _ in range(delta_steps):
            u, i, d, y = clicks(slot)
            composed = params.composed(slot, delta, detach_shared=True)
            loss = F.binary_cross_entropy_with_logits(params.call(composed, u, i, d), y)
            dopt.zero_grad()
            loss.backward()
            dopt.step()
        params.set_delta(slot, {n: t.detach() for n, t in delta.items()})
    model.eval()
    return TinyModel(
        params=params, user_ids=[f"u{k}" for k in range(n_users)], item_ids=[f"i{k}" for k in range(n_items)],
        domains={f"dom-{k}": k for k in range(n_domains)},
    )


@lru_cache(maxsize=16)
def cached_tiny(model_name: str = "mlp", **kwargs: object) -> TinyModel:
    """``train_tiny`` once per process and arguments (tests share it; do not mutate the result)."""
    return train_tiny(model_name, **kwargs)  # type: ignore[arg-type]


def publish_demo(
    tiny: TinyModel,
    root: Path,
    store: EmbeddingStore,
    registry: Registry,
    version: str = "v1",
    *,
    parent: str | None = None,
    feature_store_version: str = "emb-1",
    promote: bool = True,
) -> Manifest:
    """Sync the tables to ``store``, register the domains, export and (by default) promote ``version``."""
    from contracts.errors import Conflict
    from trainer.export.exporter import export_version
    from trainer.feature_sync import sync_embeddings

    if feature_store_version not in store.versions():
        sync_embeddings(tiny.params.model, tiny.user_ids, tiny.item_ids, store, feature_store_version)
    for domain in tiny.domains:
        with contextlib.suppress(Conflict):
            registry.create_domain(domain)
    return export_version(tiny.params, tiny.domains, root, version, parent=parent,
                          feature_store_version=feature_store_version, registry=registry, promote=promote)
