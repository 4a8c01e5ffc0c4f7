"""The version being served and the domain table, swapped as whole objects (atomic for readers).

A request reads ``state.live`` once and uses that object to the end, so a reload in the middle of a
request never mixes two versions. The domain table comes from the registry and is refreshed when
its change counter moves; it decides 404 (unknown), 410 (retired) and the metric labels.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from contracts.artifacts import LoadedVersion, load_version
from contracts.errors import BackendUnavailable, ConfigError, Gone, NotFound
from contracts.settings import ServingSettings
from domain_registry.base import Registry
from serving.composition import Composer, build_composer
from serving.metrics import UNKNOWN


@dataclass
class LiveModel:
    """A verified version with its composer and cold-start vectors."""

    loaded: LoadedVersion
    composer: Composer
    cold_user: np.ndarray
    cold_item: np.ndarray

    @property
    def version(self) -> str:
        return self.loaded.version

    @property
    def feature_store_version(self) -> str | None:
        return self.loaded.manifest.feature_store_version


def build_live(version_dir: Path, settings: ServingSettings, manifest_sha256: str | None = None) -> LiveModel:
    """Load, verify (the manifest against ``manifest_sha256`` when given) and prepare a version (slow:
    run it off the event loop)."""
    loaded = load_version(version_dir, manifest_sha256)
    contract = loaded.manifest.contract
    composer = build_composer(
        settings.composition, loaded, settings.session_cache_size, settings.intra_op_threads
    )
    # Fill the LRU here, off the event loop, so the first requests of each domain do not pay the miss.
    for domain in list(loaded.manifest.deltas)[: settings.session_cache_size]:
        composer.warm(domain)
    composer.warm_groups(settings.max_batch)  # the grouped graphs batches run on, built here rather than mid-request
    cold = loaded.manifest.cold_start

    def vector(kind: str, dim: int) -> np.ndarray:
        values = cold.get(kind)
        if values is None:
            return np.zeros(dim, dtype=np.float32)
        if len(values) != dim:
            raise ConfigError(f"cold-start {kind} vector has {len(values)} values, the model expects {dim}")
        return np.asarray(values, dtype=np.float32)

    return LiveModel(loaded, composer, vector("user", contract.user_dim), vector("item", contract.item_dim))


@dataclass(frozen=True)
class DomainTable:
    """Domain id -> status, as of one registry change counter."""

    statuses: dict[str, str] = field(default_factory=dict)
    counter: int = -1
    lost: str | None = None  # why the registry's answer was not believed (it came back empty)

    @classmethod
    def from_registry(cls, registry: Registry, counter: int) -> DomainTable:
        return cls({d.id: d.status for d in registry.list_domains()}, counter)

    def check(self, domain: str) -> None:
        """Raise 404 for an unknown domain, 410 for a retired one. Paused domains are served."""
        status = self.statuses.get(domain)
        if status is None and self.lost is not None:  # an outage, not an unknown domain: retry, do not give up
            raise BackendUnavailable(f"the domain registry {self.lost}; domain {domain!r} cannot be checked until "
                                     "it is restored (known domains keep being served)", retry_after_s=5)
        if status is None:
            raise NotFound(f"domain {domain!r} is not registered; create it with POST /v1/domains")
        if status == "retired":
            raise Gone(f"domain {domain!r} is retired; it is no longer served")

    def label(self, domain: str) -> str:
        """The metric label for a domain: registry ids only, anything else is ``"unknown"``."""
        return domain if domain in self.statuses else UNKNOWN
