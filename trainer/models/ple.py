"""PLE (Tang et al., RecSys'20) with domains as tasks: CGC levels of domain-specific and shared experts.

Per level: each domain owns ``n_specific_experts`` experts (stacked per domain) and all domains share
``n_shared_experts``. A sample is mixed by its own domain's gate over its domain's experts and the
shared ones; between levels a shared gate (the same for every domain) builds the shared experts' next
input from the same candidates. In multi-task PLE the shared gate sees every task's experts; with
per-sample domains a sample only ever reaches its own domain's experts, so that is what it sees.
The tower is per domain.

Knobs (``ModelConfig.extra``): ``expert_hidden`` (one width per level, each expert one layer;
default all but the last of ``hidden``, i.e. 2 levels), ``n_specific_experts`` (1),
``n_shared_experts`` (2), ``tower_hidden`` (default the last of ``hidden``).
"""

from __future__ import annotations

import itertools

import torch
from torch import nn

from trainer.models.base import CTRModel, ModelConfig, resolve_knobs
from trainer.models.dropout import Dropout
from trainer.models.layers import DomainLinear, DomainMLP, ExpertBank, split_hidden


class CGCLevel(nn.Module):
    """One customized gate control level; ``last`` levels have no shared gate."""

    def __init__(self, n_domains: int, in_dim: int, width: int, n_specific: int, n_shared: int,
                 dropout: float, last: bool) -> None:
        super().__init__()
        self.n_specific, self.width = n_specific, width
        self.specific = DomainLinear(n_domains, in_dim, n_specific * width)
        self.shared = ExpertBank(n_shared, in_dim, (width,), dropout)
        self.domain_gate = DomainLinear(n_domains, in_dim, n_specific + n_shared)
        self.shared_gate = None if last else nn.Linear(in_dim, n_specific + n_shared)
        self.dropout = Dropout(dropout)

    def forward(self, x_domain: torch.Tensor, x_shared: torch.Tensor,
                domain: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        specific = self.dropout(torch.relu(self.specific(x_domain, domain)))
        experts = torch.cat([specific.view(-1, self.n_specific, self.width), self.shared(x_shared)], dim=1)
        gate = torch.softmax(self.domain_gate(x_domain, domain), dim=-1)
        out_domain = (gate.unsqueeze(-1) * experts).sum(1)
        if self.shared_gate is None:
            return out_domain, None
        shared_gate = torch.softmax(self.shared_gate(x_shared), dim=-1)
        return out_domain, (shared_gate.unsqueeze(-1) * experts).sum(1)


class PLE(CTRModel):
    name = "ple"
    # no HEAD: the towers are per-domain rows of θS already; a θi of rows alone gets nothing from DR's steps
    # on other domains (eq. 6 moves only dense θi), so "head" keeps the paper's scope for this model

    def __init__(self, config: ModelConfig) -> None:
        from contracts.errors import ConfigError

        super().__init__(config)
        bottom, tower = split_hidden(config.hidden)
        knobs = resolve_knobs(config, {"expert_hidden": bottom or tower, "n_specific_experts": 1,
                                       "n_shared_experts": 2, "tower_hidden": tower})
        widths = knobs["expert_hidden"]
        n_specific, n_shared = int(knobs["n_specific_experts"]), int(knobs["n_shared_experts"])
        if not widths or n_specific < 1 or n_shared < 1:
            raise ConfigError(
                "PLE needs a non-empty expert_hidden and at least one specific and one shared expert")
        dims = (self.in_dim, *widths)
        self.levels = nn.ModuleList(
            CGCLevel(config.n_domains, a, b, n_specific, n_shared, config.dropout, last=i == len(widths) - 1)
            for i, (a, b) in enumerate(itertools.pairwise(dims))
        )
        self.towers = DomainMLP(config.n_domains, widths[-1], knobs["tower_hidden"], config.dropout)

    def score(self, user_emb: torch.Tensor, item_emb: torch.Tensor, domain: torch.Tensor) -> torch.Tensor:
        x_domain = torch.cat([user_emb, item_emb, self.domain_embedding(domain)], dim=-1)
        x_shared = x_domain
        for level in self.levels:
            x_domain, next_shared = level(x_domain, x_shared, domain)
            x_shared = x_shared if next_shared is None else next_shared
        return self.towers(x_domain, domain)
