"""Every rank is a full continual trainer on its own partitions; only parameters, deltas, offsets (and the
ids first seen in a round) cross ranks.

Rank r consumes the partitions p with p % W == r, validates, dead-letters, scores prequentially and
buffers its own clicks with its own replica of the model. The ranks stay in lockstep through one small
all-reduce per poll (pending events, "my share is full", idle, stop), so they enter a round together:

1. **Vocabulary.** Each rank's ids first seen since the last round (users, items, domains; strings,
   deduplicated) are all-gathered and added in rank order on every rank, so a row number means the same id
   on every replica; the rows (and, when the model grew, the dense parameters) they got are broadcast from
   rank 0, so new rows start equal everywhere. Until then a new id is scored with the cold-start vector.
2. **Local training.** The single-process round (DN over the rank's fresh + replay rows, then DR for the
   domains it saw) runs on each rank's own rows.
3. **One reconciliation.** Dense θS: Θ ← Θ0 + mean over the ranks that trained of (Θ_r − Θ0) (local SGD);
   table rows: the union of the rows the ranks touched, each row averaged over the ranks that touched it
   (a row one rank touched keeps that rank's update); θi of a domain: averaged over the ranks that trained it.
   Every rank applies the same summed buffers, so the replicas stay bit-identical.
4. **Publish.** Every rank flushes its dead letters, event counts are summed and every partition's next
   offset is reduced with MAX (each rank owns its partitions); rank 0 publishes one version with all of them
   in the manifest, commits them, and posts the outcome on the rendezvous store. A rank that dies breaks the
   next collective: nothing of that round is published, and a restart of every rank resumes from the live
   manifest's offsets. The version is incremental as in one process: its feature-store rows and checkpoint
   hold the rows changed since its parent, which here are the union of 3.'s touched rows (gathered on every
   rank anyway) and the vocabulary's changes (equal on every rank after 1.).
"""

from __future__ import annotations

import hashlib
import json
import logging
import secrets
import time
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
import torch.distributed as dist
from torch._utils import _flatten_dense_tensors, _unflatten_dense_tensors

from contracts.errors import BackendUnavailable, ConfigError
from stream.base import Stream, StreamConsumer, split_tp_key
from trainer.data.base import Split
from trainer.distributed import comm
from trainer.distributed.comm import DistEnv
from trainer.service.failpoints import failpoint

if TYPE_CHECKING:
    from trainer.service.loop import ContinualTrainer, RoundReport
    from trainer.service.state import ModelState

log = logging.getLogger("mamdr.trainer.distributed")
TABLES = {"user": "user_embedding.weight", "item": "item_embedding.weight"}
FLOAT_BYTES = 4
PUBLISHED_KEY = "mamdr/published/{}/{}"  # run nonce, round -> the version rank 0 published, or "failed"


def all_gather_bytes(payload: bytes) -> list[bytes]:
    """Every rank's bytes, in rank order (gloo's all_gather wants equal sizes: pad to the largest)."""
    world = dist.get_world_size()
    size = torch.tensor([len(payload)], dtype=torch.int64)
    sizes = [torch.zeros(1, dtype=torch.int64) for _ in range(world)]
    dist.all_gather(sizes, size)
    longest = max(int(s.item()) for s in sizes)
    buf = torch.zeros(max(longest, 1), dtype=torch.uint8)
    if payload:
        buf[: len(payload)] = torch.frombuffer(bytearray(payload), dtype=torch.uint8)
    parts = [torch.empty_like(buf) for _ in range(world)]
    dist.all_gather(parts, buf)
    return [bytes(p[: int(s.item())].numpy()) for p, s in zip(parts, sizes, strict=True)]


def all_gather_rows(rows: np.ndarray) -> np.ndarray:
    """The sorted union of every rank's int64 rows."""
    world = dist.get_world_size()
    sizes = [torch.zeros(1, dtype=torch.int64) for _ in range(world)]
    dist.all_gather(sizes, torch.tensor([len(rows)], dtype=torch.int64))
    longest = max(int(s.item()) for s in sizes)
    buf = torch.full((max(longest, 1),), -1, dtype=torch.int64)
    buf[: len(rows)] = torch.from_numpy(rows.astype(np.int64))
    parts = [torch.empty_like(buf) for _ in range(world)]
    dist.all_gather(parts, buf)
    every = torch.cat(parts).numpy()
    return np.unique(every[every >= 0])


