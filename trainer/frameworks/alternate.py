"""Baselines over one shared model: Alternate (domain by domain) and Joint (mixed-domain batches)."""

from __future__ import annotations

from collections.abc import Iterable, Iterator

import torch

from trainer.frameworks.base import Batch, Framework


class Alternate(Framework):
    """One pass per domain per epoch, domains in a fresh random order: DN with β = 1."""

    name = "alternate"

    def train_domain(self, batches: Iterable[Batch]) -> int:
        """One round on one domain's batches (what a streaming trainer calls)."""
        return self.update(self.inner_optimizer(), batches)

    def train_epoch(self, epoch: int, rng: torch.Generator) -> None:
        for d in self.shuffled_domains(rng):
            self.train_domain(self.domain_batches(d, rng, self.config.inner_steps))


class Joint(Framework):
    """All domains' rows shuffled together: every batch mixes domains (a stream's natural order)."""

    name = "joint"

    def mixed_batches(self, rng: torch.Generator) -> Iterator[Batch]:
        parts = [(d, self.dataset.train[d]) for d in self.domains]
        user = torch.cat([torch.from_numpy(s.user) for _, s in parts])
        item = torch.cat([torch.from_numpy(s.item) for _, s in parts])
        label = torch.cat([torch.from_numpy(s.label) for _, s in parts])
        domain = torch.cat([torch.full((len(s),), d, dtype=torch.long) for d, s in parts])
        order = torch.randperm(user.shape[0], generator=rng)
        for start in range(0, user.shape[0], self.config.batch_size):
            idx = order[start:start + self.config.batch_size]
            yield user[idx].to(self.device), item[idx].to(self.device), domain[idx].to(self.device), \
                label[idx].to(self.device)

    def train_epoch(self, epoch: int, rng: torch.Generator) -> None:
        self.update(self.inner_optimizer(), self.mixed_batches(rng))
