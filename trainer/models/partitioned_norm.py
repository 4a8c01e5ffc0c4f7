"""STAR's partitioned normalization (Sheng et al., CIKM'21) for batches that mix domains.

    PN(x) = (γ ⊙ γ_d) ⊙ (x − μ_d) / sqrt(σ²_d + ε) + (β + β_d)

γ, β are shared; γ_d, β_d and the running statistics are per domain (dim 0 = domain, all four listed
in ``domain_tensors``). What we chose for per-sample domains:

- Training: μ_d, σ²_d are the batch statistics of the samples of domain d in this batch, computed for
  all domains at once with ``index_add`` over the batch's distinct domains (no Python loop). A domain
  with fewer than ``min_count`` samples in the batch has no usable variance: its samples are
  normalised with that domain's running statistics instead (and do not update them).
- Running statistics of each domain present with at least ``min_count`` samples are updated with
  ``momentum`` (unbiased variance, as BatchNorm does); other domains' statistics stay untouched.
- Evaluation: always the domain's running statistics, gathered per sample: deterministic, and the
  same graph for one row (export) as for the full tables.
- A new domain (``grow_domains``) starts with the pooled statistics of the existing domains: the mean
  of their means and the variance of the mixture (mean of variances + variance of means).
"""

from __future__ import annotations

from typing import ClassVar

import torch
from torch import nn

from trainer.models.base import DomainIndexedModule, mean_rows


class PartitionedNorm(DomainIndexedModule):
    domain_tensors: ClassVar[tuple[str, ...]] = (
        "domain_weight", "domain_bias", "running_mean", "running_var")
    BATCH_STATISTICS: ClassVar[bool] = True  # normalises by the batch in training (see dr_batched)

    def __init__(self, n_domains: int, dim: int, momentum: float = 0.1, eps: float = 1e-5,
                 min_count: int = 2) -> None:
        super().__init__()
        self.momentum, self.eps, self.min_count = momentum, eps, max(2, int(min_count))
        self.weight = nn.Parameter(torch.ones(dim))
        self.bias = nn.Parameter(torch.zeros(dim))
        self.domain_weight = nn.Parameter(torch.ones(n_domains, dim))
        self.domain_bias = nn.Parameter(torch.zeros(n_domains, dim))
        self.register_buffer("running_mean", torch.zeros(n_domains, dim))
        self.register_buffer("running_var", torch.ones(n_domains, dim))

    def new_domain_rows(self, name: str, tensor: torch.Tensor, n_new: int) -> torch.Tensor:
        if name == "running_var":
            pooled = self.running_var.mean(0) + self.running_mean.var(0, unbiased=False)
            return pooled.expand(n_new, -1).clone()
        return mean_rows(tensor, n_new)

    def forward(self, x: torch.Tensor, domain: torch.Tensor) -> torch.Tensor:
        mean = self.running_mean.index_select(0, domain)
        var = self.running_var.index_select(0, domain)
        if self.training:
            mean, var = self._batch_statistics(x, domain, mean, var)
        x_hat = (x - mean) * torch.rsqrt(var + self.eps)
        scale = self.weight * self.domain_weight.index_select(0, domain)
        shift = self.bias + self.domain_bias.index_select(0, domain)
        return x_hat * scale + shift

    def _batch_statistics(self, x: torch.Tensor, domain: torch.Tensor, run_mean: torch.Tensor,
                          run_var: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Per sample: mean and biased var of its domain's batch group (running stats if too small)."""
        ids, group = torch.unique(domain, return_inverse=True)
        n_groups = ids.shape[0]
        counts = torch.zeros(n_groups, dtype=x.dtype, device=x.device).index_add_(
            0, group, torch.ones_like(group, dtype=x.dtype))
        sums = torch.zeros(n_groups, x.shape[1], dtype=x.dtype, device=x.device).index_add(0, group, x)
        g_mean = sums / counts.unsqueeze(1)
        centred = x - g_mean.index_select(0, group)
        g_var = torch.zeros_like(sums).index_add(0, group, centred * centred) / counts.unsqueeze(1)
        big = counts >= self.min_count
        with torch.no_grad():
            n = counts.unsqueeze(1)
            unbiased = g_var.detach() * n / (n - 1).clamp_min(1)
            keep = big.unsqueeze(1)
            m = self.momentum
            old_mean = self.running_mean.index_select(0, ids)
            old_var = self.running_var.index_select(0, ids)
            new_mean = torch.where(keep, old_mean + m * (g_mean.detach() - old_mean), old_mean)
            new_var = torch.where(keep, old_var + m * (unbiased - old_var), old_var)
            self.running_mean.index_copy_(0, ids, new_mean)
            self.running_var.index_copy_(0, ids, new_var)
        use_batch = big.index_select(0, group).unsqueeze(1)
        mean = torch.where(use_batch, g_mean.index_select(0, group), run_mean)
        var = torch.where(use_batch, g_var.index_select(0, group), run_var)
        return mean, var
