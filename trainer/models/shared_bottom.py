"""Shared-Bottom (Caruana, 1997): one MLP bottom shared by all domains, one tower per domain.

Knobs (``ModelConfig.extra``): ``bottom_hidden`` (default: all but the last of ``hidden``) and
``tower_hidden`` (default: the last of ``hidden``). Towers are stacked per domain (``towers.*``).
"""

from __future__ import annotations

import torch

from trainer.models.base import CTRModel, ModelConfig, resolve_knobs
from trainer.models.layers import DomainMLP, last_width, split_hidden
from trainer.models.mlp import mlp_tower


class SharedBottom(CTRModel):
    name = "shared_bottom"
    # no HEAD: the towers are per-domain rows of θS already; a θi of rows alone gets nothing from DR's steps
    # on other domains (eq. 6 moves only dense θi), so "head" keeps the paper's scope for this model

    def __init__(self, config: ModelConfig) -> None:
        super().__init__(config)
        bottom, tower = split_hidden(config.hidden)
        knobs = resolve_knobs(config, {"bottom_hidden": bottom, "tower_hidden": tower})
        self.bottom = mlp_tower(self.in_dim, knobs["bottom_hidden"], config.dropout)
        width = last_width(self.in_dim, knobs["bottom_hidden"])
        self.towers = DomainMLP(config.n_domains, width, knobs["tower_hidden"], config.dropout)

    def score(self, user_emb: torch.Tensor, item_emb: torch.Tensor, domain: torch.Tensor) -> torch.Tensor:
        x = torch.cat([user_emb, item_emb, self.domain_embedding(domain)], dim=-1)
        return self.towers(self.bottom(x), domain)
