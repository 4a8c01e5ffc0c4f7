"""AutoInt (Song et al., CIKM'19): multi-head self-attention over the user, item and domain vectors.

Each interacting layer lets every field attend to every field (``heads`` heads, ``attn_dim`` wide in
total), adds a residual projection and a ReLU; the flattened result gives the logit. Knobs (in
``ModelConfig.extra``): ``attn_layers`` (2), ``attn_heads`` (4), ``attn_dim`` (emb_dim).
"""

from __future__ import annotations

import itertools
import math

import torch
from torch import nn

from trainer.models.base import CTRModel, ModelConfig, resolve_knobs
from trainer.models.dropout import Dropout
from trainer.models.layers import FieldStack

N_FIELDS = 3


class InteractingLayer(nn.Module):
    def __init__(self, in_dim: int, out_dim: int, heads: int) -> None:
        super().__init__()
        self.heads, self.head_dim = heads, out_dim // heads
        self.query = nn.Linear(in_dim, out_dim, bias=False)
        self.key = nn.Linear(in_dim, out_dim, bias=False)
        self.value = nn.Linear(in_dim, out_dim, bias=False)
        self.residual = nn.Linear(in_dim, out_dim, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, f, _ = x.shape

        def split(t: torch.Tensor) -> torch.Tensor:  # [B, F, H*d] -> [B, H, F, d]
            return t.view(b, f, self.heads, self.head_dim).transpose(1, 2)

        q, k, v = split(self.query(x)), split(self.key(x)), split(self.value(x))
        attn = torch.softmax(q @ k.transpose(-1, -2) / math.sqrt(self.head_dim), dim=-1)
        out = (attn @ v).transpose(1, 2).reshape(b, f, self.heads * self.head_dim)
        return torch.relu(out + self.residual(x))


class AutoInt(CTRModel):
    name = "autoint"
    HEAD = ("out.*",)
    def __init__(self, config: ModelConfig) -> None:
        from contracts.errors import ConfigError

        super().__init__(config)
        knobs = resolve_knobs(config, {"attn_layers": 2, "attn_heads": 4, "attn_dim": None})
        heads, width = int(knobs["attn_heads"]), int(knobs["attn_dim"] or config.emb_dim)
        if heads < 1 or width % heads:
            raise ConfigError(f"attn_dim {width} must be a positive multiple of attn_heads {heads}")
        self.fields = FieldStack(config.udim, config.idim, config.emb_dim)
        dims = [config.emb_dim] + [width] * int(knobs["attn_layers"])
        self.layers = nn.ModuleList(InteractingLayer(a, b, heads) for a, b in itertools.pairwise(dims))
        self.dropout = Dropout(config.dropout)
        self.out = nn.Linear(N_FIELDS * dims[-1], 1)

    def score(self, user_emb: torch.Tensor, item_emb: torch.Tensor, domain: torch.Tensor) -> torch.Tensor:
        x = self.fields(user_emb, item_emb, self.domain_embedding(domain))
        for layer in self.layers:
            x = layer(x)
        return self.out(self.dropout(x.flatten(1))).squeeze(-1)
