"""STAR (Sheng et al., CIKM'21) with per-sample domains.

- Partitioned normalization of the [user, item] input (see ``partitioned_norm``).
- Star-topology FCN: every layer's weight is the shared W times (element-wise) the domain's W_d, its
  bias the shared b plus b_d. W_d starts at ones and b_d at zeros, so every domain starts as the
  shared network. Per-domain tensors are stacked ``[n_domains, ...]`` and gathered per sample.
- Auxiliary network: an MLP over the domain embedding whose logit is added to the FCN's.

Knobs (``ModelConfig.extra``): ``aux_hidden`` (default the last of ``hidden``), ``pn_momentum``
(0.1), ``pn_eps`` (1e-5), ``pn_min_count`` (2: smaller per-domain groups in a training batch are
normalized with running statistics).
"""

from __future__ import annotations

import itertools
import math
from typing import ClassVar

import torch
from torch import nn

from trainer.models.base import CTRModel, DomainIndexedModule, ModelConfig, resolve_knobs
from trainer.models.dropout import Dropout
from trainer.models.layers import domain_matmul, last_width
from trainer.models.mlp import mlp_tower
from trainer.models.partitioned_norm import PartitionedNorm


class StarLinear(DomainIndexedModule):
    """x @ (W ⊙ W_d) + (b + b_d) with d the sample's domain."""

    domain_tensors: ClassVar[tuple[str, ...]] = ("domain_weight", "domain_bias")

    def __init__(self, n_domains: int, in_dim: int, out_dim: int) -> None:
        super().__init__()
        bound = 1.0 / math.sqrt(in_dim)
        self.weight = nn.Parameter(nn.init.uniform_(torch.empty(in_dim, out_dim), -bound, bound))
        self.bias = nn.Parameter(nn.init.uniform_(torch.empty(out_dim), -bound, bound))
        self.domain_weight = nn.Parameter(torch.ones(n_domains, in_dim, out_dim))
        self.domain_bias = nn.Parameter(torch.zeros(n_domains, out_dim))

    def forward(self, x: torch.Tensor, domain: torch.Tensor) -> torch.Tensor:
        out = domain_matmul(x, self.domain_weight, domain, shared=self.weight)
        return out + self.bias + self.domain_bias.index_select(0, domain)


class STAR(CTRModel):
    name = "star"
    HEAD = ("out.*", "aux_out.*")

    def __init__(self, config: ModelConfig) -> None:
        super().__init__(config)
        knobs = resolve_knobs(config, {"aux_hidden": config.hidden[-1:], "pn_momentum": 0.1, "pn_eps": 1e-5,
                                       "pn_min_count": 2})
        in_dim = config.udim + config.idim
        self.norm = PartitionedNorm(config.n_domains, in_dim, momentum=float(knobs["pn_momentum"]),
                                    eps=float(knobs["pn_eps"]), min_count=int(knobs["pn_min_count"]))
        dims = (in_dim, *config.hidden)
        self.layers = nn.ModuleList(StarLinear(config.n_domains, a, b) for a, b in itertools.pairwise(dims))
        self.out = StarLinear(config.n_domains, dims[-1], 1)
        self.dropout = Dropout(config.dropout)
        self.aux = mlp_tower(config.emb_dim, knobs["aux_hidden"], config.dropout)
        self.aux_out = nn.Linear(last_width(config.emb_dim, knobs["aux_hidden"]), 1)

    def score(self, user_emb: torch.Tensor, item_emb: torch.Tensor, domain: torch.Tensor) -> torch.Tensor:
        x = self.norm(torch.cat([user_emb, item_emb], dim=-1), domain)
        for layer in self.layers:
            x = self.dropout(torch.relu(layer(x, domain)))
        aux = self.aux_out(self.aux(self.domain_embedding(domain)))
        return (self.out(x, domain) + aux).squeeze(-1)
