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
tensor with the batch's domain column set to 0 (the form export uses). Two differences from
``regularize``. Each target gets a fresh Adam state per round (``regularize`` shares one optimizer across
targets), so θi does not depend on the order of the targets — as in the distributed trainer (SGD has no
state). A fresh Adam state is also why SGD is the streaming default: Adam's first bias-corrected steps
move every weight by about ``lr`` whatever the size of its gradient, so a round of DR adds that much
noise to every coordinate of θi. And a group draws each domain's mini-batches once (``Batches``: passes
over random permutations, at most K batches): every update on T_d, as a neighbour (eq. 6) or as the
target (eq. 7), reads those batches, where ``regularize`` draws afresh per update. So the rows DR reads
per group are at most K batches per active domain, whatever k and the number of targets (a group holds
up to 1,024 targets with a head θi, fewer with a wide one: ``group_size``).

**θi over a linear head** (the default scope, ``trainer.specific=head``): when every tensor of θi is the
weight or bias of a one-output ``nn.Linear`` whose output is a term of the logit, logit(θS + θ̃i) =
logit(θS) + Σ (x·δW + δb) with x the layer's input, which θi does not change. Then DR computes θS's
logit and x once per drawn row (in training mode, so each drawn row gets one dropout mask for the round
where the whole-model path draws one per update) and each update is a logistic-regression step on them:
no pass through the body per update. Whether the logit is that sum is checked on the first rows against
the model with a random θi; when it is not, DR runs the whole model per update as above (logged).
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Literal

import numpy as np
import torch
from torch.func import functional_call, grad, vmap
from torch.nn import functional as F

from trainer.data.base import Split
from trainer.frameworks.precision import autocast
from trainer.params import DomainParameters

log = logging.getLogger(__name__)

GROUP = 64  # fewest targets per vmapped group
FEATURE_CHUNK = 8192  # rows per forward when computing the head inputs


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


