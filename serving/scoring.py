"""One scoring request: one feature-store round trip, the cold-start fallback, one onnxruntime run.

Cold start (documented fallback): an unknown user is scored with the mean user vector and unknown
items with the mean item vector of the model that was exported (``Manifest.cold_start``; zeros if a
manifest has none); the response lists them (``cold_user``, ``cold_items``) and metrics count them.
Embeddings are read from the feature-store version the manifest names, so model and vectors match.
If that version was collected, the current one is used (logged, counted, ``degraded: true``). When the store fails,
later requests get 503 at once for ``STORE_BACKOFF_S`` (a minimal circuit breaker).
"""

from __future__ import annotations

import logging
import time

import numpy as np

from contracts.errors import BackendUnavailable, IntegrityError, MamdrError, NotFound
from feature_store.base import Lookup
from serving.errors import FeatureStoreUnavailable, ModelNotReady, ScoringUnavailable, TooManyItems
from serving.reload import ServingState
from serving.schemas import CTRRequest, CTRResponse

log = logging.getLogger(__name__)


def _ort_errors() -> tuple[type[BaseException], ...]:
    try:
        from onnxruntime.capi import onnxruntime_pybind11_state as ort_state
    except ImportError:  # pragma: no cover - onnxruntime is a serving dependency
        return (OSError,)
    names = ("Fail", "InvalidArgument", "RuntimeException", "InvalidGraph", "NoSuchFile", "EPFail",
             "NoModel", "ModelLoaded", "NotImplemented", "InvalidProtobuf")
    return (OSError, MemoryError, *(getattr(ort_state, n) for n in names if hasattr(ort_state, n)))


# What a model run may raise that is a server-side fault rather than a bug in this code.
_ORT_ERRORS = _ort_errors()

# After a failed read, requests answer 503 at once for this long instead of each waiting for the
# backend's timeouts on the event loop (which would also stall /healthz during an outage).
STORE_BACKOFF_S = 0.5


def sigmoid(logits: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-logits.astype(np.float64)))


def _lookup(state: ServingState, pinned: str | None, request: CTRRequest) -> Lookup:
    """Read the manifest's embedding version; if it was collected (e.g. after a rollback to an old
    model), read the current one instead: degraded but served, logged and counted."""
    try:
        return state.store.lookup(request.user_id, request.item_ids, version=pinned)
    except NotFound:
        if pinned is None:
            raise
    found = state.store.lookup(request.user_id, request.item_ids, version=None)
    state.metrics.feature_version_fallbacks.inc()
    if state.fallback_warned != pinned:
        state.fallback_warned = pinned
        log.warning("embedding version %s is gone; scoring with the current version %s", pinned, found.version)
    return found


def score(state: ServingState, domain: str, request: CTRRequest) -> CTRResponse:
    live = state.live
    if live is None:
        raise ModelNotReady("no model version is loaded yet; publish and promote one (see /readyz)")
    state.domains.check(domain)
    n = len(request.item_ids)
    cap = state.settings.serving.max_items
    if n > cap:
        raise TooManyItems(f"item_ids has {n} ids; send at most {cap} per request")
    contract = live.loaded.manifest.contract
    started = time.perf_counter()
    if started < state.store_down_until:  # fail fast: do not block the event loop on a dead backend
        raise FeatureStoreUnavailable("the feature store is unavailable; retry shortly")
    try:
        found = _lookup(state, live.feature_store_version, request)
    except NotFound as exc:
        raise FeatureStoreUnavailable(f"feature store: {exc.message}") from None
    except BackendUnavailable:
        state.store_down_until = time.perf_counter() + STORE_BACKOFF_S
        raise
    except MamdrError:
        raise
    except (OSError, TimeoutError) as exc:  # an I/O failure the store did not wrap is a backend failure
        state.store_down_until = time.perf_counter() + STORE_BACKOFF_S
        raise FeatureStoreUnavailable(f"feature store read failed ({type(exc).__name__}); retry") from None
    # Anything else is a bug: contracts.http logs it with its traceback and answers 500.
    state.metrics.feature_latency.observe(time.perf_counter() - started)
    label = state.domains.label(domain)
    user = live.cold_user if found.user is None else found.user
    items = found.items
    if user.shape != (contract.user_dim,) or items.shape != (n, contract.item_dim):
        raise FeatureStoreUnavailable(
            f"feature store vectors ({user.shape[-1]}-d users, {items.shape[-1]}-d items) do not fit model "
            f"{live.version} ({contract.user_dim}/{contract.item_dim}); publish matching embeddings"
        )
    cold_items = [request.item_ids[i] for i in found.missing_items]
    if cold_items:
        items = np.array(items, dtype=np.float32, copy=True)
        items[found.missing_items] = live.cold_item
        state.metrics.cold_items.labels(label).inc(len(cold_items))
    if found.user is None:
        state.metrics.cold_users.labels(label).inc()
    users = np.ascontiguousarray(np.broadcast_to(user.astype(np.float32, copy=False), (n, contract.user_dim)))
    items = np.ascontiguousarray(items, dtype=np.float32)
    try:
        logits = live.composer.logits(domain, users, items)
    except IntegrityError as exc:
        raise ScoringUnavailable(f"model {live.version}: {exc.message}") from None
    except _ORT_ERRORS as exc:  # onnxruntime refusing a run: reported as 503 (a Python bug stays a 500)
        log.error("onnxruntime refused to score with model %s: %s", live.version, exc)
        raise ScoringUnavailable(f"model {live.version} could not score ({type(exc).__name__})") from None
    return CTRResponse(
        scores=sigmoid(logits).tolist(), model_version=live.version,
        cold_user=found.user is None, cold_items=cold_items,
        degraded=live.feature_store_version is not None and found.version != live.feature_store_version,
    )
