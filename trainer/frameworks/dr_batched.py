"""Domain Regularization (Algorithm 2) for many target domains at once, with ``torch.func.vmap``.

With θS fixed, the targets' problems are independent: target i only moves its own θ̃i (eqs. 5-8).
So instead of one Python loop of 2(k + 1) inner updates per target, every step here advances all
targets of a group together: ``vmap`` over the stacked θ̃ [T, ...] of a ``grad`` of the loss, each
target on its own mini-batch (padded to the group's largest with weight 0), then Adam or plain SGD
(``optimizer``; the continual trainer's default is SGD, docs/streaming.md) on the stacked tensors.
The per-target Python cost becomes a slice of one batched step, so a round's DR cost grows with the
rows it trains on, not with ``targets × steps`` kernel launches.

What each target computes is Algorithm 2 as ``DomainRegularization.regularize`` runs it:
θ̃i ← θi (eq. 5); updates on T_j (eq. 6) then T_i (eq. 7) at Θ = θS + θ̃i; θi ← θi + γ(θ̃i − θi)
(eq. 8), for each j of the sampled sequence. A domain-indexed tensor's θi is its row i: a batch of
T_j reads row j of θS (no delta), a batch of T_i reads row i of θS + θ̃i; both are fed as a one-row
tensor with the batch's domain column set to 0 (the form export uses). The one difference (with Adam;
SGD has no state, so none): each target gets a fresh Adam state per round (``regularize`` shares one
optimizer across targets), so θi does not depend on the order of the targets — as in the distributed
trainer. A fresh Adam state is also
why SGD is the streaming default: Adam's first bias-corrected steps move every weight by about ``lr``
whatever the size of its gradient, so a round of DR adds that much noise to every coordinate of θi.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Literal

import numpy as np
import torch
from torch.func import functional_call, grad, vmap
from torch.nn import functional as F

from trainer.data.base import Split
from trainer.params import DomainParameters

GROUP = 64  # fewest targets per vmapped group


def _batch_statistics(module: torch.nn.Module) -> bool:
    """A layer that normalises by its batch in training (BatchNorm, STAR's partitioned norm). DR runs it with its
    running statistics: they are θS's state, which DR must not move, a vmapped step cannot group rows by domain
    (``torch.unique`` has no batching rule), and a target's padded rows would count in the batch statistics."""
    return isinstance(module, torch.nn.modules.batchnorm._NormBase) or bool(getattr(module, "BATCH_STATISTICS", False))
MAX_GROUP = 1024  # most targets per group
GROUP_BYTES = 256 << 20  # a group's θ̃, Adam m and v and grad (4 × |θi| floats per target) stay under this


def group_size(params: DomainParameters) -> int:
    """Targets per vmapped step: as many as ``GROUP_BYTES`` allows (a vmapped step costs ~10-20 ms of fixed
    Python/dispatch time whatever its width, so 64 targets per step was ~2-4 ms per target per round at
    1,000 domains with a small MLP), at least ``GROUP`` and at most ``MAX_GROUP``."""
    per_target = 4 * 4 * sum(int(torch.Size(params.delta_shape(n)).numel()) for n in params.specific_names)
    return max(GROUP, min(MAX_GROUP, GROUP_BYTES // max(1, per_target)))


def _padded(table: np.ndarray, rows: np.ndarray, width: int) -> np.ndarray:
    """Rows ``rows`` of a padded table, cut or zero-padded to ``width`` columns (a fresh array)."""
    if width <= table.shape[1]:
        return table[rows, :width]
    out = np.zeros((len(rows), width), dtype=table.dtype)
    out[:, :table.shape[1]] = table[rows]
    return out


class BatchedDR:
    """Algorithm 2 over groups of targets; ``run(targets, sequences, splits)`` updates their θi."""

    def __init__(self, params: DomainParameters, lr: float, gamma: float, batch_size: int, max_steps: int,
                 l2: float = 0.0, betas: tuple[float, float] = (0.9, 0.999), eps: float = 1e-8,
                 passes: int = 1, optimizer: Literal["adam", "sgd"] = "adam") -> None:
        self.params = params
        self.model = params.model
        self.lr, self.gamma, self.bs, self.max_steps, self.l2 = lr, gamma, batch_size, max_steps, l2
        self.betas, self.eps, self.passes = betas, eps, passes
        if optimizer not in ("adam", "sgd"):
            raise ValueError(f"BatchedDR optimizer {optimizer!r}: use 'adam' or 'sgd'")
        self.optimizer = optimizer
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
        self.model.train()  # dropout as in training, but normalisation by θS's running statistics (below)
        for module in self.model.modules():
            if _batch_statistics(module):
                module.eval()
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
        adam = self.optimizer == "adam"  # SGD keeps no moment buffers
        m = {n: torch.zeros_like(v) for n, v in delta.items()} if adam else {}
        v2 = {n: torch.zeros_like(v) for n, v in delta.items()} if adam else {}
        count = torch.zeros(T)
        b1, b2 = self.betas
        length = max(len(sequences[t]) for t in targets)
        # every split that fits one batch is always taken whole (the loss is a weighted sum: row order does not
        # matter), so its padded rows are built once per group and each step gathers them in one numpy index
        used = sorted({d for t in targets for d in sequences[t]})
        whole = [d for d in used if len(splits[d]) <= self.bs]
        slot_of = {d: k for k, d in enumerate(whole)}
        wide = max((len(splits[d]) for d in whole), default=1)
        table = {f: np.zeros((len(whole) + 1, wide), dtype=dt) for f, dt in
                 (("user", np.int64), ("item", np.int64), ("label", np.float32), ("weight", np.float32))}
        sizes = np.zeros(len(whole) + 1, dtype=np.int64)  # the last row: an inactive target (all weight 0)
        for k, d in enumerate(whole):
            sp, n = splits[d], len(splits[d])
            table["user"][k, :n], table["item"][k, :n], table["label"][k, :n] = sp.user, sp.item, sp.label
            table["weight"][k, :n], sizes[k] = 1.0, n
        target_t = torch.tensor(targets)
        target_np = np.asarray(targets, dtype=np.int64)
        seq = np.full((T, length), -1, dtype=np.int64)  # each target's sequence, -1 after its end
        for k, t in enumerate(targets):
            seq[k, :len(sequences[t])] = sequences[t]
        steps_of = {d: self._steps(splits[d]) for d in used}
        row_of = {d: slot_of.get(d, len(whole)) for d in used}
        for s in range(length):
            present_np = seq[:, s] >= 0
            # eq. 8 with γ = 1 is θi ← θ̃i: when every target takes this pair, step θi itself (no copy, no blend)
            in_place = self.gamma == 1.0 and bool(present_np.all())
            tilde = delta if in_place else {n: t.clone() for n, t in delta.items()}  # eq. 5
            for phase in (0, 1):  # eq. 6 on T_j, then eq. 7 on T_i
                doms_np = np.where(present_np, seq[:, s] if phase == 0 else target_np, -1)
                doms = doms_np.tolist()
                steps = np.array([steps_of[d] if d >= 0 else 0 for d in doms])
                base_rows = np.array([row_of[d] if d >= 0 else len(whole) for d in doms])
                dom_t = torch.from_numpy(np.maximum(doms_np, 0))
                is_target = (dom_t == target_t).float()
                for q in range(int(steps.max())):
                    active_np = q < steps
                    active = active_np.tolist()
                    rows = np.where(active_np, base_rows, len(whole))
                    big = [k for k in np.flatnonzero(active_np & (base_rows == len(whole))).tolist()]
                    parts = {k: self._batch(splits[doms[k]], rng, self.bs) for k in big}
                    width = max([int(sizes[rows].max()), *(len(p[0]) for p in parts.values())])
                    fields = {f: _padded(table[f], rows, width) for f in table}
                    for k, p in parts.items():  # sampled batches of splits larger than a batch
                        n = len(p[0])
                        fields["user"][k, :n], fields["item"][k, :n], fields["label"][k, :n] = p[0], p[1], p[2]
                        fields["weight"][k, :n] = 1.0
                    user, item = torch.from_numpy(fields["user"]), torch.from_numpy(fields["item"])
                    label, weight = torch.from_numpy(fields["label"]), torch.from_numpy(fields["weight"])
                    with torch.enable_grad():
                        g = step_fn(tilde, user, item, label, weight, dom_t, is_target)
                    act = torch.tensor(active)
                    count += act.float()
                    c1 = 1 - b1 ** count.clamp_min(1)
                    c2 = 1 - b2 ** count.clamp_min(1)
                    everyone = bool(act.all())
                    for n in self.names:  # on the stacked tensors; inactive targets keep θ̃ (and Adam's state)
                        shape = (T,) + (1,) * (tilde[n].dim() - 1)
                        if not adam:  # plain SGD (no state); an inactive target keeps its θ̃
                            if everyone:
                                tilde[n].sub_(g[n], alpha=self.lr)
                            else:
                                tilde[n] = torch.where(act.view(shape), tilde[n] - self.lr * g[n], tilde[n])
                            continue
                        if everyone:  # the common case: no masking, in place
                            m[n].mul_(b1).add_(g[n] * (1 - b1))
                            v2[n].mul_(b2).add_(g[n].pow(2) * (1 - b2))
                            upd = (m[n] / c1.view(shape)) / ((v2[n] / c2.view(shape)).sqrt() + self.eps)
                            tilde[n].sub_(upd, alpha=self.lr)
                            continue
                        a = act.view(shape)
                        new_m = torch.where(a, m[n] * b1 + g[n] * (1 - b1), m[n])
                        new_v = torch.where(a, v2[n] * b2 + g[n].pow(2) * (1 - b2), v2[n])
                        m[n], v2[n] = new_m, new_v
                        upd = (new_m / c1.view(shape)) / ((new_v / c2.view(shape)).sqrt() + self.eps)
                        tilde[n] = torch.where(a, tilde[n] - self.lr * upd, tilde[n])
            if in_place:
                continue
            present = torch.from_numpy(present_np)
            for n in self.names:  # eq. 8
                shape = (T,) + (1,) * (delta[n].dim() - 1)
                delta[n] = torch.where(present.view(shape), delta[n].lerp(tilde[n], self.gamma), delta[n])
        for k, t in enumerate(targets):
            own = self.params.delta(t)
            for n in self.names:
                own[n].copy_(delta[n][k])