def state_digest(state: ModelState) -> str:
    """A hash of a trainer's model: dense θS, the rows ids own, every θi (a loaded checkpoint hashes the same)."""
    h = hashlib.sha256()
    lengths = {TABLES["user"]: len(state.users), TABLES["item"]: len(state.items)}
    for name, p in sorted(state.model.named_parameters()):
        h.update(name.encode())
        h.update(p.detach()[: lengths.get(name, p.shape[0])].contiguous().numpy().tobytes())
    for slot, delta in sorted(state.params.deltas.items()):  # (reading, not creating, the θi)
        h.update(str(slot).encode())
        for _name, value in sorted(delta.items()):
            h.update(value.detach().contiguous().numpy().tobytes())
    return h.hexdigest()[:16]


def broadcast_from_root(tensors: list[torch.Tensor]) -> int:
    """Make ``tensors`` equal rank 0's (one broadcast per dtype); returns the bytes moved."""
    moved = 0
    for dtype in sorted({t.dtype for t in tensors}, key=str):
        group = [t for t in tensors if t.dtype == dtype]
        flat = _flatten_dense_tensors(group)
        dist.broadcast(flat, 0)
        for t, v in zip(group, _unflatten_dense_tensors(flat, group), strict=True):
            t.copy_(v)
        moved += flat.numel() * flat.element_size()
    return moved


