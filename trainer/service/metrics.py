"""Every Prometheus metric of the trainer service, in one place (``mamdr_trainer_<thing>_<unit>``).

Domain labels come from the registry's domains only (bounded cardinality); events for unknown
domains are counted under the ``reason`` label of the rejected counter instead.
"""

from __future__ import annotations

from prometheus_client import (
    GC_COLLECTOR,
    PLATFORM_COLLECTOR,
    PROCESS_COLLECTOR,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
)


class TrainerMetrics:
    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        r = registry or CollectorRegistry()
        self.registry = r
        if registry is None:  # process_* and python_* series beside the trainer's own
            for collector in (PROCESS_COLLECTOR, PLATFORM_COLLECTOR, GC_COLLECTOR):
                r.register(collector)
        self.events_consumed = Counter(
            "mamdr_trainer_events_consumed_total", "Valid events buffered for training", ["domain"], registry=r)
        self.events_rejected = Counter(
            "mamdr_trainer_events_rejected_total", "Events sent to the dead-letter topic", ["reason"], registry=r)
        self.events_dropped = Counter(
            "mamdr_trainer_events_sampled_out_total", "Events not kept because training fell behind",
            registry=r)
        self.consumer_lag = Gauge(
            "mamdr_trainer_consumer_lag_events", "End offset minus consumed position, summed over partitions",
            registry=r)
        self.round_seconds = Histogram(
            "mamdr_trainer_round_duration_seconds", "Wall time of one MAMDR round (eval, train, publish)",
            buckets=(0.5, 1, 2, 5, 10, 20, 30, 60, 120, 300), registry=r)
        self.rounds = Counter("mamdr_trainer_rounds_total", "Rounds by outcome", ["outcome"], registry=r)
        self.published_version = Gauge(
            "mamdr_trainer_published_version", "Number of the last published model version", registry=r)
        self.graduated = Gauge(
            "mamdr_trainer_domain_graduated", "1 when the domain's delta is served (it beats θS on its recent "
            "prequential clicks), 0 when the domain is served by θS", ["domain"], registry=r)
        self.prequential_auc = Gauge(
            "mamdr_trainer_prequential_auc", "Cumulative prequential AUC per domain", ["domain"], registry=r)
        self.prequential_logloss = Gauge(
            "mamdr_trainer_prequential_logloss", "Cumulative prequential log loss per domain", ["domain"],
            registry=r)
        self.embedding_ids = Gauge(
            "mamdr_trainer_embedding_ids", "Ids owning an embedding row (bounded by min_count and expiry)", ["kind"],
            registry=r)
        self.embedding_rows = Gauge(
            "mamdr_trainer_embedding_rows", "Rows of the embedding table in use or free (high-water mark)", ["kind"],
            registry=r)
        self.expired_ids = Counter(
            "mamdr_trainer_expired_ids_total", "Ids whose row was freed after they went unseen", ["kind"], registry=r)
        self.retention_deleted = Counter(
            "mamdr_trainer_retention_deleted_total", "What retention deleted, by kind (records, feature_store, "
            "checkpoints, folders, leftovers)", ["what"], registry=r)
        self.freshness = Histogram(
            "mamdr_trainer_freshness_seconds", "Event time to the version that includes it being live",
            buckets=(1, 2, 5, 10, 20, 30, 60, 120, 300, 600, 1800), registry=r)
