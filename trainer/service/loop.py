"""The continual trainer: poll → validate → score (prequential) → buffer → round → publish → commit.

One round, every ``round_seconds`` or ``round_events`` (whichever comes first):
1. the round's events were already scored by the live model when they arrived (prequential);
2. DN over the domains in the round: one pass over every fresh row plus ``replay_ratio`` replay rows
   per fresh row (uniform over the reservoirs, so old domains are not forgotten), domains chained in
   a shuffled order and packed into mini-batches (``round_batches``); a small round makes more
   passes, up to ``min_batches`` mini-batches (a constant per round: learning per round does not
   collapse when traffic is low); DR for every domain with fresh rows (k neighbours from the round,
   plus itself), as many passes over each domain's rows, at most K mini-batches per update, all
   targets advanced together (``BatchedDR``, vmapped);
3. publish version N: trainer checkpoint, embeddings in the feature store under N, ONNX shared model
   + deltas + manifest holding the consumed offsets, registered and promoted in the registry;
   incrementally (``incremental_publish``): the feature-store version N has the live version's as
   parent and holds only the rows changed since it (trained, assigned, seen, or forgotten ids), the
   checkpoint holds only those rows too (a full one now and then), and a domain whose delta did not
   change points at its older file;
4. only then commit the offsets to the consumer group;
5. retention deletes versions beyond the kept ones (trainer/service/retention.py).
On start the trainer resumes from the live version's checkpoint and seeks to its manifest's offsets,
so a crash anywhere loses nothing and applies nothing twice to a published model. Every consumed
record, valid or dead-lettered, is counted in exactly one manifest's ``events_included``.

Overload (traffic faster than training): the consumer lag is measured after every round, exported
(``mamdr_trainer_consumer_lag_events``) and logged as a warning above ``max_lag_events``. Policy
``backpressure``: a round never polls past ``round_events``, so the lag grows in the broker and no
event is dropped. Policy ``sample``: the next round consumes the excess lag too and trains on a
uniform sample of ``round_events`` of its events; the rest are counted
(``mamdr_trainer_events_sampled_out_total``, the round report's ``sampled_out``) and logged.
"""

from __future__ import annotations

import contextlib
import json
import logging
import re
import threading
import time
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from contracts.errors import BackendUnavailable, ConfigError, Conflict, DataError, IntegrityError, NotFound
from contracts.events import is_domain_id
from contracts.settings import Settings
from domain_registry.base import Registry
from feature_store.base import EmbeddingStore
from stream.base import Record, Stream, StreamConsumer
from stream.validate import check_records
from trainer.data.base import MultiDomainDataset, Split
from trainer.export.publish import read_manifest
from trainer.feature_sync import sync_embeddings
from trainer.frameworks import precision
from trainer.frameworks.config import FrameworkConfig
from trainer.frameworks.dr import MAMDR
from trainer.frameworks.dr_batched import BatchedDR
from trainer.frameworks.sparse import carry_table_state
from trainer.models import ModelConfig
from trainer.params import resolve_specific
from trainer.service.buffers import DomainBuffers, round_batches
from trainer.service.failpoints import failpoint
from trainer.service.graduation import Graduation
from trainer.service.health import Heartbeat
from trainer.service.metrics import TrainerMetrics
from trainer.service.prequential import Prequential
from trainer.service.state import CHAIN_FILE, CHECKPOINT_DIR, META_FILE, ModelState, checkpoint_chain

log = logging.getLogger("mamdr.trainer")
VERSION_RE = re.compile(r"^v(\d{6})$")
METRIC_DOMAINS = 100


@dataclass
class RoundReport:
    version: str
    events: int
    valid: int
    rejected: int
    domains_trained: list[str]
    seconds: float
    prequential: dict[str, dict[str, float]] = field(default_factory=dict)
    trained_rows: int = 0  # rows of the round's DN pass (every fresh row once, plus replay rows)
    sampled_out: int = 0  # fresh rows not trained on (overload policy ``sample`` or a full buffer)
    lag: int = 0  # consumer lag after the round's commit


