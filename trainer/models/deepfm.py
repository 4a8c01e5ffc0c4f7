"""DeepFM (Guo et al., 2017): first-order linear + FM pairwise interactions of the three fields + DNN.

The first-order term is linear in the concatenated vectors (a per-id scalar weight would be a new
user/item table that the feature store does not serve). The FM term is the sum of the pairwise dot
products of the user, item and domain vectors.
"""

from __future__ import annotations

import torch
from torch import nn

from trainer.models.base import CTRModel, ModelConfig
from trainer.models.layers import FieldStack, last_width
from trainer.models.mlp import mlp_tower


def fm_interactions(fields: torch.Tensor) -> torch.Tensor:
    """Σ_{f<g} <v_f, v_g> for fields ``[B, F, D]``, as ½((Σv)² − Σv²): ``[B, D]`` before the sum."""
    return 0.5 * (fields.sum(1).pow(2) - fields.pow(2).sum(1))


class DeepFM(CTRModel):
    name = "deepfm"
    HEAD = ("linear.*", "dnn_out.*")

    def __init__(self, config: ModelConfig) -> None:
        super().__init__(config)
        self.fields = FieldStack(config.udim, config.idim, config.emb_dim)
        self.linear = nn.Linear(self.in_dim, 1)
        self.dnn = mlp_tower(self.in_dim, config.hidden, config.dropout)
        self.dnn_out = nn.Linear(last_width(self.in_dim, config.hidden), 1)

    def score(self, user_emb: torch.Tensor, item_emb: torch.Tensor, domain: torch.Tensor) -> torch.Tensor:
        domain_emb = self.domain_embedding(domain)
        x = torch.cat([user_emb, item_emb, domain_emb], dim=-1)
        fm = fm_interactions(self.fields(user_emb, item_emb, domain_emb)).sum(-1)
        return self.linear(x).squeeze(-1) + fm + self.dnn_out(self.dnn(x)).squeeze(-1)