class BatchedDR:
    """Algorithm 2 over groups of targets; ``run(targets, sequences, splits)`` updates their θi."""

    def __init__(self, params: DomainParameters, lr: float, gamma: float, batch_size: int, max_steps: int,
                 l2: float = 0.0, betas: tuple[float, float] = (0.9, 0.999), eps: float = 1e-8,
                 passes: int = 1, optimizer: Literal["adam", "sgd"] = "adam", precision: str = "fp32") -> None:
        self.params = params
        self.precision = precision  # of the head-input forward, as the training forward's (frameworks/precision.py)
        self.model = params.model
        self.lr, self.gamma, self.bs, self.max_steps, self.l2 = lr, gamma, batch_size, max_steps, l2
        self.betas, self.eps, self.passes = betas, eps, passes
        if optimizer not in ("adam", "sgd"):
            raise ValueError(f"BatchedDR optimizer {optimizer!r}: use 'adam' or 'sgd'")
        self.optimizer = optimizer
        self.names = list(params.specific_names)
        self.rows = [n for n in self.names if n in params.row_names]
        self.indexed = set(getattr(self.model, "domain_indexed", ()))
        # θi over a linear head (the default scope, ``trainer.specific=head``): DR needs the body once per row
        self.head = linear_head(self.model, self.names, self.indexed | set(self.rows))

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
        T = len(targets)
        used = sorted({d for t in targets for d in sequences[t]})
        batches = Batches.draw(used, splits, self.bs, self._steps, rng)
        if not len(batches.flat_user):  # no rows: every gradient is 0, so θi stays as it is
            return
        head = self._head_inputs(batches) if self.head is not None else None
        if head is None:
            named = dict(self.model.named_parameters())
            named.update(dict(self.model.named_buffers()))
            step_fn = vmap(grad(self._loss_fn({n: t.detach() for n, t in named.items()})),
                           in_dims=(0, 0, 0, 0, 0, 0, 0), randomness="different")
        delta = {n: torch.stack([self.params.delta(t)[n] for t in targets]) for n in self.names}
        adam = self.optimizer == "adam"  # SGD keeps no moment buffers
        m = {n: torch.zeros_like(v) for n, v in delta.items()} if adam else {}
        v2 = {n: torch.zeros_like(v) for n, v in delta.items()} if adam else {}
        count = torch.zeros(T)
        b1, b2 = self.betas
        length = max(len(sequences[t]) for t in targets)
        target_t = torch.tensor(targets)
        target_np = np.asarray(targets, dtype=np.int64)
        seq = np.full((T, length), -1, dtype=np.int64)  # each target's sequence, -1 after its end
        for k, t in enumerate(targets):
            seq[k, :len(sequences[t])] = sequences[t]
        for s in range(length):
            present_np = seq[:, s] >= 0
            # eq. 8 with γ = 1 is θi ← θ̃i: when every target takes this pair, step θi itself (no copy, no blend)
            in_place = self.gamma == 1.0 and bool(present_np.all())
            tilde = delta if in_place else {n: t.clone() for n, t in delta.items()}  # eq. 5
            for phase in (0, 1):  # eq. 6 on T_j, then eq. 7 on T_i
                doms_np = np.where(present_np, seq[:, s] if phase == 0 else target_np, -1)
                steps = np.array([batches.steps[d] if d >= 0 else 0 for d in doms_np.tolist()])
                dom_t = torch.from_numpy(np.maximum(doms_np, 0))
                is_target = (dom_t == target_t).float()
                for q in range(int(steps.max())):
                    active_np = q < steps
                    rows = np.array([batches.slot[(d, q)] if a else batches.idle
                                     for d, a in zip(doms_np.tolist(), active_np.tolist(), strict=True)])
                    width = max(1, int(batches.sizes[rows].max()))
                    label = torch.from_numpy(batches.label[rows, :width])
                    weight = torch.from_numpy(batches.weight[rows, :width])
                    with torch.enable_grad():
                        if head is None:
                            user = torch.from_numpy(batches.user[rows, :width])
                            item = torch.from_numpy(batches.item[rows, :width])
                            g = step_fn(tilde, user, item, label, weight, dom_t, is_target)
                        else:
                            g = self._head_grad(tilde, head, torch.from_numpy(batches.flat[rows, :width]), label,
                                                weight)
                    act = torch.from_numpy(active_np)
                    count += act.float()
                    c1 = 1 - b1 ** count.clamp_min(1)
                    c2 = 1 - b2 ** count.clamp_min(1)
                    everyone = bool(active_np.all())
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

    # -- θi over a linear head: the body's features once, then logistic regression per target ---------------------
    def _features(self, user: torch.Tensor, item: torch.Tensor, domain: torch.Tensor
                  ) -> tuple[dict[str, torch.Tensor], torch.Tensor]:
        """θS's logits of the rows and the input of every head layer, in the model's current mode: ``run``'s (dropout
        on, batch statistics from θS's running estimates), so each drawn row gets one dropout mask for the group,
        where the whole-model path draws one per update."""
        assert self.head is not None
        seen: dict[str, list[torch.Tensor]] = {name: [] for name in self.head}
        modules = dict(self.model.named_modules())
        hooks = [modules[name].register_forward_pre_hook(
            lambda _m, args, name=name: seen[name].append(args[0].detach())) for name in self.head]
        try:
            logits = [self.model(user[k:k + FEATURE_CHUNK], item[k:k + FEATURE_CHUNK], domain[k:k + FEATURE_CHUNK])
                      for k in range(0, len(user), FEATURE_CHUNK)]
        finally:
            for hook in hooks:
                hook.remove()
        rows = [len(z) for z in logits]
        for v in seen.values():  # one [rows, in] input per forward: a layer called twice, or per field, is not one term
            if len(v) != len(rows) or any(x.dim() != 2 or x.shape[0] != n for x, n in zip(v, rows, strict=True)):
                raise _NotAffine
        return {name: torch.cat(v) for name, v in seen.items()}, torch.cat(logits)

    @staticmethod
    def _logits(head: Mapping[str, tuple[str | None, str | None]], inputs: Mapping[str, torch.Tensor],
                base: torch.Tensor, delta: Mapping[str, torch.Tensor]) -> torch.Tensor:
        """logit(θS + θ̃i) = logit(θS) + Σ over head layers (x · δW + δb), for inputs [T, B, in], deltas [T, ...]."""
        z = base
        for name, (w, b) in head.items():
            if w is not None:
                z = z + torch.einsum("tbi,ti->tb", inputs[name], delta[w][:, 0, :])
            if b is not None:
                z = z + delta[b][:, :1]
        return z

    def _head_inputs(self, batches: Batches) -> tuple[dict[str, torch.Tensor], torch.Tensor] | None:
        """Every drawn row's head inputs and θS logit, or None when the model's logit is not affine in θi (checked
        first, on up to 64 rows in eval mode, against the model itself with a random θi; then DR runs the whole
        model)."""
        assert self.head is not None
        user, item = torch.from_numpy(batches.flat_user), torch.from_numpy(batches.flat_item)
        domain = torch.from_numpy(batches.flat_domain)
        try:
            if not self._affine(user[:64], item[:64], domain[:64]):
                raise _NotAffine
            with autocast(self.precision):
                inputs, base = self._features(user, item, domain)
            return {n: x.float() for n, x in inputs.items()}, base.float()
        except _NotAffine:
            log.warning("%s: the logit is not affine in θi's head %s; DR runs the whole model",
                        type(self.model).__name__, sorted(self.head))
            self.head = None
            return None

    def _affine(self, user: torch.Tensor, item: torch.Tensor, domain: torch.Tensor) -> bool:
        """logit(θS + δ) = logit(θS) + Σ (x·δW + δb) for a random δ over θi's names, without dropout."""
        assert self.head is not None
        gen = torch.Generator().manual_seed(0)
        named = dict(self.model.named_parameters())
        delta = {n: 0.5 * torch.randn(named[n].shape, generator=gen) for n in self.names}
        moved = {n: named[n] + delta[n] for n in self.names}
        with _eval_mode(self.model):  # no dropout: a train-only op after a head layer would go unseen here
            inputs, base = self._features(user, item, domain)
            full = functional_call(self.model, moved, (user, item, domain), strict=False)
        try:
            linear = self._logits(self.head, {n: x[None] for n, x in inputs.items()}, base[None],
                                  {n: d[None] for n, d in delta.items()})[0]
        except RuntimeError:  # shapes the sum does not take: not a logit term
            return False
        return linear.shape == full.shape and bool(torch.allclose(full, linear, rtol=1e-4, atol=1e-4))

    def _head_grad(self, tilde: Mapping[str, torch.Tensor],
                   head: tuple[Mapping[str, torch.Tensor], torch.Tensor], flat: torch.Tensor, label: torch.Tensor,
                   weight: torch.Tensor) -> dict[str, torch.Tensor]:
        """Each target's gradient of its weighted log loss (the same loss as ``_loss_fn``) at θS + θ̃i. The targets'
        losses are summed: each θ̃i only reaches its own, so the gradient of the sum is every target's own."""
        assert self.head is not None
        inputs, base = head
        leaves = {n: t.detach().requires_grad_() for n, t in tilde.items()}
        z = self._logits(self.head, {n: x[flat] for n, x in inputs.items()}, base[flat], leaves)
        per = (F.binary_cross_entropy_with_logits(z, label, reduction="none") * weight).sum(1)
        loss = (per / weight.sum(1).clamp_min(1.0)).sum()
        grads = torch.autograd.grad(loss, list(leaves.values()))
        return dict(zip(leaves, grads, strict=True))


