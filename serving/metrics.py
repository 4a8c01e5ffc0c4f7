"""Every serving metric, in one place (``mamdr_serving_<thing>_<unit>``), on a per-app registry.

Domain labels are bounded: only ids the registry knows (or the live manifest lists, without a
registry) are used as label values; anything else a client sends is counted under ``"unknown"``.
Version labels (``version`` on requests and latency) are bounded too: a request is labelled with the version
that scored it, which is the live one or one of the ``serving.max_extra_versions`` held beside it, or
``"none"`` when it was refused before a version was chosen (e.g. an unknown pinned version), or ``"mixed"``
for a v2 batch a canary split between two versions; series of a
version no longer held are removed at the next scrape (:meth:`ServingMetrics.keep_versions`).
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
from prometheus_client.exposition import CONTENT_TYPE_LATEST, generate_latest

UNKNOWN = "unknown"
NO_VERSION = "none"
MIXED_VERSIONS = "mixed"  # a v2 batch whose users a canary split between two versions
_LATENCY_BUCKETS = (0.0005, 0.001, 0.0015, 0.002, 0.003, 0.005, 0.0075, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0)


class ServingMetrics:
    """Counters, histograms and gauges of one serving app."""

    content_type = CONTENT_TYPE_LATEST

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        for collector in (PROCESS_COLLECTOR, PLATFORM_COLLECTOR, GC_COLLECTOR):  # process_*, python_* series
            r.register(collector)
        self.requests = Counter(
            "mamdr_serving_requests_total", "Scoring requests by domain, HTTP status and model version",
            ["domain", "status", "version"], registry=r,
        )
        self.latency = Histogram(
            "mamdr_serving_request_latency_seconds", "Scoring request latency inside the app, by domain and model "
            "version", ["domain", "version"], buckets=_LATENCY_BUCKETS, registry=r,
        )
        self.canary_fallbacks = Counter(
            "mamdr_serving_canary_fallbacks_total",
            "Requests routed to the live version because the canary version is not held (loading or refused)",
            registry=r,
        )
        self.feature_latency = Histogram(
            "mamdr_serving_feature_store_latency_seconds", "One feature-store lookup (user + items)",
            buckets=_LATENCY_BUCKETS, registry=r,
        )
        self.cold_users = Counter(
            "mamdr_serving_cold_users_total", "Requests whose user the feature store did not know", ["domain"],
            registry=r,
        )
        self.cold_items = Counter(
            "mamdr_serving_cold_items_total", "Item ids the feature store did not know", ["domain"], registry=r,
        )
        self.feature_version_fallbacks = Counter(
            "mamdr_serving_feature_version_fallbacks_total",
            "Lookups that read the current embedding version because the manifest's was collected",
            registry=r,
        )
        self.degraded = Counter(
            "mamdr_serving_degraded_responses_total",
            "Responses scored with fallback embeddings (not the version the model was exported with)",
            ["domain"], registry=r,
        )
        self.model_version = Gauge(
            "mamdr_serving_model_version_info", "1 for the version being served", ["version"], registry=r,
        )
        self.reloads = Counter(
            "mamdr_serving_reloads_total", "Model version loads by result", ["result"], registry=r,
        )
        self.reload_failures = Counter(
            "mamdr_serving_reload_failures_total", "Model versions refused (checksum, shape, missing file)",
            registry=r,
        )
        self.domains_cached = Gauge(
            "mamdr_serving_domains_cached", "Domains whose composed weights are held in memory", registry=r,
        )
        self.composer_misses = Counter(
            "mamdr_serving_composer_misses", "Domain weight loads (LRU misses), over every version served",
            registry=r,
        )
        self.batches = Counter(
            "mamdr_serving_batches", "onnxruntime runs of the batcher (each scores one or more requests)", registry=r,
        )
        self.batched_requests = Counter(
            "mamdr_serving_batched_requests", "Requests (users) scored by the batcher: / batches = mean batch size",
            registry=r,
        )
        self._misses_seen: tuple[int, int] = (0, 0)  # (id of the composer, its misses already counted)

    def set_version(self, old: str | None, new: str) -> None:
        if old is not None:
            self.model_version.remove(old)
        self.model_version.labels(new).set(1)

    def keep_versions(self, held: set[str]) -> None:
        """Remove the per-version series of versions no longer served (bounds the label's values)."""
        for metric in (self.requests, self.latency):
            seen = {labels[-1] for labels in list(metric._metrics)}  # prometheus_client lists no label values
            for version in seen - held - {NO_VERSION, MIXED_VERSIONS}:
                metric.remove_by_labels({"version": version})

    def count_composer_misses(self, composer: object, misses: int) -> None:
        """Turn a composer's own running count into the counter (a new version brings a new composer)."""
        key, seen = self._misses_seen
        if key != id(composer):
            seen = 0
        if misses > seen:
            self.composer_misses.inc(misses - seen)
        self._misses_seen = (id(composer), misses)

    def render(self) -> bytes:
        return generate_latest(self.registry)
