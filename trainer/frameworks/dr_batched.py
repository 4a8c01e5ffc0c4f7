"""Domain Regularization (Algorithm 2) for many target domains at once, with ``torch.func.vmap``.

With θS fixed, the targets' problems are independent: target i only moves its own θ̃i (eqs. 5-8).
So instead of one Python loop of 2(k + 1) inner updates per target, every step here advances all
targets of a group together: ``vmap`` over the stacked θ̃ [T, ...] of a ``grad`` of the loss, each
target on its own mini-batch (padded to the group's largest with weight 0), then Adam on the stacked
tensors. The per-target Python cost becomes a slice of one batched step, so a round's DR cost grows
with the rows it trains on, not with ``targets × steps`` kernel launches.

What each target computes is Algorithm 2 as ``DomainRegularization.regularize`` runs it:
θ̃i ← θi (eq. 5); updates on T_j (eq. 6) then T_i (eq. 7) at Θ = θS + θ̃i; θi ← θi + γ(θ̃i − θi)
(eq. 8), for each j of the sampled sequence. A domain-indexed tensor's θi is its row i: a batch of
T_j reads row j of θS (no delta), a batch of T_i reads row i of θS + θ̃i; both are fed as a one-row
tensor with the batch's domain column set to 0 (the form export uses). The one difference: each
target gets a fresh Adam state per round (``regularize`` shares one optimizer across targets), so θi
does not depend on the order of the targets — as in the distributed trainer.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence

import numpy as np
import torch
from torch.func import functional_call, grad, vmap
from torch.nn import functional as F

from trainer.data.base import Split
from trainer.params import DomainParameters

GROUP = 64  # fewest targets per vmapped group
MAX_GROUP = 1024  # most targets per group
GROUP_BYTES = 256 << 20  # a group's θ̃, Adam m and v and grad (4 × |θi| floats per target) stay under this


def group_size(params: DomainParameters) -> int:
    """Targets per vmapped step: as many as ``GROUP_BYTES`` allows (a vmapped step costs ~10-20 ms of fixed
    Python/dispatch time whatever its width, so 64 targets per step was ~2-4 ms per target per round at
    1,000 domains with a small MLP), at least ``GROUP`` and at most ``MAX_GROUP``."""
    per_target = 4 * 4 * sum(int(torch.Size(params.delta_shape(n)).numel()) for n in params.specific_names)
    return max(GROUP, min(MAX_GROUP, GROUP_BYTES // max(1, per_target)))


class BatchedDR:
    """Algorithm 2 over groups of targets; ``run(targets, sequences, splits)`` updates their θi."""

    def __init__(self, params: DomainParameters, lr: float, gamma: float, batch_size: int, max_steps: int,
                 l2: float = 0.0, betas: tuple[float, float] = (0.9, 0.999), eps: float = 1e-8,
                 passes: int = 1) -> None:
        self.params = params
        self.model = params.model
        self.lr, self.gamma, self.bs, self.max_steps, self.l2 = lr, gamma, batch_size, max_steps, l2
        self.betas, self.eps, self.passes = betas, eps, passes
        self.names = list(params.specific_names)
        self.rows = [n for n in self.names if n in params.row_names]
        self.indexed = set(getattr(self.model, "domain_indexed", ()))

    # -- one target's loss (vmapped) ------------------------------------------------------------------
    def _loss_fn(self, fixed: Mapping[str, torch.Tensor]) -> Callable[..., torch.Tensor]:
        names, indexed, row_names, l2 = self.names, self.indexed, set(self.rows), self.l2
        model = self.model

        def loss(delta: dict[str, torch.Tensor], user: torch.Tensor, item: torch.Tensor, label: torch.Tensor,
                 weight: torch.Tensor, dom: torch.Tensor, is_target: torch.Tensor) -> torch.Tensor:
            params = {}
            for n, t in fixed.items():  # every domain-indexed tensor: the batch's own row
                params[n] = torch.index_select(t, 0, dom.reshape(1)) if n in indexed else t
            for n in names:
                d = delta[n] * is_target if n in row_names else delta[n]  # T_j's batch reads no θi row
                params[n] = params[n] + d
            zero = torch.zeros_like(user)
            logits = functional_call(model, params, (user, item, zero), strict=False)
            out = (F.binary_cross_entropy_with_logits(logits, label, reduction="none") * weight).sum()
            out = out / weight.sum().clamp_min(1.0)
            if l2 and "domain_embedding.weight" in params:  # the paper's L2 on the domain row read
                out = out + l2 * params["domain_embedding.weight"].pow(2).sum()
            return out

        return loss

    def _batch(self, split: Split, rng: np.random.Generator, size: int) -> tuple[np.ndarray, ...]:
        n = len(split)
        idx = rng.permutation(n)[:size] if n > size else rng.permutation(n)
        return split.user[idx], split.item[idx], split.label[idx]

    def _steps(self, split: Split) -> int:
        """Mini-batches of one update on ``split``: ``passes`` passes over it, at most ``max_steps`` (K)."""
        return max(1, min(self.max_steps, -(-self.passes * len(split) // self.bs)))

    @torch.no_grad()
    def run(self, targets: Sequence[int], sequences: Mapping[int, Sequence[int]], splits: Mapping[int, Split],
            seed: int = 0) -> None:
        """Eqs. 5-8 for every target over its sequence (k others then itself), ``GROUP`` targets at a time."""
        rng = np.random.default_rng(seed)
        was_training = self.model.training
        self.model.train()
        size = group_size(self.params)
        # similar-sized targets share a group: a step pads every target to the group's largest batch
        ordered = sorted(targets, key=lambda t: len(splits[t]))
        try:
            for start in range(0, len(ordered), size):
                self._group(list(ordered[start:start + size]), sequences, splits, rng)
        finally:
            self.model.train(was_training)

    def _group(self, targets: list[int], sequences: Mapping[int, Sequence[int]], splits: Mapping[int, Split],
               rng: np.random.Generator) -> None:
        named = dict(self.model.named_parameters())
        named.update(dict(self.model.named_buffers()))
        fixed = {n: t.detach() for n, t in named.items()}
        loss = self._loss_fn(fixed)
        step_fn = vmap(grad(loss), in_dims=(0, 0, 0, 0, 0, 0, 0), randomness="different")
        T = len(targets)
        delta = {n: torch.stack([self.params.delta(t)[n] for t in targets]) for n in self.names}
        m = {n: torch.zeros_like(v) for n, v in delta.items()}
        v2 = {n: torch.zeros_like(v) for n, v in delta.items()}
        count = torch.zeros(T)
        b1, b2 = self.betas
        length = max(len(sequences[t]) for t in targets)
        for s in range(length):
            tilde = {n: t.clone() for n, t in delta.items()}  # eq. 5
            for phase in (0, 1):  # eq. 6 on T_j, then eq. 7 on T_i
                doms = [(sequences[t][s] if phase == 0 else t) if s < len(sequences[t]) else -1 for t in targets]
                steps = [self._steps(splits[d]) if d >= 0 else 0 for d in doms]
                for q in range(max(steps)):
                    active = [q < st for st in steps]
                    parts = [self._batch(splits[d], rng, self.bs) if a else None for d, a in zip(doms, active,
                                                                                                 strict=True)]
                    width = max(len(p[0]) for p in parts if p is not None)
                    user_np = np.zeros((T, width), dtype=np.int64)
                    item_np = np.zeros((T, width), dtype=np.int64)
                    label_np = np.zeros((T, width), dtype=np.float32)
                    weight_np = np.zeros((T, width), dtype=np.float32)
                    for k, p in enumerate(parts):  # numpy slices (~1 µs each), one tensor per field after
                        if p is not None:
                            n = len(p[0])
                            user_np[k, :n], item_np[k, :n], label_np[k, :n], weight_np[k, :n] = p[0], p[1], p[2], 1.0
                    user, item = torch.from_numpy(user_np), torch.from_numpy(item_np)
                    label, weight = torch.from_numpy(label_np), torch.from_numpy(weight_np)
                    dom = torch.tensor([max(d, 0) for d in doms])
                    is_target = torch.tensor([1.0 if d == t else 0.0 for d, t in zip(doms, targets, strict=True)])
                    with torch.enable_grad():
                        g = step_fn(tilde, user, item, label, weight, dom, is_target)
                    act = torch.tensor(active)
                    count += act.float()
                    c1 = 1 - b1 ** count.clamp_min(1)
                    c2 = 1 - b2 ** count.clamp_min(1)
                    for n in self.names:  # Adam on the stacked tensors; inactive targets keep their state
                        shape = (T,) + (1,) * (tilde[n].dim() - 1)
                        a = act.view(shape)
                        new_m = torch.where(a, m[n] * b1 + g[n] * (1 - b1), m[n])
                        new_v = torch.where(a, v2[n] * b2 + g[n].pow(2) * (1 - b2), v2[n])
                        m[n], v2[n] = new_m, new_v
                        upd = (new_m / c1.view(shape)) / ((new_v / c2.view(shape)).sqrt() + self.eps)
                        tilde[n] = torch.where(a, tilde[n] - self.lr * upd, tilde[n])
            present = torch.tensor([s < len(sequences[t]) for t in targets])
            for n in self.names:  # eq. 8
                shape = (T,) + (1,) * (delta[n].dim() - 1)
                delta[n] = torch.where(present.view(shape), delta[n].lerp(tilde[n], self.gamma), delta[n])
        for k, t in enumerate(targets):
            own = self.params.delta(t)
            for n in self.names:
                own[n].copy_(delta[n][k])