@contextlib.contextmanager
def _eval_mode(model: torch.nn.Module) -> Iterator[None]:
    """Every module in eval mode, then each back in its own mode (``run`` keeps batch-statistics layers in eval
    while the rest trains; ``model.train(flag)`` would undo that)."""
    modes = [(m, m.training) for m in model.modules()]
    model.eval()
    try:
        yield
    finally:
        for m, mode in modes:
            m.training = mode


class _NotAffine(Exception):
    """The model's logit is not an affine function of θi's head."""


def linear_head(model: torch.nn.Module, names: Sequence[str], indexed: set[str]
                ) -> dict[str, tuple[str | None, str | None]] | None:
    """θi's layers as {layer: (weight name, bias name)} when every name of θi is the weight or bias of a shared
    ``nn.Linear`` with one output (a logit term), else None. Whether the logit is their sum is checked on data."""
    modules = dict(model.named_modules())
    head: dict[str, list[str | None]] = {}
    for n in names:
        layer, _, leaf = n.rpartition(".")
        module = modules.get(layer)
        if n in indexed or leaf not in ("weight", "bias") or not isinstance(module, torch.nn.Linear) \
                or module.out_features != 1:
            return None
        head.setdefault(layer, [None, None])[0 if leaf == "weight" else 1] = n
    return {layer: (w, b) for layer, (w, b) in head.items()} or None


