"""Multi-task baselines over one shared model, rows of every domain in each step:
Weighted Loss (uncertainty weighting, log-variance form) and PCGrad (gradient surgery).

An epoch has as many optimizer steps as Alternate's (⌈rows / batch_size⌉). The earlier rule, a full
``batch_size`` from every domain per step, gave these baselines n times fewer optimizer steps per epoch than
Alternate (21 against 400 on ml-latest-small) and left them on the popularity plateau (test AUC 0.84 against
0.864). Which rows of which domain a step gets is ``FrameworkConfig.domain_sampling``: ``balanced``
(⌈batch_size / n⌉ from each domain, so small domains are oversampled) or ``proportional`` (each domain's
rows spread over the epoch's steps, every row once per epoch); see :class:`BalancedSampler` and
:class:`ProportionalSampler`. The default is ``balanced``, equal per-task batches as these methods are
usually run; the measurements that kept it are in ``FrameworkConfig``'s docstring.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from typing import ClassVar

import torch
from torch import nn

from trainer.frameworks.base import Batch, Framework, make_optimizer
from trainer.frameworks.telemetry import dense_parameters


class DomainSampler:
    """One epoch's rows for a step baseline: ``domains(step)`` are the domains with rows in that step (in
    domain order), ``batch(step, d)`` their rows; a method asks for each of them once per step."""

    steps: int

    def domains(self, step: int) -> list[int]:
        raise NotImplementedError

    def batch(self, step: int, domain: int) -> Batch:
        raise NotImplementedError


class BalancedSampler(DomainSampler):
    """⌈batch_size / n⌉ rows of every domain in every step, from endless per-domain streams: a domain's next
    permutation is drawn when its last one runs out, in the order the method asks for the batches (the draw
    order the baselines have always had, so a seed gives the same run as before the option existed)."""

    def __init__(self, fw: StepFramework, rng: torch.Generator) -> None:
        self.steps = fw.steps_per_epoch()
        self.all = list(fw.domains)
        self.streams = fw.streams(rng)

    def domains(self, step: int) -> list[int]:
        return self.all

    def batch(self, step: int, domain: int) -> Batch:
        return next(self.streams[domain])


def proportional_slots(rows: int, cycle: int, minimum: int = 1) -> dict[int, tuple[int, int]]:
    """Position in a cycle of ``cycle`` steps → (start, stop) in a domain's shuffled rows: the rows cut into
    ``min(cycle, rows // minimum)`` near-equal chunks (sizes differ by at most one) spread evenly over the
    cycle, so every row is used once per cycle and a step's share is ∝ ``rows``. A domain with fewer rows than
    steps is in only some steps (spread, not front-loaded, so it is not trained early and then forgotten)."""
    if rows <= 0:
        return {}
    chunks = min(cycle, max(1, rows // minimum))
    return {k * cycle // chunks: (k * rows // chunks, (k + 1) * rows // chunks) for k in range(chunks)}


class ProportionalSampler(DomainSampler):
    """Every domain's rows once per cycle of ⌈rows / batch_size⌉ steps (one epoch unless ``inner_steps``
    says otherwise), each step taking the domain's next chunk (:func:`proportional_slots`): a domain's share of
    a step is ∝ its training rows, as in Alternate's one pass per domain. All domains' permutations for a cycle
    are drawn, in domain order, when the cycle's first step is asked for."""

    def __init__(self, fw: StepFramework, rng: torch.Generator) -> None:
        self.fw, self.rng = fw, rng
        self.steps = fw.steps_per_epoch()
        total = sum(len(fw.dataset.train[d]) for d in fw.domains)
        self.cycle = max(1, math.ceil(total / fw.config.batch_size))
        self.slots = {d: proportional_slots(len(fw.dataset.train[d]), self.cycle, fw.min_domain_rows)
                      for d in fw.domains}
        self.drawn = -1
        self.order: dict[int, torch.Tensor] = {}

    def _draw(self, step: int) -> int:
        cycle, position = divmod(step, self.cycle)
        if cycle != self.drawn:
            self.order = {d: torch.randperm(len(self.fw.dataset.train[d]), generator=self.rng)
                          for d in self.fw.domains}
            self.drawn = cycle
        return position

    def domains(self, step: int) -> list[int]:
        position = self._draw(step)
        return [d for d in self.fw.domains if position in self.slots[d]]

    def batch(self, step: int, domain: int) -> Batch:
        start, stop = self.slots[domain][self._draw(step)]
        batch = self.fw.dataset.train[domain].take(domain, self.order[domain][start:stop])
        return tuple(t.to(self.fw.device) for t in batch)  # type: ignore[return-value]


