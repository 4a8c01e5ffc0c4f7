"""Domain Negotiation (Algorithm 1): chained inner updates over shuffled domains, then one outer step.

The outer step Θ ← Θ + β(Θ̃_{n+1} − Θ) makes the update follow eq. 18: the joint gradient plus a
term that raises the inner products of the domains' gradients. β = 1 is alternate training.
With row-sparse tables the outer step touches the dense parameters and the rows the batches read.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import torch

from trainer.frameworks.base import Batch, Framework
from trainer.frameworks.outer import OuterStep
from trainer.frameworks.sparse import touched_rows


class DomainNegotiation(Framework):
    name = "dn"

    def __init__(self, *args, **kwargs) -> None:  # type: ignore[no-untyped-def]
        super().__init__(*args, **kwargs)
        self.outer = OuterStep(list(self.dense_params().values()), self.config.outer, self.config.outer_lr,
                               tables=self.table_params())

    def negotiate(self, rounds: Sequence[tuple[int, Iterable[Batch]]], beta: float | None = None) -> int:
        """One outer iteration over (domain, batches) pairs in the given order; returns inner steps.

        A streaming trainer passes K mini-batches per domain from its buffers; ``train_epoch``
        passes one full shuffled pass per domain.
        """
        rows = None
        if self.outer.tables:  # row-sparse tables: remember only the rows the inner loop will read
            rounds = [(d, list(batches)) for d, batches in rounds]
            rows = touched_rows(b for _, batches in rounds for b in batches)
        self.outer.begin(rows)
        optimizer = self.inner_optimizer()
        steps = sum(self.update(optimizer, batches) for _, batches in rounds)
        self.outer.finish(self.config.beta if beta is None else beta)
        return steps

    def train_shared_epoch(self, epoch: int, rng: torch.Generator) -> None:
        order = self.shuffled_domains(rng)
        rounds = [(d, self.domain_batches(d, rng, self.config.inner_steps)) for d in order]
        self.negotiate(rounds, self.config.beta_at(epoch))

    def train_epoch(self, epoch: int, rng: torch.Generator) -> None:
        self.train_shared_epoch(epoch, rng)
