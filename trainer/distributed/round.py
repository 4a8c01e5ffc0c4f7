"""One data-parallel MAMDR round on one rank, in phases between which the ranks communicate.

DN (data parallel): every rank runs DN's inner loop over the same domain order on its own shard of
each domain's rows (a shared permutation, rank r takes positions r, r+W, ...; K mini-batches of
⌈batch/W⌉ rows, so a global step still sees ``batch_size`` rows), from the same Θ. The outer
deltas Θ̃_r − Θ (dense θS and the touched embedding rows) are summed with ONE all-reduce and every
rank sets Θ ← Θ + β·(1/W)·Σ_r(Θ̃_r − Θ), so all replicas stay identical (local SGD / the paper's
PS workers pushing deltas once per outer step).

DR (partitioned by domain): target i (the k-th of the sorted targets) is owned by rank k mod W,
which runs Algorithm 2 for it on the whole round's data with a fresh inner optimizer and a
generator seeded by (seed, round, i), so θi does not depend on which rank owns it or on W. The θi
go to rank 0 only (a gather: each θi crosses the wire once; the other replicas are discarded after
the round, so they need none), ⌈T/W⌉ slots per rank since gloo's gather wants equal sizes.

``simulate`` runs the same schedule for W ranks in one process (the test's reference).
"""

from __future__ import annotations

import dataclasses
import math
import time
from collections.abc import Callable, Iterator

import numpy as np
import torch
from torch._utils import _flatten_dense_tensors, _unflatten_dense_tensors

from contracts.errors import ConfigError
from feature_store.base import EmbeddingStore
from trainer.data.base import MultiDomainDataset, Split
from trainer.distributed.cache import FLOAT_BYTES, CacheCounters, StaticCache
from trainer.distributed.plan import TABLES, RoundPlan
from trainer.frameworks.base import Batch
from trainer.frameworks.config import FrameworkConfig
from trainer.frameworks.dr import MAMDR
from trainer.models import ModelConfig, build_model
from trainer.params import DomainParameters
from trainer.service.failpoints import failpoint

Reduce = Callable[[list[torch.Tensor]], list[torch.Tensor]]
Gather = Callable[[torch.Tensor], "list[torch.Tensor] | None"]  # every rank's tensor on rank 0, else None


def _seed(*parts: int) -> int:
    """A stable 63-bit seed from integers (no Python hash randomisation)."""
    value = 1469598103934665603
    for p in parts:
        value = ((value ^ (int(p) & 0xFFFFFFFFFFFF)) * 1099511628211) % (1 << 63)
    return value


def shard_batches(split: Split, domain: int, rank: int, world: int, steps: int, batch_size: int,
                  seed: int, round_no: int) -> Iterator[Batch]:
    """Rank ``rank``'s K mini-batches of one domain: a permutation shared by all ranks picks its
    shard, then batches of ⌈batch_size/W⌉ rows cycle over fresh permutations of the shard."""
    n = len(split)
    perm = torch.randperm(n, generator=torch.Generator().manual_seed(_seed(seed, round_no, domain)))
    mine = perm[rank::world]
    if mine.numel() == 0:
        return
    gen = torch.Generator().manual_seed(_seed(seed, round_no, domain, rank + 1))
    size = max(1, math.ceil(batch_size / world))
    user, item, label = (torch.from_numpy(split.user), torch.from_numpy(split.item), torch.from_numpy(split.label))
    emitted = 0
    while emitted < steps:
        order = mine[torch.randperm(mine.numel(), generator=gen)]
        for start in range(0, order.numel(), size):
            idx = order[start:start + size]
            yield user[idx], item[idx], torch.full((idx.numel(),), domain, dtype=torch.long), label[idx]
            emitted += 1
            if emitted == steps:
                return


