"""The outer step of DN (and of any two-loop framework), done with ``torch._foreach_*`` into
preallocated buffers: the per-parameter Python loop costs ~4× more on large models (~20 vs 75-87 ms over
67 MB, docs/performance.md, "Training: the outer step").

``begin()`` remembers Θ; the inner loop moves the live parameters to Θ̃; ``finish(beta)`` sets
Θ ← Θ + β(Θ̃ − Θ) (``interp``) or feeds (Θ − Θ̃) as the gradient to an outer optimizer.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from trainer.frameworks.base import make_optimizer


class OuterStep:
    def __init__(self, params: Sequence[nn.Parameter], kind: str = "interp", lr: float = 0.1) -> None:
        self.params = list(params)
        self.kind = kind
        self.start = [p.detach().clone() for p in self.params]
        self.grads = [torch.zeros_like(p) for p in self.params] if kind != "interp" else []
        self.optimizer = make_optimizer(kind, self.params, lr) if kind != "interp" else None

    def _live(self) -> list[torch.Tensor]:
        return [p.detach() for p in self.params]

    @torch.no_grad()
    def begin(self) -> None:
        torch._foreach_copy_(self.start, self._live())

    @torch.no_grad()
    def finish(self, beta: float) -> None:
        live = self._live()
        if self.optimizer is None:
            torch._foreach_lerp_(self.start, live, beta)  # start ← Θ + β(Θ̃ − Θ)
            torch._foreach_copy_(live, self.start)
            return
        torch._foreach_copy_(self.grads, self.start)
        torch._foreach_sub_(self.grads, live)  # Θ − Θ̃
        torch._foreach_copy_(live, self.start)
        for p, g in zip(self.params, self.grads, strict=True):
            p.grad = g
        self.optimizer.step()
        for p in self.params:
            p.grad = None
