"""The contract every CTR model honours, so learning frameworks and export stay model-agnostic.

A model owns three embedding tables and a head:
- ``user_embedding`` / ``item_embedding``: global features, shared by all domains (their rows are
  what the feature store serves). They may be frozen (pretrained vectors, as on Taobao).
- ``domain_embedding``: one row per domain.
- the head: ``score(user_emb, item_emb, domain)`` maps vectors to one logit per sample.

Every model accepts batches that mix domains (``domain`` is a per-sample LongTensor).
Parameters whose first axis is the domain axis are listed in ``domain_indexed`` (the domain table,
STAR's per-domain weights, partitioned-norm statistics...): export slices them per domain.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any, ClassVar

import torch
from torch import nn


@dataclass
class ModelConfig:
    """Everything needed to rebuild a model without the trainer (stored in manifests)."""

    n_users: int
    n_items: int
    n_domains: int
    emb_dim: int = 128
    hidden: tuple[int, ...] = (256, 128, 64)
    dropout: float = 0.5
    user_dim: int | None = None  # defaults to emb_dim; differs for pretrained vectors
    item_dim: int | None = None
    freeze_user_item: bool = False  # True when user/item vectors are fixed pretrained features
    extra: dict[str, Any] = field(default_factory=dict)  # model-specific knobs (experts, heads, ...)

    @property
    def udim(self) -> int:
        return self.user_dim or self.emb_dim

    @property
    def idim(self) -> int:
        return self.item_dim or self.emb_dim

    def to_json(self) -> dict[str, Any]:
        data = asdict(self)
        data["hidden"] = list(self.hidden)
        return data

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> ModelConfig:
        data = dict(data)
        data["hidden"] = tuple(data.get("hidden", (256, 128, 64)))
        return cls(**data)


class CTRModel(nn.Module):
    """Base class: embedding tables plus an abstract ``score`` head."""

    name: ClassVar[str] = "base"
    # Parameters that stay shared (never get a per-domain delta) by default.
    SHARED_TABLES: ClassVar[tuple[str, ...]] = ("user_embedding.weight", "item_embedding.weight")
    # Names of parameters/buffers whose dim 0 indexes the domain. Subclasses extend it.
    domain_indexed: tuple[str, ...] = ("domain_embedding.weight",)

    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        self.config = config
        self.user_embedding = nn.Embedding(config.n_users, config.udim)
        self.item_embedding = nn.Embedding(config.n_items, config.idim)
        self.domain_embedding = nn.Embedding(config.n_domains, config.emb_dim)
        for table in (self.user_embedding, self.item_embedding, self.domain_embedding):
            nn.init.normal_(table.weight, std=0.01)
        if config.freeze_user_item:
            self.user_embedding.weight.requires_grad_(False)
            self.item_embedding.weight.requires_grad_(False)

    @property
    def in_dim(self) -> int:
        """Width of the concatenated [user, item, domain] input most heads start from."""
        return self.config.udim + self.config.idim + self.config.emb_dim

    def score(self, user_emb: torch.Tensor, item_emb: torch.Tensor, domain: torch.Tensor) -> torch.Tensor:
        """Logits of shape [B] from user vectors [B, Du], item vectors [B, Di] and domain ids [B]."""
        raise NotImplementedError

    def forward(self, user: torch.Tensor, item: torch.Tensor, domain: torch.Tensor) -> torch.Tensor:
        return self.score(self.user_embedding(user), self.item_embedding(item), domain)

    def l2_embeddings(self, user: torch.Tensor, item: torch.Tensor, domain: torch.Tensor) -> torch.Tensor:
        """L2 of the embedding rows a batch touched (the paper's 1e-5 regulariser)."""
        parts = [self.domain_embedding(domain)]
        if self.user_embedding.weight.requires_grad:
            parts.append(self.user_embedding(user))
        if self.item_embedding.weight.requires_grad:
            parts.append(self.item_embedding(item))
        return sum((p.pow(2).sum() for p in parts), torch.zeros(())) / user.shape[0]