class RoundWorker:
    """One rank's replica for one round: a compact model whose user/item tables are the caches."""

    def __init__(self, plan: RoundPlan, rank: int, world: int, store: EmbeddingStore | None,
                 counters: CacheCounters | None = None) -> None:
        self.plan, self.rank, self.world = plan, rank, world
        self.counters = counters or CacheCounters()
        meta = plan.meta
        config = ModelConfig.from_json(meta["config"])
        dims = {"user": config.udim, "item": config.idim}
        self.caches = {
            kind: StaticCache.fetch(kind, plan.tensors[f"touched/{kind}"].numpy(), meta["ids"][kind],
                                    meta["n_published"][kind], plan.tensors[f"new/{kind}"], store,
                                    meta["fs_version"], dims[kind], self.counters)
            for kind in TABLES
        }
        compact = dataclasses.replace(config, n_users=max(1, len(self.caches["user"].rows)),
                                      n_items=max(1, len(self.caches["item"].rows)))
        self.model = build_model(meta["model"], compact)
        missing = self.model.load_state_dict(plan.dense(), strict=False).missing_keys
        if sorted(missing) != sorted(TABLES.values()):
            raise ConfigError(f"round plan does not match the model: missing {missing}")
        with torch.no_grad():
            for kind, table in TABLES.items():
                rows = self.caches[kind].values
                dict(self.model.named_parameters())[table][: rows.shape[0]].copy_(rows)
        self.params = DomainParameters(self.model, meta["specific"])
        for slot, delta in plan.deltas().items():
            self.params.set_delta(slot, delta)
        train = {s: self._local(plan.split(s)) for s in meta["domains"]}
        dataset = MultiDomainDataset(name="round", domains=[str(i) for i in range(config.n_domains)],
                                     user_ids=[], item_ids=[], train=train, val={}, test={})
        fcfg = FrameworkConfig(inner="adam", inner_lr=meta["lr"], inner_steps=meta["inner_batches"],
                               dr_steps=meta["inner_batches"], beta=meta["beta"], gamma=meta["gamma"],
                               k=meta["k"], batch_size=meta["batch_size"], seed=meta["seed"])
        self.fw = MAMDR(self.model, dataset, fcfg, params=self.params)
        self.fw.domains = list(meta["domains"])
        self.shared = list(self.params.shared().values())
        self.start = [p.detach().clone() for p in self.shared]
        self.seconds: dict[str, float] = {}  # wall time per phase (set by ``run``)

    def _local(self, split: Split) -> Split:
        return Split(user=self.caches["user"].local(split.user), item=self.caches["item"].local(split.item),
                     label=split.label)

    # -- DN -------------------------------------------------------------------------------------------
    def dn_local(self) -> list[torch.Tensor]:
        """Run this rank's inner loop; returns Θ̃_r − Θ for every θS tensor (tables = touched rows)."""
        meta = self.plan.meta
        torch.manual_seed(_seed(meta["seed"], meta["round"], self.rank, 11))  # dropout draws
        optimizer = torch.optim.Adam(self.shared, lr=meta["lr"])
        for d in self.plan.order:
            batches = shard_batches(self.fw.dataset.train[d], d, self.rank, self.world, meta["inner_batches"],
                                    meta["batch_size"], meta["seed"], meta["round"])
            self.fw.update(optimizer, self._count_uncached(batches))
        failpoint("dist_mid_round")
        deltas = [p.detach() - s for p, s in zip(self.shared, self.start, strict=True)]
        self.counters.exchange_bytes += sum(t.numel() for t in deltas) * FLOAT_BYTES
        return deltas

    def _count_uncached(self, batches: Iterator[Batch]) -> Iterator[Batch]:
        dims = {"user": self.model.config.udim, "item": self.model.config.idim}
        tables = set(TABLES.values())
        dense = sum(p.numel() for n, p in self.params.shared().items() if n not in tables)
        for batch in batches:
            rows = torch.unique(batch[0]).numel() * dims["user"] + torch.unique(batch[1]).numel() * dims["item"]
            self.counters.uncached_bytes += 2 * (rows + dense) * FLOAT_BYTES  # pull before, push after each step
            yield batch

    @torch.no_grad()
    def dn_apply(self, summed: list[torch.Tensor]) -> None:
        """Θ ← Θ + β·(1/W)·Σ_r(Θ̃_r − Θ) on every rank."""
        live = [p.detach() for p in self.shared]
        torch._foreach_copy_(live, self.start)
        torch._foreach_add_(live, summed, alpha=self.plan.meta["beta"] / self.world)

    # -- DR -------------------------------------------------------------------------------------------
    def owned(self, rank: int | None = None) -> list[int]:
        r = self.rank if rank is None else rank
        return [t for i, t in enumerate(self.plan.targets) if i % self.world == r]

    def _delta_numel(self) -> int:
        return sum(self.params.delta_shape(n).numel() for n in self.params.specific_names)

    def dr_local(self) -> torch.Tensor:
        """Run DR for this rank's targets; their θi flattened into ⌈T/W⌉ equal slots (zeros pad)."""
        meta = self.plan.meta
        names = self.params.specific_names
        slots = -(-len(self.plan.targets) // self.world)
        out = torch.zeros(slots, self._delta_numel())
        for k, target in enumerate(self.owned()):
            self.fw._dr_opt = None  # a fresh inner optimizer per target: θi independent of ownership
            torch.manual_seed(_seed(meta["seed"], meta["round"], target, 13))
            self.fw.dr_round(target, torch.Generator().manual_seed(_seed(meta["seed"], meta["round"], target, 7)))
            delta = self.params.delta(target)
            out[k] = _flatten_dense_tensors([delta[n].reshape(-1) for n in names])
        self.counters.exchange_bytes += out.numel() * FLOAT_BYTES  # sent to rank 0 (its own: local)
        return out

    def dr_apply(self, gathered: list[torch.Tensor]) -> None:
        """Rank 0: every rank's θi into this replica (rank r's k-th slot is its k-th owned target)."""
        names = self.params.specific_names
        like = [torch.empty(self.params.delta_shape(n)) for n in names]
        for rank, flat in enumerate(gathered):
            for k, target in enumerate(self.owned(rank)):
                values = _unflatten_dense_tensors(flat[k], like)
                self.params.set_delta(target, dict(zip(names, values, strict=True)))

    # -- results --------------------------------------------------------------------------------------
    def embedding_deltas(self) -> dict[str, tuple[np.ndarray, torch.Tensor]]:
        """(global rows, dynamic − static) per table: the once-per-round write-back."""
        named = dict(self.model.named_parameters())
        out = {}
        for kind, table in TABLES.items():
            cache = self.caches[kind]
            out[kind] = (cache.rows, cache.delta(named[table][: len(cache.rows)]))
        return out


def run(plan: RoundPlan, rank: int, world: int, store: EmbeddingStore | None, reduce: Reduce, gather: Gather,
        counters: CacheCounters | None = None) -> RoundWorker:
    """The whole round on one rank; ``reduce`` sums a tensor list over ranks (one collective),
    ``gather`` brings one tensor per rank to rank 0. Only rank 0's worker holds every θi afterwards."""
    t0 = time.perf_counter()
    worker = RoundWorker(plan, rank, world, store, counters)
    t1 = time.perf_counter()
    local = worker.dn_local()
    t2 = time.perf_counter()
    worker.dn_apply(reduce(local))
    t3 = time.perf_counter()
    if plan.targets:
        gathered = gather(worker.dr_local())
        t4 = time.perf_counter()
        if gathered is not None:
            worker.dr_apply(gathered)
    else:
        t4 = t3
    worker.seconds = {"setup": t1 - t0, "dn": t2 - t1, "dn_reduce": t3 - t2, "dr": t4 - t3,
                      "dr_reduce": time.perf_counter() - t4}
    return worker


def simulate(plan: RoundPlan, world: int, store: EmbeddingStore | None) -> RoundWorker:
    """The same schedule for ``world`` ranks, one after another in this process (the reference)."""
    workers = [RoundWorker(plan, r, world, store) for r in range(world)]

    def total(parts: list[list[torch.Tensor]]) -> list[torch.Tensor]:
        return [torch.stack(ts).sum(0) for ts in zip(*parts, strict=True)]

    summed = total([w.dn_local() for w in workers])
    for w in workers:
        w.dn_apply(summed)
    if plan.targets:
        workers[0].dr_apply([w.dr_local() for w in workers])
    return workers[0]
