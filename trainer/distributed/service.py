"""The distributed trainer service: rank 0 coordinates, ranks 1..W-1 follow.

Rank 0 is the ordinary ``ContinualTrainer``: it keeps the id vocabularies, scores prequentially,
dead-letters, publishes and commits offsets. The stream is spread: rank r consumes the partitions
p % W == r and ranks > 0 forward their records to rank 0 between rounds (``ingest``), because row
numbers of new users/items/domains must be assigned once for all replicas, the prequential score
needs the live model before training, and a round needs one consistent set of offsets to publish.
At each round rank 0 posts ``round`` on the store, broadcasts the round plan and takes part as
rank 0; the other ranks train their share and go back to consuming.

Failure: any rank dying breaks the round's collectives; rank 0 then raises before publishing, so
nothing of that round is published nor committed, and the process exits non-zero. A restart
resumes from the live version's checkpoint and manifest offsets (``ContinualTrainer.start``).
"""

from __future__ import annotations

import logging
import time
from typing import TYPE_CHECKING, Any

import torch

from feature_store.base import EmbeddingStore
from stream.base import Stream
from trainer.data.base import Split
from trainer.distributed import comm, ingest
from trainer.distributed.cache import FLOAT_BYTES, CacheCounters
from trainer.distributed.ingest import MergedConsumer
from trainer.distributed.plan import TABLES, RoundPlan, build_plan
from trainer.distributed.round import run

if TYPE_CHECKING:
    from trainer.service.loop import ContinualTrainer

log = logging.getLogger("mamdr.trainer.distributed")


class Coordinator:
    """Rank 0's side, attached to a ``ContinualTrainer`` as ``trainer.distributed``."""

    def __init__(self, world_size: int, store: EmbeddingStore, registry: Any = None) -> None:
        self.world = world_size
        self.store = store
        self.messages = 0
        self.last: CacheCounters | None = None
        self.n_published: dict[str, int] | None = None
        self.gauges = None
        self.consumer: MergedConsumer | None = None
        if registry is not None:
            from prometheus_client import Gauge

            self.gauges = Gauge("mamdr_trainer_dist_round_bytes", "Bytes moved in the last distributed round, "
                                "summed over ranks", ["kind"], registry=registry)

    def open_consumer(self, stream: Stream, group: str | None, offsets: dict[str, int]) -> MergedConsumer:
        """Rank 0's partitions plus the workers' forwarded ones; tells the workers where to start."""
        self.consumer = MergedConsumer(stream, group, comm.store(), self.world, offsets)
        return self.consumer

    def _published_counts(self, trainer: ContinualTrainer) -> dict[str, int]:
        if self.n_published is None:  # (re)start: the live version holds the checkpoint's vocabularies
            state = trainer.state
            assert state is not None
            live = trainer.live_version is not None
            self.n_published = {"user": len(state.users) if live else 0, "item": len(state.items) if live else 0}
        return self.n_published

    def train_round(self, trainer: ContinualTrainer, train: dict[int, Split], targets: list[int],
                    order: list[int]) -> list[int]:
        """Called from ``ContinualTrainer._train`` on rank 0 instead of the single-process round."""
        state = trainer.state
        assert state is not None
        cfg = trainer.cfg
        knobs = {"beta": cfg.beta, "gamma": cfg.gamma, "k": cfg.dr_k, "inner_batches": cfg.inner_batches,
                 "batch_size": cfg.batch_size, "lr": cfg.lr}
        plan = build_plan(state, train, targets, order, round_no=trainer.round_no, seed=cfg.seed, knobs=knobs,
                          fs_version=trainer.live_version, n_published=self._published_counts(trainer))
        t0 = time.monotonic()
        comm.post(self.messages, "round")
        self.messages += 1
        tensors, meta = comm.broadcast_tensors(plan.tensors, plan.meta)
        counters = CacheCounters(plan_bytes=plan.nbytes() * (self.world - 1))
        worker = run(RoundPlan(meta, tensors), 0, self.world, self.store, comm.all_reduce_sum, comm.gather_to_root,
                     counters)
        self._write_back(trainer, worker, counters)
        totals = CacheCounters.from_tensor(comm.all_reduce_sum([counters.as_tensor()])[0])
        self.last = totals
        self.n_published = {"user": len(state.users), "item": len(state.items)}  # what _publish will write
        if self.gauges is not None:
            for kind, value in totals.to_json().items():
                self.gauges.labels(kind=kind).set(value)
        log.info("distributed round %d on %d ranks: %.2fs train, %s", trainer.round_no, self.world,
                 time.monotonic() - t0, totals.to_json())
        return targets

    @torch.no_grad()
    def _write_back(self, trainer: ContinualTrainer, worker: Any, counters: CacheCounters) -> None:
        """Rank 0 makes its state equal to the replicas': dense θS, touched rows (as deltas), θi."""
        state = trainer.state
        assert state is not None
        target = dict(state.model.named_parameters())
        buffers = dict(state.model.named_buffers())
        skip = set(TABLES.values())
        for name, value in worker.model.named_parameters():
            if name not in skip:
                target[name].copy_(value)
        for name, value in worker.model.named_buffers():
            buffers[name].copy_(value)
        for kind, (rows, delta) in worker.embedding_deltas().items():
            target[TABLES[kind]][torch.from_numpy(rows)] += delta
            counters.written_rows += len(rows)
            counters.written_bytes += delta.numel() * FLOAT_BYTES
        for slot in worker.plan.targets:
            state.params.set_delta(slot, worker.params.delta(slot))

    def close(self, ok: bool) -> None:
        """Tell the workers to exit (0 after a clean stop, non-zero after a failed round)."""
        try:
            comm.post(self.messages, "stop" if ok else "abort")
            if ok:  # the store may live in this process: let every worker read "stop" before it goes
                torch.distributed.barrier()
        except Exception as exc:
            log.warning("could not tell the workers to stop: %s", exc)


def worker_loop(store: EmbeddingStore, rank: int, world: int, max_idle_s: float | None = None,
                stream: Stream | None = None) -> int:
    """Ranks 1..W-1: consume this rank's partitions and forward them to rank 0; when a round is posted,
    train its shard and domains; repeat until ``stop``."""
    forwarder = ingest.RecordForwarder(stream, comm.store(), rank, world) if stream is not None else None
    n = 0
    try:
        while True:
            word = comm.wait_message(n, max_idle_s, idle=forwarder.pump if forwarder is not None else None)
            if word == "stop":
                log.info("rank %d: coordinator stopped after %d rounds (%d records forwarded)", rank, n,
                         forwarder.records if forwarder is not None else 0)
                torch.distributed.barrier()
                return 0
            if word != "round":
                log.error("rank %d: coordinator sent %r; exiting", rank, word)
                return 1
            tensors, meta = comm.broadcast_tensors(None, None)
            counters = CacheCounters()
            run(RoundPlan(meta, tensors), rank, world, store, comm.all_reduce_sum, comm.gather_to_root, counters)
            comm.all_reduce_sum([counters.as_tensor()])
            n += 1
    finally:
        if forwarder is not None:
            forwarder.close()