class Replica:
    """One rank's part in a distributed lineage, attached to its ContinualTrainer as ``trainer.distributed``."""

    def __init__(self, env: DistEnv, registry: Any = None) -> None:
        self.rank, self.world = env.rank, env.world_size
        self.partitions: list[str] = []  # every partition of the topic, by number
        self.start_offsets: dict[str, int] = {}
        self.nonce = 0
        self.bytes: dict[str, int] = {}
        self._decisions: dict[str, dict[str, float | bool]] = {}
        self._staged: list[tuple[str, list[str], list[str], np.ndarray]] = []
        self._synced_once = False
        self.gauges = None
        if registry is not None:
            from prometheus_client import Gauge

            self.gauges = Gauge("mamdr_trainer_dist_round_bytes", "Bytes this rank sent into collectives in the "
                                "last distributed round", ["kind"], registry=registry)

    @property
    def is_root(self) -> bool:
        return self.rank == 0

    # -- start -------------------------------------------------------------------------------------
    def open_consumer(self, trainer: ContinualTrainer, stream: Stream, group: str | None,
                      offsets: dict[str, int]) -> StreamConsumer:
        """This rank's partitions, from where rank 0 says every partition starts (the live manifest's offsets,
        else the group's committed ones, else the beginning); checks the replicas loaded the same state."""
        consumer = stream.consumer(group if self.is_root else None, shard=(self.rank, self.world))
        self.partitions = sorted(consumer.end_offsets(), key=lambda k: split_tp_key(k)[1])
        if self.is_root:
            committed = consumer.committed()
            start = [offsets.get(k, committed.get(k, 0)) for k in self.partitions]
        else:
            start = [0] * len(self.partitions)
        # plus a nonce naming this run's keys on the store (a launcher's store may outlive a failed run)
        t = torch.tensor([*start, secrets.randbits(62)], dtype=torch.int64)
        dist.broadcast(t, 0)
        *begin, self.nonce = (int(v) for v in t.tolist())
        self.start_offsets = dict(zip(self.partitions, begin, strict=True))
        consumer.seek({k: v for k, v in self.start_offsets.items() if split_tp_key(k)[1] % self.world == self.rank})
        log.info("rank %d consumes %s (world %d)", self.rank, sorted(consumer.position()), self.world)
        self._check_same_state(trainer)
        return consumer

    def _check_same_state(self, trainer: ContinualTrainer) -> None:
        state = trainer.state
        assert state is not None
        live = int(trainer.live_version[1:]) if trainer.live_version else 0
        mine = torch.tensor([live, trainer.round_no, len(state.users), len(state.items), len(state.domains),
                             len(self.partitions)], dtype=torch.int64)
        lo, hi = mine.clone(), mine.clone()
        dist.all_reduce(lo, op=dist.ReduceOp.MIN)
        dist.all_reduce(hi, op=dist.ReduceOp.MAX)
        if not torch.equal(lo, hi):
            raise ConfigError(f"the ranks did not load the same lineage (version, round, users, items, domains, "
                              f"partitions from {lo.tolist()} to {hi.tolist()}): every rank must see the same "
                              "registry, artifacts and stream")

    # -- ingest (ContinualTrainer.ingest calls stage instead of giving rows) ---------------------------------
    def stage(self, domain: str, users: list[str], items: list[str], labels: np.ndarray) -> None:
        """Hold a domain's valid clicks until the round's vocabulary sync gives their ids rows."""
        self._staged.append((domain, users, items, labels))

    # -- the loop ----------------------------------------------------------------------------------
    def run(self, trainer: ContinualTrainer, max_rounds: int | None, idle_exit_s: float | None) -> list[RoundReport]:
        """Poll this rank's partitions; every rank enters a round when the ranks together hold the round's
        events (``round_events``; the room left is split over the ranks at every poll, so a busy stream gives
        rounds of exactly that many), ``round_seconds`` passed, or every rank is idle."""
        assert trainer.consumer is not None
        reports: list[RoundReport] = []
        last_event = time.monotonic()
        cfg = trainer.cfg
        total = ticks = 0
        while True:
            trainer.heartbeat.beat()
            room = self._room(trainer.round_budget() - total, ticks)
            records = []
            t_poll = time.perf_counter()
            if room > 0 and not trainer.stop_event.is_set():
                records = trainer.consumer.poll(max_records=min(trainer.settings.stream.max_poll_records, room),
                                                timeout_s=0.2)
            now = time.monotonic()
            if records or room <= 0:  # not polling for want of room is not idleness
                last_event = now
            if records:
                trainer.ingest(records)
                trainer.ingested += len(records)
                trainer.ingest_seconds += time.perf_counter() - t_poll
            idle = idle_exit_s is not None and now - last_event > idle_exit_s
            flags = torch.tensor([len(records), idle, trainer.stop_event.is_set(),
                                  bool(trainer._pending) and now - trainer._round_started >= cfg.round_seconds],
                                 dtype=torch.int64)
            dist.all_reduce(flags)
            got, idles, stops, due = (int(v) for v in flags.tolist())
            total += got
            ticks += 1
            if stops:
                break
            if total and (due or total >= trainer.round_budget() or idles == self.world):
                reports.append(trainer.run_round())
                total = 0
                # the ``sample`` policy's catch-up follows each rank's own lag: the ranks must agree on the budget
                catch_up = torch.tensor([trainer._catch_up], dtype=torch.int64)
                dist.all_reduce(catch_up, op=dist.ReduceOp.MAX)
                trainer._catch_up = int(catch_up.item())
                if max_rounds is not None and len(reports) >= max_rounds:
                    break
                continue
            if idles == self.world:
                break
        dist.barrier()
        trainer.log_ingest()
        assert trainer.state is not None  # what the replicas must agree on: equal on every rank
        log.info("rank %d replica sha256 %s after %d rounds", self.rank, state_digest(trainer.state), len(reports))
        return reports

    def _room(self, remaining: int, tick: int) -> int:
        """This rank's part of the round's remaining room; parts sum to ``remaining``, and the odd ones rotate
        so a rank whose partitions are empty cannot hold the last events back."""
        if remaining <= 0:
            return 0
        base, extra = divmod(remaining, self.world)
        return base + (1 if (self.rank - tick) % self.world < extra else 0)

    # -- the round ---------------------------------------------------------------------------------
    def before_round(self, trainer: ContinualTrainer) -> None:
        """Vocabulary sync: every rank's new ids get the same rows everywhere; then the staged clicks are
        buffered with those rows."""
        state = trainer.state
        assert state is not None
        new: list[dict[str, None]] = [{}, {}, {}]
        for domain, users, items, _ in self._staged:
            if state.domains.get(domain) is None:
                new[2][domain] = None
            for ids, vocab, out in ((users, state.users, new[0]), (items, state.items, new[1])):
                rows = vocab.rows(ids, add=False)
                out.update(dict.fromkeys(i for i, r in zip(ids, rows, strict=True) if r < 0))
        payload = json.dumps([list(n) for n in new], separators=(",", ":")).encode()
        gathered = [json.loads(p) for p in all_gather_bytes(payload)]
        self.bytes = {"vocab": len(payload)}
        users = list(dict.fromkeys(u for g in gathered for u in g[0]))
        items = list(dict.fromkeys(i for g in gathered for i in g[1]))
        domains = list(dict.fromkeys(d for g in gathered for d in g[2]))
        before = {"user": len(state.users), "item": len(state.items)}
        grew = state.ensure(users, items, domains, round_no=trainer.round_no + 1, now=time.time()) \
            if users or items or domains else False
        if users or items or domains or not self._synced_once:  # new rows (and a grown model) equal rank 0's
            with torch.no_grad():
                named = dict(state.model.named_parameters())
                tensors = [p.data for n, p in named.items() if n not in TABLES.values()]
                tensors += [b for _, b in state.model.named_buffers()]
                for kind, name in TABLES.items():
                    n_now = len(state.users if kind == "user" else state.items)
                    lo = 0 if not self._synced_once else before[kind]
                    if n_now > lo:
                        tensors.append(named[name].data[lo:n_now])
                self.bytes["broadcast"] = broadcast_from_root(tensors)
            self._synced_once = True
        if grew:
            trainer._rebuild_framework()
        for domain, users_, items_, labels in self._staged:
            slot = state.domains.get(domain)
            assert slot is not None
            urows, irows = state.users.rows(users_, add=False), state.items.rows(items_, add=False)
            own = (urows >= 0) & (irows >= 0)
            trainer.buffers.add(slot, urows[own], irows[own], labels[own])
        self._staged = []

    def train(self, trainer: ContinualTrainer, train: dict[int, Split], local: Any) -> list[int]:
        """Run ``local()`` (the single-process round on this rank's rows), then reconcile the replicas."""
        state = trainer.state
        assert state is not None
        named = dict(state.model.named_parameters())
        dense = {n: p for n, p in named.items() if n not in TABLES.values() and p.requires_grad}
        start = [p.detach().clone() for p in dense.values()]
        touched = {"user": np.unique(np.concatenate([s.user for s in train.values()])) if train else
                   np.zeros(0, np.int64),
                   "item": np.unique(np.concatenate([s.item for s in train.values()])) if train else
                   np.zeros(0, np.int64)}
        before = {k: named[TABLES[k]].detach()[torch.from_numpy(r.astype(np.int64))].clone()
                  for k, r in touched.items()}
        targets: list[int] = local() if train else []
        failpoint("dist_mid_round")
        with torch.no_grad():
            # dense θS: mean over the ranks that trained of their change (one all-reduce)
            deltas = [p.detach() - s for p, s in zip(dense.values(), start, strict=True)]
            flat = _flatten_dense_tensors([*deltas, torch.tensor([1.0 if train else 0.0])])
            dist.all_reduce(flat)
            trained = float(flat[-1])
            self.bytes["dense"] = flat.numel() * FLOAT_BYTES
            if trained:
                summed = _unflatten_dense_tensors(flat[:-1], deltas)
                for p, s, d in zip(dense.values(), start, summed, strict=True):
                    p.copy_(s + d / trained)
            # table rows: the union of the touched rows, each averaged over the ranks that touched it
            for kind, name in TABLES.items():
                union = all_gather_rows(touched[kind])
                trainer._trained_rows[kind].append(union)  # what rank 0's incremental version writes
                if not len(union):
                    continue
                table = named[name].data
                idx = torch.from_numpy(union)
                current = table[idx]
                start_rows = current.clone()
                pos = torch.from_numpy(np.searchsorted(union, touched[kind]).astype(np.int64))
                start_rows[pos] = before[kind]
                buf = torch.cat([current - start_rows, torch.zeros(len(union), 1)], dim=1)
                buf[pos, -1] = 1.0
                dist.all_reduce(buf)
                self.bytes[f"{kind}_rows"] = buf.numel() * FLOAT_BYTES
                table[idx] = start_rows + buf[:, :-1] / buf[:, -1:].clamp(min=1.0)
            targets = self._reconcile_deltas(trainer, targets)
        if self.gauges is not None:
            for kind, value in self.bytes.items():
                self.gauges.labels(kind=kind).set(value)
        return targets

    def _reconcile_deltas(self, trainer: ContinualTrainer, targets: list[int]) -> list[int]:
        """θi of every domain some rank trained: the mean over those ranks (one count + one value all-reduce)."""
        state = trainer.state
        assert state is not None
        params = state.params
        names = params.specific_names
        if trainer.cfg.framework != "mamdr" or not names:
            counts = torch.zeros(len(state.domains))
            counts[targets] = 1.0
            dist.all_reduce(counts)
            return [int(s) for s in torch.nonzero(counts).flatten().tolist()]
        counts = torch.zeros(len(state.domains))
        counts[targets] = 1.0
        dist.all_reduce(counts)
        union = [int(s) for s in torch.nonzero(counts).flatten().tolist()]
        if not union:
            return []
        like = [torch.empty(params.delta_shape(n)) for n in names]
        numel = sum(t.numel() for t in like)
        buf = torch.zeros(len(union), numel)
        mine = set(targets)
        for k, slot in enumerate(union):
            if slot in mine:
                delta = params.delta(slot)
                buf[k] = _flatten_dense_tensors([delta[n].reshape(-1) for n in names])
        dist.all_reduce(buf)
        self.bytes["deltas"] = buf.numel() * FLOAT_BYTES
        for k, slot in enumerate(union):
            values = _unflatten_dense_tensors(buf[k] / counts[slot], like)
            params.set_delta(slot, dict(zip(names, values, strict=True)))
        return union

    # -- publish -----------------------------------------------------------------------------------
    def decide(self, trainer: ContinualTrainer) -> dict[str, dict[str, float | bool]]:
        """Graduation decided for every domain from the ranks that scored it (synced in ``publish``)."""
        return self._decisions

    def _sync_graduation(self, trainer: ContinualTrainer) -> None:
        state = trainer.state
        assert state is not None
        local = trainer.graduation.decide() if trainer.cfg.framework == "mamdr" else {}
        ids = state.domains.ids
        votes = torch.zeros(2, len(ids))
        for slot, d in enumerate(ids):
            if d in local:
                votes[0, slot] = 1.0
                votes[1, slot] = 1.0 if local[d]["graduated"] else 0.0
        dist.all_reduce(votes)
        graduated = {d for slot, d in enumerate(ids) if votes[0, slot] > 0 and votes[1, slot] == votes[0, slot]}
        trainer.graduation.graduated = set(graduated)  # every replica scores as serving will
        self._decisions = {d: {**local.get(d, {}), "graduated": d in graduated} for slot, d in enumerate(ids)
                           if d is not None and votes[0, slot] > 0}

    def publish(self, trainer: ContinualTrainer, trained: list[int], t0: float) -> RoundReport:
        """Sum the counts, reduce every partition's offset, and let rank 0 publish and commit them all."""
        from trainer.service.loop import RoundReport

        # this rank's dead letters are durable before the collective below, so before rank 0 commits any offset
        trainer.stream.flush_dead_letters()
        mine = {"events": len(trainer._pending), "valid": trainer._round_valid, "rejected": trainer._round_rejected}
        counts = torch.tensor([mine["events"], mine["valid"], mine["rejected"]], dtype=torch.int64)
        dist.all_reduce(counts)
        offsets = torch.tensor([trainer._offsets.get(k, self.start_offsets.get(k, 0)) for k in self.partitions],
                               dtype=torch.int64)
        dist.all_reduce(offsets, op=dist.ReduceOp.MAX)
        self._sync_graduation(trainer)
        events, valid, rejected = (int(v) for v in counts.tolist())
        totals = {"events": events, "valid": valid, "rejected": rejected,
                  "offsets": dict(zip(self.partitions, (int(v) for v in offsets.tolist()), strict=True))}
        key = PUBLISHED_KEY.format(self.nonce, trainer.round_no + 1)
        kv = comm.store()
        if self.is_root:
            outcome = "failed"
            try:
                report = trainer._publish(trained, t0, totals=totals)
                outcome = report.version
            finally:
                kv.set(key, outcome)  # the workers learn the outcome either way
            return report
        # wait on the store, not in a collective: a slow publish (the exporter's first export) must not trip
        # the collective timeout; the store lives on rank 0's host, so a dead rank 0 ends the wait with an error
        while not kv.check([key]):
            time.sleep(comm.POLL_S)
        version = kv.get(key).decode()
        if version == "failed":
            raise BackendUnavailable("rank 0 failed to publish the round; nothing of it was committed: restart "
                                     "every rank to resume from the last published offsets")
        report = RoundReport(version=version, events=mine["events"], valid=mine["valid"], rejected=mine["rejected"],
                             domains_trained=[], seconds=time.monotonic() - t0)
        trainer.round_no += 1
        trainer.live_version = version
        trainer.forget_changes()  # rank 0 published: a worker's change set must not grow round after round
        trainer._pending, trainer._event_ts = [], []
        trainer._round_valid = trainer._round_rejected = 0
        return report