@dataclass
class Batches:
    """A group's mini-batches, drawn once: every update on T_d (eq. 6 as a neighbour, eq. 7 as the target) reads
    the same ``steps[d]`` batches of d, so the rows a group's DR reads are at most K batches per domain.

    Row ``slot[(d, q)]`` of the padded tables is d's q-th batch; ``idle`` is an all-weight-0 row (a target that
    sits out a step). ``flat`` indexes each cell's row in ``flat_user``/``flat_item``/``flat_domain`` (the
    batches' rows end to end, for the head inputs)."""

    slot: dict[tuple[int, int], int]
    steps: dict[int, int]
    user: np.ndarray
    item: np.ndarray
    label: np.ndarray
    weight: np.ndarray
    flat: np.ndarray
    sizes: np.ndarray
    flat_user: np.ndarray
    flat_item: np.ndarray
    flat_domain: np.ndarray

    @property
    def idle(self) -> int:
        return len(self.sizes) - 1

    @classmethod
    def draw(cls, used: Sequence[int], splits: Mapping[int, Split], size: int, steps_of: Callable[[Split], int],
             rng: np.random.Generator) -> Batches:
        """A split that fits one batch is taken whole at every step (the loss is a weighted sum: order does not
        matter); a larger one gets ``steps_of(split)`` batches cut from passes over random permutations of it
        (``size`` rows each, a pass's last one shorter), so no row is read twice before every row was read once."""
        picks: list[tuple[int, np.ndarray]] = []
        slot: dict[tuple[int, int], int] = {}
        steps: dict[int, int] = {}
        for d in used:
            split = splits[d]
            n, steps[d] = len(split), steps_of(split)
            if n <= size:  # whole, one slot for every step
                slot.update({(d, q): len(picks) for q in range(steps[d])})
                picks.append((d, np.arange(n)))
                continue
            chunks: list[np.ndarray] = []
            while len(chunks) < steps[d]:  # passes over a permutation: disjoint batches, the last one shorter
                order = rng.permutation(n)
                chunks += [order[k:k + size] for k in range(0, n, size)]
            for q, idx in enumerate(chunks[:steps[d]]):
                slot[(d, q)] = len(picks)
                picks.append((d, idx))
        width = max((len(idx) for _, idx in picks), default=1)
        rows = len(picks) + 1
        out = {f: np.zeros((rows, width), dtype=dt) for f, dt in
               (("user", np.int64), ("item", np.int64), ("label", np.float32), ("weight", np.float32),
                ("flat", np.int64))}
        sizes = np.zeros(rows, dtype=np.int64)
        offset = 0
        for k, (d, idx) in enumerate(picks):
            split, n = splits[d], len(idx)
            out["user"][k, :n], out["item"][k, :n], out["label"][k, :n] = split.user[idx], split.item[idx], \
                split.label[idx]
            out["weight"][k, :n], out["flat"][k, :n], sizes[k] = 1.0, offset + np.arange(n), n
            offset += n
        flat_user = np.concatenate([splits[d].user[idx] for d, idx in picks]) if picks else np.zeros(0, np.int64)
        flat_item = np.concatenate([splits[d].item[idx] for d, idx in picks]) if picks else np.zeros(0, np.int64)
        flat_domain = np.concatenate([np.full(len(idx), d, dtype=np.int64) for d, idx in picks]) if picks \
            else np.zeros(0, np.int64)
        return cls(slot=slot, steps=steps, sizes=sizes, flat_user=flat_user.astype(np.int64),
                   flat_item=flat_item.astype(np.int64), flat_domain=flat_domain, **out)
