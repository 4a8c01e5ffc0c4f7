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
from trainer.frameworks.telemetry import MAX_DOMAINS, ConflictTelemetry, dense_parameters


class DomainNegotiation(Framework):
    name = "dn"

    def __init__(self, *args, **kwargs) -> None:  # type: ignore[no-untyped-def]
        super().__init__(*args, **kwargs)
        self.outer = OuterStep(list(self.dense_params().values()), self.config.outer, self.config.outer_lr,
                               tables=self.table_params())
        # conflict telemetry (telemetry.py): cosine of the domains' updates, set by each negotiate()
        self.telemetry = ConflictTelemetry(dense_parameters(self.model, self.params.shared()))
        self.conflict_matrix: list[list[float]] | None = None

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
        record = len(self.domains) <= MAX_DOMAINS and all(d >= 0 for d, _ in rounds)  # -1: a mixed chain
        self.telemetry.begin()
        steps = 0
        for domain, batches in rounds:
            if record:
                self.telemetry.before()
            steps += self.update(optimizer, batches)
            if record:
                self.telemetry.after(domain)  # u_i = Θ̃_after_i − Θ̃_before_i
        self.outer.finish(self.config.beta if beta is None else beta)
        if record:
            self.conflict_matrix = self.telemetry.cosine(self.domains)
        return steps

    def train_shared_epoch(self, epoch: int, rng: torch.Generator) -> None:
        order = self.shuffled_domains(rng)
        rounds = [(d, self.domain_batches(d, rng, self.config.inner_steps)) for d in order]
        self.negotiate(rounds, self.config.beta_at(epoch))

    def train_epoch(self, epoch: int, rng: torch.Generator) -> None:
        self.train_shared_epoch(epoch, rng)

    def progress_rate(self, epoch: int) -> float:
        """Interpolation moves Θ only β of the way to Θ̃: DN crosses a plateau ~1/β times slower."""
        return self.config.beta_at(epoch) if self.config.outer == "interp" else 1.0
