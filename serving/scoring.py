"""Scoring: one feature-store read, the cold-start fallback, one onnxruntime run, for one request or a batch.

A :class:`Job` is one user and its candidates in one domain. :func:`score_many` scores several jobs (one
request's, or several requests' gathered by :mod:`serving.batching`) with one version: one ``MGET`` for a
single job, two (users, items) for a batch, and one onnxruntime run (``Composer.logits_many``). A job whose
domain or size is refused gets its own error; a feature-store or model failure fails the whole batch.

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
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from contracts.errors import BackendUnavailable, IntegrityError, MamdrError, NotFound
from feature_store.base import Lookup
from serving.errors import ORT_ERRORS, FeatureStoreUnavailable, ModelNotReady, ScoringUnavailable, TooManyItems
from serving.live import LiveModel
from serving.reload import ServingState
from serving.schemas import CTRRequest, CTRResponse

log = logging.getLogger(__name__)



# After a failed read, requests answer 503 at once for this long instead of each waiting for the
# backend's timeouts on the event loop (which would also stall /healthz during an outage).
STORE_BACKOFF_S = 0.5


def sigmoid(logits: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-logits.astype(np.float64)))


@dataclass(frozen=True, slots=True)
class Job:
    """One user and its candidates in one domain: the unit a batch is made of."""

    domain: str
    user_id: str
    item_ids: Sequence[str]


def _read(state: ServingState, version: str | None, jobs: Sequence[Job]) -> list[Lookup]:
    """The jobs' vectors from one embedding version: one read for one job, one per kind for a batch."""
    store = state.store
    if len(jobs) == 1:
        return [store.lookup(jobs[0].user_id, jobs[0].item_ids, version=version)]
    # one name for both reads: resolving "live" twice could read users and items of two versions
    name = version or store.current_version()
    if not name:
        raise NotFound("the feature store has no live embedding version")
    users, missing_users = store.get_many("user", [j.user_id for j in jobs], version=name)
    flat = [i for j in jobs for i in j.item_ids]
    items, missing_items = store.get_many("item", flat, version=name)
    cold_users = set(missing_users)
    found, start, m = [], 0, 0
    for k, job in enumerate(jobs):
        end = start + len(job.item_ids)
        missing = []
        while m < len(missing_items) and missing_items[m] < end:
            missing.append(missing_items[m] - start)
            m += 1
        found.append(Lookup(name, None if k in cold_users else users[k], items[start:end], missing))
        start = end
    return found


def _lookup(state: ServingState, pinned: str | None, jobs: Sequence[Job]) -> list[Lookup]:
    """Read the manifest's embedding version; if it was collected (e.g. after a rollback to an old
    model), read the current one instead: degraded but served, logged and counted."""
    try:
        return _read(state, pinned, jobs)
    except NotFound:
        if pinned is None:
            raise
    found = _read(state, None, jobs)
    state.metrics.feature_version_fallbacks.inc()
    if state.fallback_warned != pinned:
        state.fallback_warned = pinned
        log.warning("embedding version %s is gone; scoring with the current version %s", pinned, found[0].version)
    return found


def score(state: ServingState, domain: str, request: CTRRequest) -> CTRResponse:
    """One request of the per-domain endpoint (errors raised)."""
    result = score_many(state, [Job(domain, request.user_id, request.item_ids)])[0]
    if isinstance(result, MamdrError):
        raise result
    return result


def _check(state: ServingState, job: Job) -> None:
    state.domains.check(job.domain)
    n, cap = len(job.item_ids), state.settings.serving.max_items
    if n > cap:
        raise TooManyItems(f"item_ids has {n} ids; send at most {cap} per request")


def score_many(state: ServingState, jobs: Sequence[Job],
               model: LiveModel | None = None) -> list[CTRResponse | MamdrError]:
    """Score jobs with ``model`` (default: the live version), results in job order (a refused job gets its error
    in its place).

    Raises (for the whole batch) when no model is loaded, the feature store fails or the model cannot run.
    """
    live = model or state.live
    if live is None:
        raise ModelNotReady("no model version is loaded yet; publish and promote one (see /readyz)")
    results: list[CTRResponse | MamdrError | None] = [None] * len(jobs)
    accepted: list[int] = []
    for k, job in enumerate(jobs):
        try:
            _check(state, job)
        except MamdrError as exc:
            results[k] = exc
        else:
            accepted.append(k)
    if accepted:
        batch = [jobs[k] for k in accepted]
        for k, response in zip(accepted, _score_checked(state, live, batch), strict=True):
            results[k] = response
    return results  # type: ignore[return-value]


def _score_checked(state: ServingState, live: LiveModel, jobs: Sequence[Job]) -> list[CTRResponse]:
    contract = live.loaded.manifest.contract
    started = time.perf_counter()
    if started < state.store_down_until:  # fail fast: do not block on a dead backend
        raise FeatureStoreUnavailable("the feature store is unavailable; retry shortly")
    try:
        lookups = _lookup(state, live.feature_store_version, jobs)
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
    runs: list[tuple[str, np.ndarray, np.ndarray]] = []
    colds: list[list[str]] = []
    for job, found in zip(jobs, lookups, strict=True):
        n = len(job.item_ids)
        user = live.cold_user if found.user is None else found.user
        items = found.items
        if user.shape != (contract.user_dim,) or items.shape != (n, contract.item_dim):
            raise FeatureStoreUnavailable(
                f"feature store vectors ({user.shape[-1]}-d users, {items.shape[-1]}-d items) do not fit model "
                f"{live.version} ({contract.user_dim}/{contract.item_dim}); publish matching embeddings"
            )
        label = state.domains.label(job.domain)
        cold_items = [job.item_ids[i] for i in found.missing_items]
        if cold_items:
            items = np.array(items, dtype=np.float32, copy=True)
            items[found.missing_items] = live.cold_item
            state.metrics.cold_items.labels(label).inc(len(cold_items))
        if found.user is None:
            state.metrics.cold_users.labels(label).inc()
        users = np.ascontiguousarray(user, dtype=np.float32).reshape(1, contract.user_dim)  # one user, every row
        runs.append((job.domain, users, np.ascontiguousarray(items, dtype=np.float32)))
        colds.append(cold_items)
    try:
        logits = live.composer.logits_many(runs)
    except IntegrityError as exc:
        raise ScoringUnavailable(f"model {live.version}: {exc.message}") from None
    except ORT_ERRORS as exc:  # onnxruntime refusing a run: reported as 503 (a Python bug stays a 500)
        log.error("onnxruntime refused to score with model %s: %s", live.version, exc)
        raise ScoringUnavailable(f"model {live.version} could not score ({type(exc).__name__})") from None
    degraded_from = live.feature_store_version
    return [
        CTRResponse(
            scores=sigmoid(out).tolist(), model_version=live.version, cold_user=found.user is None,
            cold_items=cold, degraded=degraded_from is not None and found.version != degraded_from,
        )
        for out, found, cold in zip(logits, lookups, colds, strict=True)
    ]