class ContinualTrainer:
    """Owns the consumer, the model state and the publish/commit protocol."""

    def __init__(self, settings: Settings, *, stream: Stream, store: EmbeddingStore, registry: Registry,
                 artifacts: Path, model: str = "mlp", model_config: dict | None = None,
                 metrics: TrainerMetrics | None = None, new_lineage: bool = False) -> None:
        self.settings = settings
        self.new_lineage = new_lineage  # start over on purpose although a live version exists
        self.cfg = settings.trainer
        self.stream = stream
        self.store = store
        self.registry = registry
        self.root = Path(artifacts)
        self.model_name = model
        self.model_config = dict(model_config or {})
        self.metrics = metrics or TrainerMetrics()
        self.stop_event = threading.Event()
        self.prequential = Prequential()
        self.buffers = DomainBuffers(self.cfg.buffer_per_domain, self.cfg.reservoir_size, self.cfg.seed)
        self.precision = precision.resolve(self.cfg.precision)  # DN's arithmetic on this CPU
        log.info("DN's pass in %s (trainer.precision=%s)", self.precision, self.cfg.precision)
        self.consumer: StreamConsumer | None = None
        self.state: ModelState | None = None
        self.framework: MAMDR | None = None
        self.live_version: str | None = None
        self.round_no = 0
        self._pending: list[Record] = []  # every record consumed since the last publish
        self._offsets: dict[str, int] = {}
        self._event_ts: list[float] = []
        self._round_valid = 0
        self._round_rejected = 0
        self._round_started = time.monotonic()
        self._known: dict[str, str] = {}
        self._counter = -1
        self._domains_read_at = float("-inf")
        self._dropped_seen = 0
        self.heartbeat = Heartbeat()  # /healthz: the loop is alive while it keeps beating
        self.graduation = Graduation(self.cfg.graduation_window, self.cfg.graduation_min_clicks,
                                     self.cfg.graduation_se, self.cfg.graduation_metric)
        self._catch_up = 0  # extra events the next round consumes (overload policy ``sample``)
        self._last_train: dict[str, int] = {}
        self.distributed: Any = None  # this rank's trainer.distributed Replica in a multi-process run
        self.ingested = 0  # events this process polled and ingested, and the seconds that took (no rounds)
        self.ingest_seconds = 0.0
        # table rows a round trained since the last publish (what an incremental version writes)
        self._trained_rows: dict[str, list[np.ndarray]] = {"user": [], "item": []}
        self.last_publish: dict[str, Any] = {}  # what the last publish wrote (rows, full or not)
        self._scored: set[str] = set()  # domains scored prequentially since the last publish
        self._gauged: dict[str, bool] = {}  # the graduation gauge's last value per domain

    # -- start / resume -----------------------------------------------------------------------------
    def start(self) -> None:
        live = self.registry.live_model()
        offsets: dict[str, int] = {}
        if live is not None and not self.new_lineage:
            check_resumable(self.root, live.id)
            self.state, meta = ModelState.load(self.root, live.id)
            offsets = dict(read_manifest(self.root / live.id).offsets)
            self.live_version = live.id
            self.round_no = int(meta.get("round", 0))
            log.info("resuming from live version %s at offsets %s", live.id, offsets)
            wanted = resolve_specific(self.state.model, self.cfg.specific)  # a pattern that names nothing: refused
            if wanted != self.state.params.specific_names:  # θi's shapes are the lineage's
                log.warning("trainer.specific=%r ignored: lineage %s keeps θi over %s (--new-lineage to change it)",
                            self.cfg.specific, live.id, ", ".join(self.state.params.specific_names) or "nothing")
        else:
            extra = {k: v for k, v in self.model_config.items() if k not in ModelConfig.__dataclass_fields__}
            base = {k: v for k, v in self.model_config.items() if k in ModelConfig.__dataclass_fields__}
            config = ModelConfig(**{"n_users": 1024, "n_items": 1024, "n_domains": 0, **base, "extra": extra})
            self.state = ModelState(self.model_name, config, specific=self.cfg.specific, seed=self.cfg.seed)
            log.info("%s: starting a new model lineage (%s)", "--new-lineage" if live is not None else
                     "no live version", self.model_name)
        self._bound_tables()
        if self.distributed is not None:  # this rank's partitions, from where rank 0 says they start
            self.consumer = self.distributed.open_consumer(self, self.stream, self.settings.stream.group, offsets)
            offsets = {**offsets, **self.distributed.start_offsets}
        else:
            self.consumer = self.stream.consumer(self.settings.stream.group)
            if offsets:
                self.consumer.seek(offsets)
        self._offsets = dict(offsets)
        self._rebuild_framework()
        self._refresh_domains(force=True)
        if self.distributed is None or self.distributed.is_root:
            self.retain()  # finishes a gc a crash interrupted, without waiting for the next publish

    def _rebuild_framework(self) -> None:
        assert self.state is not None
        cfg = FrameworkConfig(
            inner="adam", inner_lr=self.cfg.lr, inner_steps=self.cfg.inner_batches, dr_steps=self.cfg.inner_batches,
            beta=1.0 if self.cfg.framework == "alternate" else self.cfg.beta,  # β = 1: DN is alternate training
            gamma=self.cfg.gamma, k=self.cfg.dr_k, batch_size=self.cfg.batch_size,
            seed=self.cfg.seed, table_optimizer=self.cfg.table_optimizer, table_lr=self.cfg.table_lr,
            precision=self.precision,
        )
        dataset = self._dataset({})
        old = self.framework
        self.framework = MAMDR(self.state.model, dataset, cfg, params=self.state.params)
        self.framework.domains = []
        # tables grow in place (same Parameter objects): keep their row-wise optimizer state, padded
        tables = getattr(old._inner, "tables", None) if old is not None else None
        if tables is not None and carry_table_state(tables, list(self.framework.table_params().values())):
            self.framework._inner = self.framework.make_inner(cfg.inner, cfg.inner_lr, tables=tables)

    def _dataset(self, train: dict[int, Split]) -> MultiDomainDataset:
        assert self.state is not None
        return MultiDomainDataset(name="stream", domains=self.state.domains.ids, user_ids=[], item_ids=[],
                                  train=train, val={}, test={})

    def _refresh_domains(self, force: bool = False, now: bool = False) -> None:
        """Re-read the registry's domains when its change counter moved (``force``: regardless), looking at
        the counter at most every ``registry.poll_interval_s`` unless ``now`` (an event of a domain not known
        yet asks now)."""
        if not (force or now) and time.monotonic() - self._domains_read_at < self.settings.registry.poll_interval_s:
            return
        self._domains_read_at = time.monotonic()
        counter = self.registry.change_counter()
        if force or counter != self._counter:
            known = {d.id: d.status for d in self.registry.list_domains()}
            if self._known and not known:  # domains are never deleted: the registry lost its data
                raise BackendUnavailable(
                    f"the domain registry came back empty after knowing {len(self._known)} domains (an outage "
                    "that lost its data?): restore it; no event was dead-lettered and the trainer resumes from "
                    "its published offsets when restarted")
            self._known = known
            self._counter = counter

    # -- ingest -------------------------------------------------------------------------------------
    def ingest(self, records: list[Record]) -> None:
        """Validate, dead-letter, score prequentially, and buffer one poll's records."""
        assert self.state is not None
        if not records:
            return
        self._pending.extend(records)
        for r in records:
            self._offsets[r.tp] = max(self._offsets.get(r.tp, 0), r.offset + 1)
        checked = check_records(records, self.settings.stream.max_event_bytes)
        for record, reason in checked.invalid:
            self._reject(record, reason, "invalid")
        self._refresh_domains()
        distinct = list(dict.fromkeys(checked.domain))  # once per distinct domain of the poll, in arrival order
        if any(d not in self._known for d in distinct):  # created since the last re-read?
            self._refresh_domains(now=True)
            unknown = [d for d in distinct if d not in self._known]
            if unknown and self.cfg.auto_onboard:
                self._onboard(unknown)
        statuses: dict[str, str | None] = {d: self._known.get(d) for d in distinct}
        by_domain: dict[str, list[int]] = defaultdict(list)
        accepted: list[int] = []  # in stream order
        for j, domain in enumerate(checked.domain):
            status = statuses[domain]
            if status != "active":
                reason = "unknown domain" if status is None else f"domain {status}"
                self._reject(records[checked.index[j]], f"{reason} {domain!r}: create it with POST /v1/domains",
                             status or "unknown")
                continue
            by_domain[domain].append(j)
            accepted.append(j)
            self._event_ts.append(checked.ts[j])
        self._score(by_domain, checked.user_id, checked.item_id, checked.clicked)
        # ids get their rows in stream order, so a row (and the value it starts from) does not depend on how
        # polls cut the stream (grouped by domain, an id's row moved with the poll boundaries)
        if self.distributed is None and accepted and self.state.ensure(
                [checked.user_id[j] for j in accepted], [checked.item_id[j] for j in accepted], list(by_domain),
                round_no=self.round_no + 1, now=time.time()):
            self._rebuild_framework()
        for domain, rows in by_domain.items():
            users = [checked.user_id[j] for j in rows]
            items = [checked.item_id[j] for j in rows]
            labels = np.array([checked.clicked[j] for j in rows], dtype=np.float32)
            self.metrics.events_consumed.labels(domain=domain).inc(len(rows))
            self._round_valid += len(rows)
            if self.distributed is not None:  # rows are given at the round, the same on every rank
                self.distributed.stage(domain, users, items, labels)
                continue
            slot = self.state.domains.get(domain)
            assert slot is not None
            urows, irows = self.state.users.rows(users, add=False), self.state.items.rows(items, add=False)
            own = (urows >= 0) & (irows >= 0)  # ids the frequency filter holds back train no embedding
            self.buffers.add(slot, urows[own], irows[own], labels[own])

    def _score(self, by_domain: dict[str, list[int]], user_id: list[str], item_id: list[str],
               clicked: list[int]) -> None:
        """Test, then train: score a poll's events of every domain the live version holds, as serving scores
        them (the graduated Θi or θS), before any of them is trained on or gives an id a row; one batched
        pass for all domains (``ModelState.predict_rows``) instead of a model call per domain. A domain
        that got its slot after the live version was published is not scored yet (whichever poll gave it
        the slot), so the figures do not depend on how polls cut the stream."""
        assert self.state is not None
        domains = self.state.domains
        scored = [(d, slot, rows) for d, rows in by_domain.items()
                  if (slot := domains.get(d)) is not None and domains.is_published(slot)]
        if not scored:
            return
        take = np.concatenate([np.asarray(rows, dtype=np.int64) for _, _, rows in scored])
        sizes = np.array([len(rows) for _, _, rows in scored])
        codes = np.repeat(np.arange(len(scored)), sizes)
        slots = np.repeat(np.array([slot for _, slot, _ in scored], dtype=np.int64), sizes)
        labels = np.asarray(clicked, dtype=np.float32)[take]
        urows = self.state.users.rows([user_id[j] for j in take], add=False)
        irows = self.state.items.rows([item_id[j] for j in take], add=False)
        p_shared, p_specific = self.state.predict_rows(slots, urows, irows)
        probs = p_shared
        ends = np.cumsum(sizes)
        for k, (domain, slot, _) in enumerate(scored):
            if self.state.params.has_delta(slot):
                part = slice(ends[k] - sizes[k], ends[k])
                probs[part] = self.graduation.observe(domain, labels[part], p_shared[part], p_specific[part])
        self.prequential.update_many([d for d, _, _ in scored], codes, labels, probs)
        self._scored.update(d for d, _, _ in scored)

    def _reject(self, record: Record, reason: str, kind: str) -> None:
        self.stream.dead_letter(record, reason)
        self.metrics.events_rejected.labels(reason=kind).inc()
        self._round_rejected += 1

    def _onboard(self, domains: list[str]) -> None:
        """Create the poll's unknown domains in one registry write and re-read the registry once (a
        create and a full re-read per domain made onboarding quadratic in the number of new domains)."""
        valid = [d for d in domains if is_domain_id(d)]
        with contextlib.suppress(Conflict):
            self.registry.create_domains(valid, actor="trainer:auto-onboard")
        self._refresh_domains(force=True)

    # -- the round ----------------------------------------------------------------------------------
    def round_due(self) -> bool:
        if not self._pending:
            return False
        return (len(self._pending) >= self.round_budget()
                or time.monotonic() - self._round_started >= self.cfg.round_seconds)

    def round_budget(self) -> int:
        """Events a round consumes: ``round_events``, plus the excess lag under the ``sample`` policy."""
        return self.cfg.round_events + self._catch_up

    def run_round(self) -> RoundReport:
        assert self.state is not None and self.framework is not None and self.consumer is not None
        self.heartbeat.beat()
        t0 = time.monotonic()
        if self.distributed is not None:  # every rank's new ids get the same rows; staged clicks are buffered
            self.distributed.before_round(self)
        fresh = self.buffers.take_fresh()
        sampled_out = self.buffers.dropped - self._dropped_seen  # a full per-domain buffer's excess
        if self.cfg.overload_policy == "sample":
            fresh, dropped = self.buffers.sample_fresh(fresh, self.cfg.round_events)
            sampled_out += dropped
        if sampled_out:
            self.metrics.events_dropped.inc(sampled_out)
            self._dropped_seen = self.buffers.dropped
            log.warning("training behind: %d fresh events sampled out of this round (overload policy %s)",
                        sampled_out, self.cfg.overload_policy)
        trained = self._train(fresh)
        self.buffers.retire(fresh)
        self._expire()
        report = self._publish(trained, t0) if self.distributed is None else self.distributed.publish(self, trained, t0)
        report.trained_rows = self._last_train.get("rows", 0)
        report.sampled_out = sampled_out
        report.lag = self._check_lag()
        self._round_started = time.monotonic()
        return report

    def _check_lag(self) -> int:
        """Consumer lag after a round: exported, warned about above ``max_lag_events``; under the
        ``sample`` policy the next round also consumes the excess (and trains on a sample)."""
        assert self.consumer is not None
        lag = int(self.consumer.lag())
        self.metrics.consumer_lag.set(lag)
        excess = max(0, lag - self.cfg.max_lag_events)
        if excess:
            log.warning("training behind: consumer lag %d events > max_lag_events %d (policy %s%s)",
                        lag, self.cfg.max_lag_events, self.cfg.overload_policy,
                        ": the next round samples" if self.cfg.overload_policy == "sample" else
                        ": polling paused until rounds catch up")
        if self.cfg.overload_policy == "sample":  # the next round brings the lag back to max_lag_events
            self._catch_up = min(max(0, excess - self.cfg.round_events), 9 * self.cfg.round_events)
        else:
            self._catch_up = 0
        return lag

    def _train(self, fresh: dict[int, np.ndarray]) -> list[int]:
        assert self.state is not None and self.framework is not None
        self._last_train = {}
        if not fresh and self.distributed is None:
            return []
        n_fresh = sum(len(r) for r in fresh.values())
        replay = self.buffers.replay_sample(round(self.cfg.replay_ratio * n_fresh)) if n_fresh else {}
        train: dict[int, Split] = {}
        for slot in sorted(set(fresh) | set(replay)):
            parts = [p for p in (fresh.get(slot), replay.get(slot)) if p is not None and len(p)]
            rows = np.concatenate(parts) if len(parts) > 1 else parts[0]
            # copies: a one-row field view counts as contiguous to numpy but keeps the record's stride, which
            # torch.from_numpy refuses
            train[slot] = Split(user=rows["user"].copy(), item=rows["item"].copy(), label=rows["label"].copy())
        self._last_train = {"fresh": n_fresh, "rows": sum(len(s) for s in train.values())}
        if self.distributed is not None:  # this rank's round on its own rows, then the replicas reconcile
            return self.distributed.train(self, train, lambda: self._train_local(train, sorted(fresh)))
        return self._train_local(train, sorted(fresh))

    def _train_local(self, train: dict[int, Split], targets: list[int]) -> list[int]:
        """DN over ``train`` (one pass, more when small), then DR for ``targets``."""
        fw = self.framework
        assert fw is not None
        fw.dataset = self._dataset(train)
        fw.domains = sorted(train)
        rng = torch.Generator().manual_seed(self.cfg.seed * 1_000_003 + self.round_no)
        torch.manual_seed(self.cfg.seed * 1_000_003 + self.round_no)  # dropout draws: same seed, same model
        order = fw.shuffled_domains(rng)
        for kind in ("user", "item"):  # every row a step of this round can move (DN, its outer step, replay)
            self._trained_rows[kind].append(np.unique(np.concatenate([getattr(s, kind) for s in train.values()])))
        # one pass over the round's rows, more when it holds fewer than min_batches mini-batches
        bs = self.cfg.batch_size
        passes = max(1, -(-self.cfg.min_batches * bs // max(1, self._last_train["rows"])))
        batches = [b for p in range(passes)
                   for b in round_batches(train, order if p == 0 else fw.shuffled_domains(rng), bs, rng)]
        self._last_train["passes"] = passes
        t_dn = time.perf_counter()
        fw.negotiate([(-1, batches)])
        self._last_train["dn_ms"] = round((time.perf_counter() - t_dn) * 1000)
        failpoint("mid_round")
        if self.cfg.framework != "mamdr":  # dn / alternate: the shared model only, every θi stays zero
            return targets
        # Algorithm 2 for every target at once (vmapped; a domain smaller than K batches takes one pass)
        sequences = _sequences(fw.domains, targets, fw.config.k, rng)
        cfg = fw.config
        dr_train = train if self.cfg.dr_data == "round" else self._history(train)
        BatchedDR(fw.params, lr=self.cfg.dr_step, gamma=cfg.gamma, batch_size=cfg.batch_size,
                  max_steps=self.cfg.inner_batches, l2=cfg.l2, passes=passes, optimizer=self.cfg.dr_optimizer,
                  precision=self.precision).run(
            targets, sequences, dr_train, seed=self.cfg.seed * 1_000_003 + self.round_no)
        self._last_train["dr_ms"] = round((time.perf_counter() - t_dn) * 1000) - self._last_train["dn_ms"]
        return targets

    def _history(self, train: dict[int, Split]) -> dict[int, Split]:
        """Each domain's round rows plus its whole replay reservoir: θi fits the domain, not only this round."""
        out = {}
        for slot, split in train.items():
            old = self.buffers.replay_rows(slot)
            out[slot] = split if not len(old) else Split(
                user=np.concatenate([split.user, old["user"]]), item=np.concatenate([split.item, old["item"]]),
                label=np.concatenate([split.label, old["label"]]))
        return out

    def _next_version(self) -> str:
        numbers = [0]
        for base in (self.root, self.root / CHECKPOINT_DIR):
            if base.exists():
                numbers += [int(m.group(1)) for p in base.iterdir() if (m := VERSION_RE.match(p.name))]
        numbers += [int(m.group(1)) for v in self.registry.list_models(limit=1000) if (m := VERSION_RE.match(v.id))]
        # a crash after the embeddings were published leaves a feature-store version no manifest names
        numbers += [int(m.group(1)) for v in self.store.versions() if (m := VERSION_RE.match(v))]
        return f"v{max(numbers) + 1:06d}"

    def _publish(self, trained: list[int], t0: float, totals: dict[str, Any] | None = None) -> RoundReport:
        """Publish the round. ``totals`` (distributed rank 0): every rank's events, counts and offsets."""
        from trainer.export.exporter import export_version

        assert self.state is not None and self.consumer is not None
        state = self.state
        version = self._next_version()
        self.round_no += 1
        offsets = dict(self._offsets) if totals is None else dict(totals["offsets"])
        events = len(self._pending) if totals is None else int(totals["events"])
        if totals is not None:
            self._round_valid, self._round_rejected = int(totals["valid"]), int(totals["rejected"])
        # embeddings first, under the new version (serving reads the version its manifest names)
        changed = self._changed_rows()
        fs_parent = self._fs_parent() if changed is not None else None
        if fs_parent is not None:
            assert changed is not None
            try:
                written = self._write_changed(version, fs_parent, changed)
            except Conflict as exc:  # e.g. a parent of the store's layout before incremental versions
                log.warning("writing %s in full: %s", version, exc.message)
                fs_parent = None
        if fs_parent is None:
            (user_ids, user_rows), (item_ids, item_rows) = state.users.live(), state.items.live()
            sync_embeddings(state.model, user_ids, item_ids, self.store, version, publish=True,
                            user_rows=user_rows, item_rows=item_rows)
            written = {"user": len(user_ids), "item": len(item_ids), "forgotten": 0}
        failpoint("mid_publish")
        round_figs = self.prequential.cumulative()
        # the registry caps a version's metrics at 16 KiB of JSON: per-domain figures only up to
        # METRIC_DOMAINS domains (≈120 bytes each); Prometheus always has them all
        decisions = {} if self.cfg.framework != "mamdr" else (
            self.graduation.decide() if self.distributed is None else self.distributed.decide(self))
        graduated = sorted(self.graduation.graduated) if self.cfg.framework == "mamdr" else []
        for d, figs in decisions.items():  # gauges set when they change (a label lookup is ~50 µs per domain)
            if d in self._known and self._gauged.get(d) != figs["graduated"]:
                self.metrics.graduated.labels(domain=d).set(1.0 if figs["graduated"] else 0.0)
                self._gauged[d] = bool(figs["graduated"])
        metrics = {"graduated": graduated if len(graduated) <= METRIC_DOMAINS else graduated[:METRIC_DOMAINS],
                   "graduated_domains": len(graduated), "framework": self.cfg.framework,
                   "prequential": round_figs if len(round_figs) <= METRIC_DOMAINS else {},
                   "prequential_domains": len(round_figs), "prequential_mean_auc": self.prequential.mean_auc(),
                   "round": self.round_no, "valid": self._round_valid, "rejected": self._round_rejected}
        ckpt = state.save(self.root, version, {"round": self.round_no, "offsets": offsets},
                          parent=self.live_version, changed=changed, rebase_ratio=self.cfg.checkpoint_rebase_ratio,
                          max_chain=self.cfg.checkpoint_max_chain)
        failpoint("after_checkpoint")
        domains = {d: s for d, s in state.slots().items() if self._known.get(d, "active") != "retired"}
        served_with_delta = set(graduated)  # a set: ``in`` a list of 10,000 graduated domains was quadratic
        without_delta = [d for d in domains if d not in served_with_delta]  # served by θS (with their own rows)
        cold_start = state.cold_start()
        export_version(state.params, domains, self.root, version, parent=self.live_version,
                       feature_store_version=version, offsets=offsets, events_included=events,
                       metrics=_finite(metrics), registry=self.registry, promote=True,
                       cold_start=cold_start, without_delta=without_delta,
                       delta_dtype=self.cfg.delta_dtype)
        failpoint("after_export")
        self.consumer.commit(offsets)
        failpoint("after_commit")
        self.retain()  # after the commit: a crash inside gc loses nothing
        now = time.time()
        for ts in self._event_ts[-5000:]:
            self.metrics.freshness.observe(max(0.0, now - ts))
        names = state.domains.ids
        report = RoundReport(version=version, events=events, valid=self._round_valid,
                             rejected=self._round_rejected, domains_trained=[names[s] for s in trained],
                             seconds=time.monotonic() - t0, prequential=round_figs)
        self.live_version = version
        self.last_publish = {"fs_parent": fs_parent, "rows": written,
                             "checkpoint": json.loads((ckpt / CHAIN_FILE).read_text())["kind"]}
        self.forget_changes(cold_start)
        self._pending, self._event_ts = [], []
        self._round_valid = self._round_rejected = 0
        self.metrics.round_seconds.observe(report.seconds)
        self.metrics.rounds.labels(outcome="published").inc()
        self.metrics.published_version.set(int(version[1:]))
        for d in self._scored:  # only domains scored since the last publish have new figures
            figs = round_figs.get(d)
            if figs is not None and d in self._known:
                if not np.isnan(figs["auc"]):
                    self.metrics.prequential_auc.labels(domain=d).set(figs["auc"])
                self.metrics.prequential_logloss.labels(domain=d).set(figs["logloss"])
        self._scored = set()
        log.info("published %s: %d events (%d valid, %d rejected), %d domains trained, %.2fs, "
                 "prequential mean AUC %.4f", version, events, report.valid, report.rejected,
                 len(trained), report.seconds, self.prequential.mean_auc())
        return report

    # -- incremental publish -------------------------------------------------------------------------
    def forget_changes(self, cold_start: dict[str, list[float]] | None = None) -> None:
        """A version was published (by this process or, on a worker rank, by rank 0): start the next
        change set empty, so it never grows across rounds."""
        assert self.state is not None
        self.state.published(cold_start)  # also what the next polls score ids without a live row with
        self._trained_rows = {"user": [], "item": []}

    def _changed_rows(self) -> dict[str, np.ndarray] | None:
        """Table rows changed since the live version (None: write everything, e.g. the first version
        or a dense table optimizer, which moves every row at every step)."""
        assert self.state is not None
        if not self.cfg.incremental_publish or self.live_version is None or self.cfg.table_optimizer == "dense":
            return None
        out = {}
        for kind, vocab in (("user", self.state.users), ("item", self.state.items)):
            rows, _ = vocab.changes()
            out[kind] = np.unique(np.concatenate([rows, *self._trained_rows[kind]]).astype(np.int64))
        return out

    def _fs_parent(self) -> str | None:
        """The feature-store version the live manifest names, if the store still has it."""
        if self.live_version is None:
            return None
        try:
            name = read_manifest(self.root / self.live_version).feature_store_version
        except (NotFound, IntegrityError):
            return None
        return name if name is not None and name in self.store.versions() else None

    def _write_changed(self, version: str, parent: str, changed: dict[str, np.ndarray]) -> dict[str, int]:
        """An incremental feature-store version: the changed rows ids own, tombstones for ids that
        lost their row; everything else is read through ``parent``."""
        from feature_store.loaders import bulk_write
        from trainer.feature_sync import table_rows

        assert self.state is not None
        model = self.state.model
        self.store.declare(version, {"user": model.config.udim, "item": model.config.idim}, parent=parent)
        written = {"forgotten": 0}
        for kind, vocab in (("user", self.state.users), ("item", self.state.items)):
            rows = changed[kind]
            names = vocab.marks(rows)[0] if len(rows) else []
            owned = np.array([n is not None for n in names], dtype=bool)
            ids = [n for n in names if n is not None]
            vectors = table_rows(model, kind, 0, rows[owned]) if ids else np.zeros((0, 1), np.float32)
            if ids:
                bulk_write(self.store, version, kind, ids, vectors)  # type: ignore[arg-type]
            gone = vocab.changes()[1]
            if gone:
                self.store.forget(version, kind, gone)  # type: ignore[arg-type]
            written[kind] = len(ids)
            written["forgotten"] += len(gone)
        self.store.publish(version)
        return written

    # -- bounded tables (issue 13.4: trainer/service/vocab.py) -----------------------------------------
    def _bound_tables(self) -> None:
        assert self.state is not None
        cfg = self.cfg
        bounded = cfg.min_count > 1 or cfg.expire_rounds > 0 or cfg.expire_seconds > 0
        if bounded and self.distributed is not None:
            raise ConfigError("min_count > 1 and id expiry are not supported with --world-size > 1 yet; "
                              "unset MAMDR_TRAINER__MIN_COUNT/EXPIRE_ROUNDS/EXPIRE_SECONDS")
        self.state.bound(cfg.min_count, cfg.filter_capacity)

    def _expire(self) -> None:
        """Free rows of ids not seen recently; the version published next no longer holds them."""
        assert self.state is not None
        freed = self.state.expire(self.round_no + 1, time.time(), self.cfg.expire_rounds, self.cfg.expire_seconds)
        for kind, vocab in (("user", self.state.users), ("item", self.state.items)):
            self.metrics.expired_ids.labels(kind=kind).inc(len(freed[kind]))
            self.metrics.embedding_ids.labels(kind=kind).set(vocab.active)
            self.metrics.embedding_rows.labels(kind=kind).set(len(vocab))
        if len(freed["user"]) or len(freed["item"]):
            self.buffers.forget(freed["user"], freed["item"])
            self._rebuild_framework()  # optimizer moments of freed rows must not carry over to new ids
            log.info("expired %d user and %d item rows", len(freed["user"]), len(freed["item"]))

    def retain(self) -> None:
        """Retention (trainer/service/retention.py); a failed gc is retried after the next publish."""
        from trainer.service.retention import apply_retention

        try:
            report = apply_retention(self.root, self.registry, self.store, self.cfg.keep_versions,
                                     self.cfg.pinned_versions)
        except (BackendUnavailable, OSError) as exc:
            log.warning("retention failed (%s); it runs again after the next publish", exc)
            return
        for what in ("records", "feature_store", "checkpoints", "folders", "leftovers"):
            self.metrics.retention_deleted.labels(what=what).inc(len(getattr(report, what)))

    # -- the service loop ---------------------------------------------------------------------------
    def run(self, max_rounds: int | None = None, idle_exit_s: float | None = None) -> list[RoundReport]:
        """Run until SIGTERM (``stop_event``), ``max_rounds`` published, or ``idle_exit_s`` without events."""
        if self.consumer is None:
            self.start()
        assert self.consumer is not None
        if self.distributed is not None:  # the ranks poll, ingest and enter rounds in lockstep
            return self.distributed.run(self, max_rounds, idle_exit_s)
        reports: list[RoundReport] = []
        last_event = time.monotonic()
        last_log = 0.0
        while not self.stop_event.is_set():
            self.heartbeat.beat()
            # never past round_events: a busy stream gives rounds of exactly round_events events
            # (backpressure: what is not polled waits in the broker as lag, measured after each round)
            room = max(1, self.round_budget() - len(self._pending))
            t_poll = time.perf_counter()
            records = self.consumer.poll(max_records=min(self.settings.stream.max_poll_records, room), timeout_s=0.5)
            if records:
                last_event = time.monotonic()
                self.ingest(records)
                self.ingested += len(records)
                self.ingest_seconds += time.perf_counter() - t_poll
            if self.round_due():
                reports.append(self.run_round())
                if max_rounds is not None and len(reports) >= max_rounds:
                    break
            if time.monotonic() - last_log > 10:
                lag = self.consumer.lag()
                self.metrics.consumer_lag.set(lag)
                last_log = time.monotonic()
                if lag > self.cfg.max_lag_events:
                    log.warning("training behind: consumer lag %d events > max_lag_events %d (policy %s)",
                                lag, self.cfg.max_lag_events, self.cfg.overload_policy)
                log.info("pending %d events, lag %d, buffered %d", len(self._pending), lag, self.buffers.pending())
            if idle_exit_s is not None and not records and time.monotonic() - last_event > idle_exit_s:
                if self._pending:
                    reports.append(self.run_round())
                break
        self.log_ingest()
        return reports

    def log_ingest(self) -> None:
        rate = self.ingested / self.ingest_seconds if self.ingest_seconds else 0.0
        log.info("ingested %d events in %.2f s of polling and ingest (%.0f events/s)", self.ingested,
                 self.ingest_seconds, rate)

    def close(self) -> None:
        if self.consumer is not None:
            self.consumer.close()
            self.consumer = None


def _sequences(domains: list[int], targets: list[int], k: int, rng: torch.Generator) -> dict[int, list[int]]:
    """DR's sequence per target: k distinct other domains of the round in random order, then the target.

    The same distribution as ``MAMDR.sample_sequence`` (a permutation of the other domains per target,
    O(domains) each: quadratic in a round's domains, seconds at 10,000) drawn in O(k) per target with
    Floyd's sampling; the draws come from ``rng``, so a replay draws the same sequences."""
    n = len(domains)
    k = max(0, min(k, n - 1))
    position = {d: i for i, d in enumerate(domains)}
    gen = np.random.default_rng(int(torch.randint(0, 2**62, (1,), generator=rng)))
    bounds = np.arange(n - k, n)  # Floyd's step j draws from [0, j] for j = n-1-k .. n-2
    draws = (gen.random((len(targets), k)) * bounds).astype(np.int64).tolist()  # all draws at once
    orders = np.argsort(gen.random((len(targets), k)), axis=1).tolist()  # a random order of each subset
    out: dict[int, list[int]] = {}
    for t_index, target in enumerate(targets):
        p = position[target]
        chosen: list[int] = []
        for j, r in zip(range(n - 1 - k, n - 1), draws[t_index], strict=True):  # a uniform k-subset of the others
            chosen.append(j if r in chosen else r)
        out[target] = [domains[chosen[i] + (chosen[i] >= p)] for i in orders[t_index]] + [target]
    return out


def _finite(obj: object) -> object:
    """JSON-safe metrics: NaN becomes None."""
    if isinstance(obj, dict):
        return {k: _finite(v) for k, v in obj.items()}
    if isinstance(obj, float) and not np.isfinite(obj):
        return None
    return obj


def check_resumable(root: Path, version: str) -> None:
    """Refuse to reset silently: the live version must have its checkpoint (and, for an incremental
    one, every link back to its full base) to resume from."""
    if not (Path(root) / CHECKPOINT_DIR / version / META_FILE).exists():
        raise ConfigError(f"live version {version} has no trainer checkpoint in {Path(root) / CHECKPOINT_DIR}: "
                          "restore it, promote a version that has one, or pass --new-lineage to start a new "
                          "model lineage on purpose")
    try:
        checkpoint_chain(root, version)
    except DataError as exc:
        raise ConfigError(f"live version {version} cannot be resumed: {exc.message}; restore it, promote a "
                          "version that has its checkpoints, or pass --new-lineage to start a new model lineage "
                          "on purpose") from None

