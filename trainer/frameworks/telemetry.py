"""Domain-conflict telemetry for Domain Negotiation: the pairwise cosine of the domains' updates.

DN's inner loop (Algorithm 1, lines 4-6) applies one update per domain to the chained Θ̃. The update of
domain i is u_i = Θ̃_after_i − Θ̃_before_i; eq. 18 says DN rewards directions where the domains' gradients
have positive inner products, so cos(u_i, u_j) < 0 is the conflict it negotiates. Each outer iteration
records the n × n Gram matrix of the flattened u_i over the *dense* parameters (the embedding tables are
left out: a domain only touches its own rows, so they add norm but no cross-domain product), normalised
to cosines. Cost: one copy and one subtraction of the dense parameters per domain, and one n × n matmul.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

MAX_DOMAINS = 64  # above this, n vectors of dense parameters stop being "cheap": telemetry is skipped


def dense_parameters(model: nn.Module, params: dict[str, nn.Parameter]) -> list[nn.Parameter]:
    """Shared parameters that are neither user/item tables nor domain-indexed tensors."""
    skip = set(getattr(model, "SHARED_TABLES", ())) | set(getattr(model, "domain_indexed", ()))
    return [p for n, p in params.items() if n not in skip]


class ConflictTelemetry:
    """``begin()`` once per outer iteration; ``before()``/``after(d)`` around each domain's update;
    ``cosine(domains)`` gives the matrix in the order of ``domains`` (NaN for a domain not updated)."""

    def __init__(self, params: Sequence[nn.Parameter]) -> None:
        self.params = list(params)
        self._before: torch.Tensor | None = None
        self.updates: dict[int, torch.Tensor] = {}

    def _flat(self) -> torch.Tensor:
        return torch.cat([p.detach().reshape(-1) for p in self.params]) if self.params else torch.zeros(0)

    def begin(self) -> None:
        self.updates = {}

    def before(self) -> None:
        self._before = self._flat().clone()

    def after(self, domain: int) -> None:
        assert self._before is not None
        update = self._flat() - self._before
        self.updates[domain] = update if domain not in self.updates else self.updates[domain] + update

    def cosine(self, domains: Sequence[int]) -> list[list[float]]:
        n = len(domains)
        out = torch.full((n, n), float("nan"), dtype=torch.float64)
        seen = [k for k, d in enumerate(domains) if d in self.updates]
        if seen:
            u = torch.stack([self.updates[domains[k]] for k in seen]).double()
            gram = u @ u.T
            norm = gram.diagonal().clamp_min(1e-30).sqrt()
            cos = gram / norm[:, None] / norm[None, :]
            idx = torch.tensor(seen)
            out[idx[:, None], idx[None, :]] = cos
        return out.tolist()
