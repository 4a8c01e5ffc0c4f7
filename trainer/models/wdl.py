"""Wide & Deep (Cheng et al., 2016): a linear model over the concatenated field vectors plus the MLP.

With only id fields there are no hand-made cross features: the wide part is the linear model over
[user, item, domain] vectors, and its logit is added to the deep part's.
"""

from __future__ import annotations

import torch
from torch import nn

from trainer.models.base import CTRModel, ModelConfig
from trainer.models.layers import last_width
from trainer.models.mlp import mlp_tower


class WideDeep(CTRModel):
    name = "wdl"
    HEAD = ("wide.*", "deep_out.*")

    def __init__(self, config: ModelConfig) -> None:
        super().__init__(config)
        self.wide = nn.Linear(self.in_dim, 1)
        self.deep = mlp_tower(self.in_dim, config.hidden, config.dropout)
        self.deep_out = nn.Linear(last_width(self.in_dim, config.hidden), 1)

    def score(self, user_emb: torch.Tensor, item_emb: torch.Tensor, domain: torch.Tensor) -> torch.Tensor:
        x = torch.cat([user_emb, item_emb, self.domain_embedding(domain)], dim=-1)
        return (self.wide(x) + self.deep_out(self.deep(x))).squeeze(-1)
