"""Hot reload: poll the registry's change counter, load and verify the new live version, swap it in.

Every ``serving.reload_poll_s`` the poller reads one integer. When it moved, the domain table is
re-read and, if the live version changed, the new one is loaded and verified in a worker thread
while the old one keeps serving; then one attribute assignment swaps it. A version that fails
(checksum, shape, missing file, unreadable ONNX) is refused: the old one stays, the failure is
counted (``mamdr_serving_reload_failures_total``) and shown on ``/readyz``. A registry outage is
logged and retried at the next poll.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass, field
from pathlib import Path

from contracts.artifacts import open_artifacts
from contracts.errors import MamdrError
from contracts.settings import Settings
from domain_registry.base import ModelVersion, Registry
from feature_store.base import EmbeddingStore
from serving.live import DomainTable, LiveModel, build_live
from serving.metrics import ServingMetrics

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


def artifact_dir(model: ModelVersion, artifacts_url: str) -> Path:
    """A registry artifact URI as a folder; a bare relative path is taken under ``artifacts_url``."""
    if "://" in model.artifact_uri:
        return open_artifacts(model.artifact_uri, "model artifact").root
    return open_artifacts(artifacts_url).root / model.artifact_uri


class Reloader:
    """Polls the registry and keeps ``state.live`` and ``state.domains`` current."""

    def __init__(self, state: ServingState) -> None:
        self.state = state

    def poll_once(self) -> bool:
        """One poll (blocking: call it in a thread). Returns True when a new version was swapped in."""
        state = self.state
        counter = state.registry.change_counter()
        if counter == state.domains.counter:
            return False
        state.domains = DomainTable.from_registry(state.registry, counter)
        target = state.registry.live_model()
        if target is None or (state.live is not None and state.live.version == target.id):
            return False
        return self.load(target)

    def load(self, target: ModelVersion) -> bool:
        state = self.state
        try:
            new = build_live(artifact_dir(target, state.settings.artifacts_url), state.settings.serving)
            if new.version != target.id:
                raise MamdrError(f"{target.artifact_uri} holds version {new.version!r}, not {target.id!r}")
        except Exception as exc:  # any failure keeps the old version serving
            reason = exc.message if isinstance(exc, MamdrError) else f"{type(exc).__name__}: {exc}"
            state.last_reload_error = f"version {target.id} refused: {reason}"
            state.metrics.reload_failures.inc()
            state.metrics.reloads.labels("failed").inc()
            log.error("reload refused, still serving %s: %s", state.live and state.live.version,
                      state.last_reload_error)
            return False
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
