"""MMoE (Ma et al., KDD'18) with domains as tasks: shared experts, a softmax gate and a tower per domain.

Each sample is mixed by its own domain's gate and scored by its own domain's tower. Knobs
(``ModelConfig.extra``): ``n_experts`` (4), ``expert_hidden`` (default: all but the last of
``hidden``), ``tower_hidden`` (default: the last of ``hidden``).
"""

from __future__ import annotations

import torch

from trainer.models.base import CTRModel, ModelConfig, resolve_knobs
from trainer.models.layers import DomainLinear, DomainMLP, ExpertBank, split_hidden


class MMoE(CTRModel):
    name = "mmoe"
    # no HEAD: the towers are per-domain rows of θS already; a θi of rows alone gets nothing from DR's steps
    # on other domains (eq. 6 moves only dense θi), so "head" keeps the paper's scope for this model

    def __init__(self, config: ModelConfig) -> None:
        from contracts.errors import ConfigError

        super().__init__(config)
        bottom, tower = split_hidden(config.hidden)
        defaults = {"n_experts": 4, "expert_hidden": bottom or tower, "tower_hidden": tower}
        knobs = resolve_knobs(config, defaults)
        n_experts = int(knobs["n_experts"])
        if n_experts < 1 or not knobs["expert_hidden"]:
            raise ConfigError("MMoE needs n_experts >= 1 and a non-empty expert_hidden")
        self.experts = ExpertBank(n_experts, self.in_dim, knobs["expert_hidden"], config.dropout)
        self.gates = DomainLinear(config.n_domains, self.in_dim, n_experts)
        self.towers = DomainMLP(config.n_domains, self.experts.out_dim, knobs["tower_hidden"], config.dropout)

    def score(self, user_emb: torch.Tensor, item_emb: torch.Tensor, domain: torch.Tensor) -> torch.Tensor:
        x = torch.cat([user_emb, item_emb, self.domain_embedding(domain)], dim=-1)
        gate = torch.softmax(self.gates(x, domain), dim=-1)  # [B, E]
        mixed = (gate.unsqueeze(-1) * self.experts(x)).sum(1)  # [B, H]
        return self.towers(mixed, domain)
