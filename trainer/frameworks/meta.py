"""Meta-learning baselines over one shared model: Reptile, first-order MAML, MLDG.

Reptile (Nichol et al.): per domain, inner updates from Θ then Θ ← Θ + β(Θ̃ − Θ): unlike DN, the
outer step follows every single domain, so it improves within-domain, not cross-domain, alignment.
MAML (first order): each domain's batch is split into support and query halves; the query gradient
at the adapted Θ' = Θ − α∇L_support(Θ) updates Θ. MLDG: domains split into meta-train/meta-test
each step; Θ moves along ∇L_train(Θ) + ∇L_test(Θ − α∇L_train(Θ)) (first order).
"""

from __future__ import annotations

import torch
from torch.func import functional_call

from trainer.frameworks.base import Batch, Framework, make_optimizer
from trainer.frameworks.multitask import StepFramework
from trainer.frameworks.outer import OuterStep


class Reptile(Framework):
    name = "reptile"

    def __init__(self, *args, **kwargs) -> None:  # type: ignore[no-untyped-def]
        super().__init__(*args, **kwargs)
        self.outer = OuterStep(list(self.params.shared().values()), self.config.outer, self.config.outer_lr)

    def train_domain(self, batches, beta: float | None = None) -> None:  # type: ignore[no-untyped-def]
        self.outer.begin()
        self.update(self.inner_optimizer(), batches)
        self.outer.finish(self.config.beta if beta is None else beta)

    def train_epoch(self, epoch: int, rng: torch.Generator) -> None:
        for d in self.shuffled_domains(rng):
            self.train_domain(self.domain_batches(d, rng, self.config.inner_steps), self.config.beta_at(epoch))


def _split(batch: Batch) -> tuple[Batch, Batch]:
    half = max(1, batch[0].shape[0] // 2)
    return tuple(t[:half] for t in batch), tuple(t[half:] for t in batch)  # type: ignore[return-value]


class FirstOrderMeta(StepFramework):
    """Shared pieces: a functional loss at given parameters and an outer optimizer over θS."""

    def __init__(self, *args, **kwargs) -> None:  # type: ignore[no-untyped-def]
        super().__init__(*args, **kwargs)
        self.names = list(self.params.shared())
        self.meta_optimizer = make_optimizer(self.config.inner, self.params.shared().values(),
                                             self.config.inner_lr)
        self.alpha = self.config.outer_lr  # the inner (adaptation) step size

    def loss_at(self, params: dict[str, torch.Tensor], batch: Batch) -> torch.Tensor:
        user, item, domain, label = batch
        logits = functional_call(self.model, params, (user, item, domain), strict=False)
        return torch.nn.functional.binary_cross_entropy_with_logits(logits, label)

    def grads_at(self, params: dict[str, torch.Tensor], batch: Batch) -> list[torch.Tensor]:
        leaves = {n: t.detach().requires_grad_(True) for n, t in params.items()}
        grads = torch.autograd.grad(self.loss_at(leaves, batch), list(leaves.values()), allow_unused=True)
        return [torch.zeros_like(leaves[n]) if g is None else g for n, g in zip(self.names, grads, strict=True)]

    def adapt(self, support: Batch, steps: int = 1) -> dict[str, torch.Tensor]:
        """Θ' after ``steps`` SGD steps of size α on the support batch (no graph kept)."""
        params = {n: p.detach() for n, p in self.params.shared().items()}
        for _ in range(steps):
            grads = self.grads_at(params, support)
            params = {n: params[n] - self.alpha * g for n, g in zip(self.names, grads, strict=True)}
        return params

    def apply(self, grads: list[torch.Tensor]) -> None:
        for p, g in zip(self.params.shared().values(), grads, strict=True):
            p.grad = g
        self.meta_optimizer.step()
        self.meta_optimizer.zero_grad(set_to_none=True)


class MAML(FirstOrderMeta):
    name = "maml"
    min_domain_rows = 2  # a support and a query half

    def train_epoch(self, epoch: int, rng: torch.Generator) -> None:
        self.model.train()
        sampler = self.sampler(rng)
        for step in range(sampler.steps):
            total: list[torch.Tensor] | None = None
            present = sampler.domains(step)
            for d in present:
                support, query = _split(sampler.batch(step, d))
                grads = self.grads_at(self.adapt(support), query)
                total = grads if total is None else [a + b for a, b in zip(total, grads, strict=True)]
            if total is not None:
                self.apply([g / len(present) for g in total])


class MLDG(FirstOrderMeta):
    name = "mldg"

    def train_epoch(self, epoch: int, rng: torch.Generator) -> None:
        self.model.train()
        sampler = self.sampler(rng)
        for step in range(sampler.steps):
            present = sampler.domains(step)  # the split is over the domains with rows in this step
            if not present:
                continue
            n = len(present)
            order = torch.randperm(n, generator=rng).tolist()
            n_test = max(1, n // 3) if n > 1 else 0
            test, train = order[:n_test], order[n_test:]
            theta = {k: p.detach() for k, p in self.params.shared().items()}
            g_train = [torch.zeros_like(t) for t in theta.values()]
            for d in train:
                g_train = [a + b / len(train) for a, b in
                           zip(g_train, self.grads_at(theta, sampler.batch(step, present[d])), strict=True)]
            moved = {k: t - self.alpha * g for (k, t), g in zip(theta.items(), g_train, strict=True)}
            total = g_train
            for d in test:
                g_test = self.grads_at(moved, sampler.batch(step, present[d]))
                total = [a + b / len(test) for a, b in zip(total, g_test, strict=True)]
            self.apply(total)
