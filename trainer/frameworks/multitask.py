"""Multi-task baselines over one shared model, one mini-batch per domain per step:
Weighted Loss (uncertainty weighting, log-variance form) and PCGrad (gradient surgery).

An epoch is ceil(total training batches / n_domains) steps, so it sees about one pass of data.
"""

from __future__ import annotations

import math
from collections.abc import Iterator

import torch
from torch import nn

from trainer.frameworks.base import Batch, Framework, make_optimizer


class StepFramework(Framework):
    """Shared plumbing: endless per-domain batch streams and the steps-per-epoch rule."""

    def steps_per_epoch(self) -> int:
        bs = self.config.batch_size
        total = sum(math.ceil(len(self.dataset.train[d]) / bs) for d in self.domains)
        return max(1, math.ceil(total / len(self.domains))) if self.config.inner_steps is None \
            else self.config.inner_steps

    def streams(self, rng: torch.Generator) -> dict[int, Iterator[Batch]]:
        def endless(d: int) -> Iterator[Batch]:
            while True:
                yield from self.domain_batches(d, rng)
        return {d: endless(d) for d in self.domains}


class WeightedLoss(StepFramework):
    """Σ_d ½·exp(−s_d)·L_d + ½·s_d with a learned log-variance s_d = log σ_d² per domain (Kendall et
    al.): s_d stays finite and σ_d > 0 by construction, unlike a raw σ that can reach ≤ 0."""

    name = "weighted_loss"

    def __init__(self, *args, **kwargs) -> None:  # type: ignore[no-untyped-def]
        super().__init__(*args, **kwargs)
        self.log_var = nn.Parameter(torch.zeros(len(self.domains), device=self.device))
        params = [*self.params.shared().values(), self.log_var]
        self.optimizer = make_optimizer(self.config.inner, params, self.config.inner_lr)

    def weighted_loss(self, batches: dict[int, Batch]) -> torch.Tensor:
        total = torch.zeros((), device=self.device)
        for d, batch in batches.items():
            s = self.log_var[d]
            total = total + 0.5 * torch.exp(-s) * self.loss(batch) + 0.5 * s
        return total

    def train_epoch(self, epoch: int, rng: torch.Generator) -> None:
        self.model.train()
        streams = self.streams(rng)
        for _ in range(self.steps_per_epoch()):
            self.optimizer.zero_grad(set_to_none=True)
            self.weighted_loss({d: next(s) for d, s in streams.items()}).backward()
            self.optimizer.step()


def pcgrad_project(grads: list[torch.Tensor], rng: torch.Generator) -> list[torch.Tensor]:
    """PCGrad (Yu et al. 2020): for each g_i, for the other tasks j in random order, if g_i·g_j < 0
    remove the component along g_j: g_i ← g_i − (g_i·g_j)/|g_j|² g_j (with the original g_j).
    Returns new tensors; the inputs are not modified."""
    out = []
    for i, g in enumerate(grads):
        gi = g.clone()
        others = [j for j in torch.randperm(len(grads), generator=rng).tolist() if j != i]
        for j in others:
            gj = grads[j]
            dot = torch.dot(gi, gj)
            norm = torch.dot(gj, gj)
            if dot < 0 and norm > 0:
                gi = gi - (dot / norm) * gj
        out.append(gi)
    return out


class PCGrad(StepFramework):
    name = "pcgrad"

    def train_epoch(self, epoch: int, rng: torch.Generator) -> None:
        self.model.train()
        params = list(self.params.shared().values())
        optimizer = self.inner_optimizer()
        streams = self.streams(rng)
        for _ in range(self.steps_per_epoch()):
            flat = []
            for d in self.domains:
                grads = torch.autograd.grad(self.loss(next(streams[d])), params, allow_unused=True)
                flat.append(torch.cat([(torch.zeros_like(p) if g is None else g).reshape(-1)
                                       for p, g in zip(params, grads, strict=True)]))
            total = torch.stack(pcgrad_project(flat, rng)).sum(0)
            at = 0
            for p in params:
                p.grad = total[at:at + p.numel()].view_as(p).clone()
                at += p.numel()
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
