"""Hot reload: poll the registry's change counter, load and verify the new live version, swap it in.

Every ``serving.reload_poll_s`` the poller reads one integer. When it moved, the domain table is
re-read and, if the live version changed, the new one is loaded and verified in a worker thread
while the old one keeps serving; then one attribute assignment swaps it. Its manifest must be the
one the registry recorded at publish (``ModelVersion.manifest_sha256``). A version that fails
(manifest edited, checksum, shape, missing file, unreadable ONNX) is refused: the old one stays,
the failure is counted (``mamdr_serving_reload_failures_total`` once per refused version,
``mamdr_serving_reloads_total{result="failed"}`` per attempt) and shown on ``/readyz``, and the
load is retried with exponential backoff (``reload_poll_s`` doubling up to ``reload_backoff_max_s``),
so a transient failure (a file system hiccup, an NFS mount coming back) heals without a new promote.
A registry outage is logged and retried at the next poll.
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass, field, replace
from pathlib import Path

from contracts.artifacts import version_dir_of
from contracts.errors import MamdrError
from contracts.settings import Settings
from domain_registry.base import ModelVersion, Registry
from feature_store.base import EmbeddingStore
from serving.live import DomainTable, LiveModel, build_live
from serving.metrics import ServingMetrics
from serving.versions import VersionPool

log = logging.getLogger(__name__)


@dataclass
class ServingState:
    """Everything a request needs; ``live`` and ``domains`` are replaced whole, never mutated."""

    settings: Settings
    store: EmbeddingStore
    registry: Registry
    metrics: ServingMetrics = field(default_factory=ServingMetrics)
    live: LiveModel | None = None
    domains: DomainTable = field(default_factory=DomainTable)
    last_reload_error: str | None = None
    store_down_until: float = 0.0  # perf_counter() before which the feature store is not tried
    fallback_warned: str | None = None  # the collected embedding version last warned about
    failed_version: str | None = None  # the version whose load failed last
    failed_attempts: int = 0
    retry_at: float = 0.0  # monotonic() after which a failed load is tried again
    versions: VersionPool = field(init=False)  # versions served beside the live one (pinned, canary)

    def __post_init__(self) -> None:
        self.versions = VersionPool(self.settings.serving.max_extra_versions)

    def served_versions(self) -> set[str]:
        """Every version that may label a request: the live one and the ones held beside it."""
        live = self.live
        return {*self.versions.held(), *([live.version] if live is not None else [])}


def artifact_dir(model: ModelVersion, artifacts_url: str) -> Path:
    """A registry artifact URI as a folder; a bare relative path is taken under ``artifacts_url``."""
    return version_dir_of(model.artifact_uri, artifacts_url)


class Reloader:
    """Polls the registry and keeps ``state.live`` and ``state.domains`` current."""

    def __init__(self, state: ServingState) -> None:
        self.state = state

    def poll_once(self) -> bool:
        """One poll (blocking: call it in a thread). Returns True when a new version was swapped in."""
        state = self.state
        counter = state.registry.change_counter()
        changed = counter != state.domains.counter
        swapped = self._poll(counter)
        if changed:
            state.versions.prune(state)  # a held version deleted or rolled back since is no longer served
        state.versions.ensure_canary(state, counter)
        return swapped

    def _poll(self, counter: int) -> bool:
        state = self.state
        if counter == state.domains.counter:
            if state.failed_version is None or time.monotonic() < state.retry_at:
                return False
        else:
            fresh = DomainTable.from_registry(state.registry, counter)
            if state.domains.statuses and not fresh.statuses:
                # domains are never deleted (only retired): an empty answer after a full one is a registry that
                # lost its data (e.g. Redis back empty after an outage). Keep serving what we know and say so.
                if state.domains.lost is None:
                    log.error("the registry answered with no domains after %d: keeping the last known domains and "
                              "model; restore the registry (its backup) to resume reloads", len(state.domains.statuses))
                state.domains = replace(state.domains, lost="came back empty after an outage", counter=counter)
                return False
            state.domains = fresh
        target = state.registry.live_model()
        if target is None or (state.live is not None and state.live.version == target.id):
            state.failed_version, state.failed_attempts = None, 0
            return False
        return self.load(target)

    def load(self, target: ModelVersion) -> bool:
        state = self.state
        try:
            if target.manifest_sha256 is None:
                log.warning("registry has no manifest digest for version %s (registered before digests were "
                            "recorded); its manifest cannot be checked against publication", target.id)
            new = build_live(artifact_dir(target, state.settings.artifacts_url), state.settings.serving,
                             manifest_sha256=target.manifest_sha256)
            if new.version != target.id:
                raise MamdrError(f"{target.artifact_uri} holds version {new.version!r}, not {target.id!r}")
        except Exception as exc:  # any failure keeps the old version serving
            reason = exc.message if isinstance(exc, MamdrError) else f"{type(exc).__name__}: {exc}"
            state.last_reload_error = f"version {target.id} refused: {reason}"
            attempts = state.failed_attempts + 1 if state.failed_version == target.id else 1
            if attempts == 1:  # versions refused; every attempt (retries too) counts in reloads{failed}
                state.metrics.reload_failures.inc()
            state.metrics.reloads.labels("failed").inc()
            serving = state.settings.serving
            delay = min(serving.reload_backoff_max_s, serving.reload_poll_s * 2 ** min(attempts - 1, 30))
            state.failed_version, state.failed_attempts = target.id, attempts
            state.retry_at = time.monotonic() + delay
            log.error("reload refused, still serving %s: %s (attempt %d, retrying in %.1fs)",
                      state.live and state.live.version, state.last_reload_error, attempts, delay,
                      exc_info=None if isinstance(exc, MamdrError) else exc)
            return False
        state.failed_version, state.failed_attempts = None, 0
        old = state.live
        state.live = new  # the swap: requests read state.live once each
        state.last_reload_error = None
        state.metrics.set_version(old.version if old else None, new.version)
        state.metrics.reloads.labels("ok").inc()
        log.info("serving model version %s (was %s)", new.version, old.version if old else None)
        return True

    async def run(self) -> None:
        interval = max(0.01, float(self.state.settings.serving.reload_poll_s))
        while True:
            try:
                await asyncio.to_thread(self.poll_once)
            except MamdrError as exc:
                log.warning("registry poll failed (retrying in %.1fs): %s", interval, exc.message)
            except Exception:
                log.exception("registry poll failed (retrying in %.1fs)", interval)
            await asyncio.sleep(interval)
