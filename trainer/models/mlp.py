"""The paper's base model: [user, item, domain] embeddings (128-d each) into an MLP [256, 128, 64]."""

from __future__ import annotations

import torch
from torch import nn

from trainer.models.base import CTRModel, ModelConfig
from trainer.models.dropout import Dropout


def mlp_tower(in_dim: int, hidden: tuple[int, ...], dropout: float) -> nn.Sequential:
    """Linear + ReLU + dropout per hidden layer (no output layer)."""
    layers: list[nn.Module] = []
    for width in hidden:
        layers += [nn.Linear(in_dim, width), nn.ReLU(), Dropout(dropout)]
        in_dim = width
    return nn.Sequential(*layers)


class MLP(CTRModel):
    name = "mlp"
    HEAD = ("out.*",)

    def __init__(self, config: ModelConfig) -> None:
        super().__init__(config)
        self.tower = mlp_tower(self.in_dim, config.hidden, config.dropout)
        self.out = nn.Linear(config.hidden[-1] if config.hidden else self.in_dim, 1)

    def score(self, user_emb: torch.Tensor, item_emb: torch.Tensor, domain: torch.Tensor) -> torch.Tensor:
        x = torch.cat([user_emb, item_emb, self.domain_embedding(domain)], dim=-1)
        return self.out(self.tower(x)).squeeze(-1)
