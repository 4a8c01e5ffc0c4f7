"""The framework contract: (model, DomainParameters, dataset, config) → ``train_epoch`` + a scorer.

A framework owns its optimizers and per-round state; ``fit`` (in ``fit.py``) owns the epoch loop,
early stopping and the best-state snapshot. Every update is exposed one round at a time over plain
batch iterables, so a streaming trainer can drive the same code with batches from a stream.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping
from contextlib import contextmanager
from itertools import islice
from typing import ClassVar

import torch
from torch import nn
from torch.nn import functional as F

from contracts.errors import ConfigError
from trainer.data.base import MultiDomainDataset
from trainer.frameworks.config import FrameworkConfig
from trainer.frameworks.precision import autocast
from trainer.frameworks.sparse import (
    SplitOptimizer,
    make_table_optimizer,
    set_sparse_tables,
    table_lr,
    table_names,
)
from trainer.models.base import CTRModel
from trainer.params import DomainParameters

Batch = tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]  # user, item, domain, label


def make_optimizer(kind: str, params: Iterable[nn.Parameter], lr: float) -> torch.optim.Optimizer:
    """A dense optimizer; ``foreach``: one multi-tensor kernel per op instead of a Python loop per tensor."""
    params = list(params)
    if kind == "adam":
        return torch.optim.Adam(params, lr=lr, foreach=True)
    if kind == "sgd":
        return torch.optim.SGD(params, lr=lr, foreach=True)
    if kind == "adagrad":
        return torch.optim.Adagrad(params, lr=lr, foreach=True)
    raise ValueError(kind)


class Framework:
    """Base class. Subclasses implement ``train_epoch`` and may override ``uses_deltas``."""

    name: ClassVar[str] = "base"
    uses_deltas: ClassVar[bool] = False

    def __init__(self, model: CTRModel, dataset: MultiDomainDataset, config: FrameworkConfig,
                 params: DomainParameters | None = None) -> None:
        self.config = config
        self.device = torch.device(config.device)
        self.model = model.to(self.device)
        self.dataset = dataset
        self.params = params if params is not None else DomainParameters(model, config.specific)
        self.domains = list(range(dataset.n_domains))
        self._inner: torch.optim.Optimizer | SplitOptimizer | None = None
        set_sparse_tables(self.model, config.sparse_tables)
        if config.sparse_tables and set(table_names(self.model)) & set(self.params.specific_names):
            raise ConfigError("row-sparse tables cannot have per-domain deltas: leave the user/item "
                              "tables out of `specific` or use table_optimizer='dense'")

    def table_params(self) -> dict[str, nn.Parameter]:
        """The row-sparse user/item tables by name (empty with ``table_optimizer='dense'``)."""
        if not self.config.sparse_tables:
            return {}
        shared = self.params.shared()
        return {n: shared[n] for n in table_names(self.model)}

    def dense_params(self) -> dict[str, nn.Parameter]:
        """θS without the row-sparse tables."""
        tables = self.table_params()
        return {n: p for n, p in self.params.shared().items() if n not in tables}

    def make_inner(self, kind: str, lr: float,
                   tables: torch.optim.Optimizer | None = None) -> torch.optim.Optimizer | SplitOptimizer:
        """``kind`` over θS; row-sparse tables get their own row-wise optimizer (or ``tables``)."""
        if not self.config.sparse_tables:
            return make_optimizer(kind, self.params.shared().values(), lr)
        cfg = self.config
        if tables is None:
            tables = make_table_optimizer(cfg.table_optimizer, list(self.table_params().values()),
                                          table_lr(cfg.table_optimizer, cfg.table_lr, lr))
        return SplitOptimizer(make_optimizer(kind, self.dense_params().values(), lr), tables)

    # -- optimisation primitives ----------------------------------------------------------------
    def loss(self, batch: Batch) -> torch.Tensor:
        """BCE on logits plus the paper's L2 on the embedding rows the batch touched."""
        user, item, domain, label = batch
        with autocast(self.config.precision):  # the forward only: the loss and every step stay float32
            logits = self.model(user, item, domain)
        loss = F.binary_cross_entropy_with_logits(logits.float(), label)
        if self.config.l2:
            loss = loss + self.config.l2 * self.model.l2_embeddings(user, item, domain)
        return loss

    def inner_optimizer(self) -> torch.optim.Optimizer:
        """The inner optimizer over θS; one instance whose state persists unless configured not to."""
        if self._inner is None or not self.config.persist_inner_state:
            self._inner = self.make_inner(self.config.inner, self.config.inner_lr)
        return self._inner

    def update(self, optimizer: torch.optim.Optimizer | SplitOptimizer, batches: Iterable[Batch]) -> int:
        """One inner "update": optimizer steps over the given batches; returns the number of steps."""
        self.model.train()
        steps = 0
        for batch in batches:
            optimizer.zero_grad(set_to_none=True)
            self.loss(batch).backward()
            optimizer.step()
            steps += 1
        return steps

    # -- data -----------------------------------------------------------------------------------
    def domain_batches(self, domain: int, rng: torch.Generator, steps: int | None = None) -> Iterator[Batch]:
        """A full shuffled pass over a domain's training data, or its first ``steps`` mini-batches
        (cycling through fresh permutations when the domain is smaller than that)."""
        split = self.dataset.train[domain]

        def cycle() -> Iterator[Batch]:
            while True:
                yield from split.batches(domain, self.config.batch_size, rng)

        bs = self.config.batch_size
        source = split.batches(domain, bs, rng) if steps is None else islice(cycle(), steps)
        for batch in source:
            yield tuple(t.to(self.device) for t in batch)  # type: ignore[misc]

    def shuffled_domains(self, rng: torch.Generator) -> list[int]:
        return [self.domains[i] for i in torch.randperm(len(self.domains), generator=rng).tolist()]

    # -- the epoch and scoring --------------------------------------------------------------------
    def train_epoch(self, epoch: int, rng: torch.Generator) -> None:
        raise NotImplementedError

    def progress_rate(self, epoch: int) -> float:
        """How far one epoch moves θS relative to an Alternate epoch (1 here; DN: β). ``fit`` divides
        the patience by it, so a slow-stepping framework is not stopped for being slow."""
        return 1.0

    @torch.no_grad()
    def score(self, user: torch.Tensor, item: torch.Tensor, domain: torch.Tensor) -> torch.Tensor:
        """Logits for a mixed-domain batch, each sample with its own domain's parameters."""
        self.model.eval()
        user, item, domain = user.to(self.device), item.to(self.device), domain.to(self.device)
        if not self.params.deltas:
            return self.model(user, item, domain)
        return self.params.forward_grouped(user, item, domain)

    # -- best-state snapshots (fit keeps the best epoch) ------------------------------------------
    def snapshot(self) -> dict[str, torch.Tensor]:
        state = {f"model/{k}": v.detach().clone() for k, v in self.model.state_dict().items()}
        state.update(self.params.state())
        return state

    def restore(self, state: Mapping[str, torch.Tensor]) -> None:
        self.model.load_state_dict({k[6:]: v for k, v in state.items() if k.startswith("model/")})
        self.params.deltas.clear()
        self.params.load_state({k: v for k, v in state.items() if k.startswith("delta/")})


@contextmanager
def only_trainable(params: DomainParameters) -> Iterator[list[nn.Parameter]]:
    """Temporarily freeze every parameter that has no per-domain delta (θS stays fixed in DR and in
    the finetune, and frozen tables cost no gradient)."""
    specific = set(params.specific_names)
    frozen = [p for n, p in params.shared().items() if n not in specific]
    for p in frozen:
        p.requires_grad_(False)
    try:
        yield list(params.shared_specific().values())
    finally:
        for p in frozen:
            p.requires_grad_(True)
