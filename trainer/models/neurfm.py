"""NeurFM / NFM (He & Chua, 2017): bi-interaction pooling of the field vectors fed to an MLP.

The pooled vector ½((Σv)² − Σv²) carries every pairwise element-wise product of the user, item and
domain vectors; an MLP on top learns higher-order interactions; a first-order linear term is added.
"""

from __future__ import annotations

import torch
from torch import nn

from trainer.models.base import CTRModel, ModelConfig
from trainer.models.deepfm import fm_interactions
from trainer.models.dropout import Dropout
from trainer.models.layers import FieldStack, last_width
from trainer.models.mlp import mlp_tower


class NeurFM(CTRModel):
    name = "neurfm"
    HEAD = ("linear.*", "out.*")

    def __init__(self, config: ModelConfig) -> None:
        super().__init__(config)
        self.fields = FieldStack(config.udim, config.idim, config.emb_dim)
        self.linear = nn.Linear(self.in_dim, 1)
        self.pool_dropout = Dropout(config.dropout)
        self.mlp = mlp_tower(config.emb_dim, config.hidden, config.dropout)
        self.out = nn.Linear(last_width(config.emb_dim, config.hidden), 1)

    def score(self, user_emb: torch.Tensor, item_emb: torch.Tensor, domain: torch.Tensor) -> torch.Tensor:
        domain_emb = self.domain_embedding(domain)
        pooled = self.pool_dropout(fm_interactions(self.fields(user_emb, item_emb, domain_emb)))
        first = self.linear(torch.cat([user_emb, item_emb, domain_emb], dim=-1))
        return (first + self.out(self.mlp(pooled))).squeeze(-1)