class StepFramework(Framework):
    """Shared plumbing: the steps-per-epoch rule and the per-step domain sampler."""

    min_domain_rows: ClassVar[int] = 1  # the fewest rows a domain brings to a step (MAML halves its rows)

    def steps_per_epoch(self) -> int:
        if self.config.inner_steps is not None:
            return self.config.inner_steps
        total = sum(len(self.dataset.train[d]) for d in self.domains)
        return max(1, math.ceil(total / self.config.batch_size))

    def domain_batch_size(self) -> int:
        return max(2, math.ceil(self.config.batch_size / max(1, len(self.domains))))  # MAML splits it in two

    def streams(self, rng: torch.Generator) -> dict[int, Iterator[Batch]]:
        size = self.domain_batch_size()

        def endless(d: int) -> Iterator[Batch]:
            split = self.dataset.train[d]
            while True:
                for batch in split.batches(d, size, rng):
                    yield tuple(t.to(self.device) for t in batch)  # type: ignore[misc]
        return {d: endless(d) for d in self.domains}

    def sampler(self, rng: torch.Generator) -> DomainSampler:
        """This epoch's rows per step and domain, as ``config.domain_sampling`` says."""
        if self.config.domain_sampling == "proportional":
            return ProportionalSampler(self, rng)
        return BalancedSampler(self, rng)


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
        """One forward over the concatenated domain batches; each domain's mean loss weighted."""
        user, item, domain, label = (torch.cat(parts) for parts in zip(*batches.values(), strict=True))
        logits = self.model(user, item, domain)
        per_row = torch.nn.functional.binary_cross_entropy_with_logits(logits, label, reduction="none")
        n = self.log_var.shape[0]
        sums = torch.zeros(n, device=self.device).index_add(0, domain, per_row)
        counts = torch.zeros(n, device=self.device).index_add(0, domain, torch.ones_like(per_row))
        present = counts > 0
        losses = sums[present] / counts[present]
        s = self.log_var[present]
        total = (0.5 * torch.exp(-s) * losses + 0.5 * s).sum()
        if self.config.l2:
            total = total + self.config.l2 * self.model.l2_embeddings(user, item, domain)
        return total

    def train_epoch(self, epoch: int, rng: torch.Generator) -> None:
        self.model.train()
        sampler = self.sampler(rng)
        for step in range(sampler.steps):
            present = sampler.domains(step)
            if not present:  # proportional sampling over tiny domains can leave a step empty
                continue
            self.optimizer.zero_grad(set_to_none=True)
            self.weighted_loss({d: sampler.batch(step, d) for d in present}).backward()
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


def pcgrad_sum(grads: torch.Tensor, rng: torch.Generator, gram: torch.Tensor | None = None) -> torch.Tensor:
    """Σ_i of :func:`pcgrad_project`'s output for stacked gradients ``grads`` [n, P], computed in
    coefficient space: every projected g_i stays a combination Σ_k a_ik g_k of the originals, so all
    inner products come from the n × n Gram matrix (one matmul; pass it as ``gram`` if already made)
    instead of n² dot products over P. Same random orders, same result up to float rounding."""
    n = grads.shape[0]
    gram = (grads @ grads.T).double() if gram is None else gram
    coef = torch.eye(n, dtype=torch.float64)
    for i in range(n):
        a = coef[i].clone()
        others = [j for j in torch.randperm(n, generator=rng).tolist() if j != i]
        for j in others:
            dot = a @ gram[:, j]  # g_i' · g_j
            norm = gram[j, j]
            if dot < 0 and norm > 0:
                a[j] -= dot / norm
        coef[i] = a
    return coef.sum(0).to(grads.dtype) @ grads


class PCGrad(StepFramework):
    """PCGrad; it also records the conflict it projects: ``conflict_matrix`` is the epoch's mean pairwise
    cosine of the domains' gradients over the dense parameters (as DN's telemetry: a domain's batch touches
    its own table rows and domain row only, which add norm but no cross-domain product), the statistic
    behind "why does it trail Alternate" (docs/benchmarks.md)."""

    name = "pcgrad"
    conflict_matrix: list[list[float]] | None = None

    def train_epoch(self, epoch: int, rng: torch.Generator) -> None:
        self.model.train()
        params = list(self.params.shared().values())
        optimizer = self.inner_optimizer()
        sampler = self.sampler(rng)
        n = len(self.domains)
        cosines = torch.zeros(n, n, dtype=torch.float64)
        pairs = torch.zeros(n, n, dtype=torch.float64)  # steps in which both domains had rows
        dense = {id(p) for p in dense_parameters(self.model, self.params.shared())}
        mask = torch.cat([torch.full((p.numel(),), id(p) in dense, dtype=torch.bool) for p in params])
        position = {d: k for k, d in enumerate(self.domains)}  # a domain's row in the conflict matrix
        for step in range(sampler.steps):
            flat = []
            present = sampler.domains(step)
            if not present:
                continue
            for d in present:
                grads = torch.autograd.grad(self.loss(sampler.batch(step, d)), params, allow_unused=True)
                flat.append(torch.cat([(torch.zeros_like(p) if g is None else g).reshape(-1)
                                       for p, g in zip(params, grads, strict=True)]))
            stacked = torch.stack(flat)
            gram = (stacked @ stacked.T).double()
            shown = stacked[:, mask]
            shown_gram = (shown @ shown.T).double()
            norm = shown_gram.diagonal().clamp_min(1e-30).sqrt()
            rows = torch.tensor([position[d] for d in present])[:, None]
            cosines[rows, rows.T] += shown_gram / norm[:, None] / norm[None, :]
            pairs[rows, rows.T] += 1
            total = pcgrad_sum(stacked, rng, gram)
            at = 0
            for p in params:
                p.grad = total[at:at + p.numel()].view_as(p).clone()
                at += p.numel()
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
        self.conflict_matrix = torch.where(pairs > 0, cosines / pairs.clamp_min(1), math.nan).tolist()
