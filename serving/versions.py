"""Versions besides the live one: a request may pin a published version, and a canary takes a slice of users.

A request names a version with ``model_version`` (the v1 body, v2 ``parameters.model_version`` or the v2
URL ``/v2/models/{domain}/versions/{version}/infer``) or the ``X-Model-Version`` header. The live version is
``state.live``; any other published version is loaded on first use (off the event loop, verified like a
reload) and held in a small LRU of ``serving.max_extra_versions`` versions, each with its own composer, so
memory stays bounded by (1 + that) versions' held domains. A version the registry does not know (never
published, or deleted by retention), one rolled back, or one whose files are gone is refused with 404 and
the reason; pinning is off with ``max_extra_versions = 0``.

Canary: with ``serving.canary_version`` and ``serving.canary_fraction`` set, a request that pins nothing is
served by the canary when its user falls in the slice: ``canary_slice(user, version) < fraction``, a hash
of the user id salted with the version, so a user always sees the same version during one canary and each
canary draws its own slice. The reload poller loads the canary (never a request: the event loop must not
wait for a load) and it is never evicted by pinned versions. Until it is held, or when it cannot be served
(unknown, refused), its slice gets the live version (logged once, counted in
``mamdr_serving_canary_fallbacks_total``): a bad canary never fails traffic that did not ask for it.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import threading
from collections import OrderedDict
from typing import TYPE_CHECKING

from contracts.artifacts import version_dir_of
from contracts.errors import DataError, IntegrityError, MamdrError, NotFound
from domain_registry.base import is_version_id
from serving.errors import ModelNotReady, ScoringUnavailable
from serving.live import LiveModel, build_live

if TYPE_CHECKING:
    from serving.reload import ServingState

log = logging.getLogger(__name__)
VERSION_HEADER = "x-model-version"
# The header in the OpenAPI schema of the scoring routes (they read it themselves: no FastAPI parameter).
VERSION_HEADER_DOC = {"name": "X-Model-Version", "in": "header", "required": False, "schema": {"type": "string"},
                      "description": "score with this published version instead of the live one (404 if it is "
                                     "unknown, rolled back or deleted)"}
_SCALE = float(1 << 64)


class UnknownModelVersion(NotFound):
    """A pinned version that cannot be served: unknown, deleted, rolled back or its files gone (404)."""

    code = "model_version_not_found"


def canary_slice(user_id: str, version: str) -> float:
    """Where a user falls in [0, 1) for the canary ``version`` (stable across processes and restarts)."""
    digest = hashlib.blake2b(f"{version}\x00{user_id}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big") / _SCALE


class VersionConflict(DataError):
    """A request naming two different versions (422)."""

    code = "invalid_request"


def requested_version(*values: str | None) -> str | None:
    """The one version a request names (body/parameter/URL and header); 422 when they disagree."""
    named = {v for v in values if v}
    if len(named) > 1:
        raise VersionConflict(f"the request names model versions {sorted(named)}; name one (the "
                                  "model_version field, parameter or URL, and the X-Model-Version header must agree)")
    version = named.pop() if named else None
    if version is not None and not is_version_id(version):
        raise UnknownModelVersion(f"model version {version!r} is not a version id (letters, digits, '.', '_', '-')")
    return version


class VersionPool:
    """Published versions other than the live one, loaded on demand, at most ``capacity`` held (LRU)."""

    def __init__(self, capacity: int) -> None:
        self.capacity = capacity
        self._held: OrderedDict[str, LiveModel] = OrderedDict()
        self._lock = threading.Lock()
        self._loading: dict[str, threading.Lock] = {}
        self._canary_warned: str | None = None
        self._canary_tried: tuple[str, int] | None = None  # (version, registry counter) of a failed canary load

    def held(self) -> list[str]:
        with self._lock:
            return list(self._held)

    def peek(self, state: ServingState, version: str) -> LiveModel | None:
        """The model of ``version`` if it is live or held (no I/O: safe on the event loop)."""
        live = state.live
        if live is not None and live.version == version:
            return live
        with self._lock:
            model = self._held.get(version)
            if model is not None:
                self._held.move_to_end(version)
            return model

    def get(self, state: ServingState, version: str) -> LiveModel:
        """The model of ``version``, loading it if needed (blocking: call it in a thread)."""
        found = self.peek(state, version)
        if found is not None:
            return found
        if self.capacity == 0:
            raise UnknownModelVersion(f"model version {version!r} is not the live one and serving holds no other "
                                      "(serving.max_extra_versions = 0)")
        with self._lock:
            gate = self._loading.setdefault(version, threading.Lock())
        with gate:  # one load per version, however many requests ask for it at once
            found = self.peek(state, version)
            if found is not None:
                return found
            model = self._load(state, version)
            with self._lock:
                self._held[version] = model
                self._held.move_to_end(version)
                canary = state.settings.serving.canary_version
                while len(self._held) > self.capacity:
                    dropped = next(v for v in self._held if v != canary)  # the canary stays held
                    self._held.pop(dropped)
                    log.info("model version %s no longer held (serving.max_extra_versions = %d)", dropped,
                             self.capacity)
                self._loading.pop(version, None)
            return model

    def _load(self, state: ServingState, version: str) -> LiveModel:
        try:
            record = state.registry.get_model(version)
        except NotFound:
            raise UnknownModelVersion(f"model version {version!r} is not published (or retention deleted it); "
                                      f"the live version is {state.live.version if state.live else None}") from None
        if record.status == "rolled_back":
            raise UnknownModelVersion(f"model version {version!r} was rolled back; it is not served")
        try:
            folder = version_dir_of(record.artifact_uri, state.settings.artifacts_url)
            model = build_live(folder, state.settings.serving, manifest_sha256=record.manifest_sha256)
        except NotFound:
            raise UnknownModelVersion(f"model version {version!r} is retired: its files were deleted") from None
        except IntegrityError as exc:
            raise ScoringUnavailable(f"model version {version!r} fails verification: {exc.message}") from None
        if model.version != version:
            raise ScoringUnavailable(f"{record.artifact_uri} holds version {model.version!r}, not {version!r}")
        log.info("holding model version %s beside the live one", version)
        return model

    def prune(self, state: ServingState) -> None:
        """Drop held versions the registry no longer serves (deleted or rolled back); after a registry change."""
        for version in self.held():
            try:
                record = state.registry.get_model(version)
            except NotFound:
                record = None
            if record is None or record.status == "rolled_back":
                with self._lock:
                    self._held.pop(version, None)
                log.info("model version %s dropped: %s", version, "deleted" if record is None else "rolled back")

    def canary(self, state: ServingState) -> LiveModel | None:
        """The canary's model if it is held, else None (its slice gets the live version). No I/O."""
        serving = state.settings.serving
        version = serving.canary_version
        if not version or serving.canary_fraction <= 0:
            return None
        found = self.peek(state, version)
        if found is None:
            state.metrics.canary_fallbacks.inc()
        return found

    def ensure_canary(self, state: ServingState, counter: int) -> None:
        """Load the canary if it is not held (in the reload poller's thread). A failed load is retried once the
        registry changes (e.g. the version gets published)."""
        version = state.settings.serving.canary_version
        if not version or state.settings.serving.canary_fraction <= 0 or self.peek(state, version) is not None:
            return
        if self._canary_tried == (version, counter):
            return
        try:
            self.get(state, version)
        except MamdrError as exc:
            self._canary_tried = (version, counter)
            if self._canary_warned != version:
                self._canary_warned = version
                log.error("canary version %s cannot be served, its slice gets the live version: %s", version,
                          exc.message)
        else:
            self._canary_tried = None


def route(state: ServingState, user_id: str, canary: LiveModel | None) -> LiveModel:
    """The model a request that pins nothing is served by: the canary for its slice of users, else live."""
    live = state.live
    if live is None:
        raise ModelNotReady("no model version is loaded yet; publish and promote one (see /readyz)")
    fraction = state.settings.serving.canary_fraction
    if canary is not None and canary is not live and canary_slice(user_id, canary.version) < fraction:
        return canary
    return live


async def model_for(state: ServingState, pinned: str | None, user_id: str) -> LiveModel:
    """The model that scores a request: its pinned version (loaded in a worker thread on first use), else the
    canary for the user's slice, else the live version."""
    if pinned is None:
        return route(state, user_id, state.versions.canary(state))
    found = state.versions.peek(state, pinned)
    if found is None:
        found = await asyncio.to_thread(state.versions.get, state, pinned)
    return found
