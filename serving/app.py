"""The serving app factory: scoring, health, metrics and the registry's admin API in one FastAPI app.

``create_app(settings, feature_store=..., registry=...)`` wires; stores not passed in are opened from
``settings`` in ``lifespan`` (and closed there). The live version is loaded in ``lifespan`` and kept
current by :class:`serving.reload.Reloader`. Every error of every route (the admin router's and the
framework's 404/405 included) goes through one mapper, ``contracts.http.map_exception``, with one
body ``{"error", "detail"}`` that the OpenAPI schema declares per route: 404 unknown domain, 410
retired, 413 body over ``serving.max_body_bytes`` (checked before parsing, every route), 422 bad
body, 503 + Retry-After when the feature store or a model is unavailable, 500 (logged with its
traceback) for a bug. Paused domains keep being served (pausing stops training). A response scored
with embeddings other than the ones the model was exported with says so (``degraded: true``).

Scoring (this endpoint and the KServe v2 ``infer`` of :mod:`serving.v2`) goes through one
:class:`serving.batching.Batcher`: requests that arrive together are scored in one feature-store read
and one onnxruntime run on one worker thread, so a stalled feature store blocks that thread for its
socket timeout, never /healthz. The body is read and validated in one step (pydantic-core parses the
JSON bytes straight into the typed request; FastAPI's own body handling parses to a dict first).
One process = one core; scale out with replicas (one process per pod, each scraped on its own).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI, Request, Response
from fastapi.exceptions import RequestValidationError
from pydantic import ValidationError

from contracts.errors import MamdrError
from contracts.http import COMMON_ERRORS, BodyLimitMiddleware, DirectRoute, error_responses, install_error_handlers
from contracts.settings import Settings, get_settings
from domain_registry.base import Registry
from feature_store.base import EmbeddingStore
from serving.batching import Batcher
from serving.metrics import NO_VERSION
from serving.reload import Reloader, ServingState
from serving.schemas import CTRRequest, CTRResponse, Readiness, parse_json
from serving.scoring import Job
from serving.v2 import add_v2_routes
from serving.versions import VERSION_HEADER, VERSION_HEADER_DOC, model_for, requested_version

log = logging.getLogger(__name__)
CTR_PATH = "/v1/domains/{domain}/ctr"
_JSON = "application/json"


def _state(request: Request) -> ServingState:
    return request.app.state.serving  # type: ignore[no-any-return]


def _batcher(request: Request) -> Batcher:
    return request.app.state.batcher  # type: ignore[no-any-return]


_CTR_BODY = {"requestBody": {"required": True, "content": {_JSON: {"schema": CTRRequest.model_json_schema()}}},
             "parameters": [VERSION_HEADER_DOC]}


def create_app(
    settings: Settings | None = None,
    *,
    feature_store: EmbeddingStore | None = None,
    registry: Registry | None = None,
) -> FastAPI:
    settings = settings or get_settings()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        opened: list[EmbeddingStore | Registry] = []
        store = feature_store
        if store is None:
            from feature_store import open_store

            store = open_store(settings.feature_store.url, settings.feature_store)
            opened.append(store)
        reg = registry
        if reg is None:
            from domain_registry import open_registry

            reg = open_registry(settings.registry.url, settings.registry)
            opened.append(reg)
        state = ServingState(settings=settings, store=store, registry=reg)
        app.state.serving = state
        batcher = app.state.batcher = Batcher(state)
        reloader = Reloader(state)
        try:
            await asyncio.to_thread(reloader.poll_once)
        except MamdrError as exc:  # not ready yet; the poller keeps trying
            log.warning("no model loaded at startup: %s", exc.message)
        except Exception:  # a bug must not keep the process from starting; the poller retries
            log.exception("no model loaded at startup (unexpected error)")
        task = asyncio.create_task(reloader.run(), name="mamdr-serving-reload")
        try:
            yield
        finally:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
            batcher.close()
            for backend in opened:
                backend.close()

    app = FastAPI(
        title="MAMDR serving", version="1", lifespan=lifespan, responses=error_responses(*COMMON_ERRORS),
        description="Per-domain CTR scoring with Θi = θS + θi on onnxruntime, on our endpoint and the KServe Open "
        'Inference Protocol v2 (`/v2`). Every error body is `{"error": "<code>", "detail": "<reason>"}`, under '
        '`/v2` `{"error": "<code>: <reason>"}`.',
    )

    def count(request: Request, domain: str, status: int, seconds: float | None = None,
              degraded: bool = False) -> None:
        """A finished scoring request (either protocol) in the metrics: status by domain and by the model version
        chosen for it (``request.state.model_version``, "none" if refused before), latency if answered, and
        whether it was scored with fallback embeddings."""
        state = _state(request)
        label = state.domains.label(domain)
        version = getattr(request.state, "model_version", NO_VERSION)
        state.metrics.requests.labels(label, str(status), version).inc()
        if seconds is not None:
            state.metrics.latency.labels(label, version).observe(seconds)
        if degraded:
            state.metrics.degraded.labels(label).inc()

    def count_error(request: Request, status: int) -> None:
        """Scoring requests answered with an error count in the requests metric (by domain, status)."""
        domain = request.path_params.get("domain")
        path = request.url.path
        if domain is not None and path.endswith(("/ctr", "/infer")) and hasattr(request.app.state, "serving"):
            count(request, domain, status)

    install_error_handlers(app, observer=count_error)
    app.add_middleware(BodyLimitMiddleware, max_bytes=settings.serving.max_body_bytes)

    async def ctr(domain: str, request: Request) -> Response:
        """Click probabilities of ``item_ids`` for ``user_id`` in ``domain`` (in item order)."""
        started = time.perf_counter()
        batcher = _batcher(request)
        batcher.entered += 1  # tells the batcher a request is on its way (see serving.batching)
        try:
            try:
                body = CTRRequest.model_validate(parse_json(await request.body()))
            except ValidationError as exc:  # the same 422 FastAPI's own body validation gives
                raise RequestValidationError([{**e, "loc": ("body", *e["loc"])} for e in exc.errors()]) from None
            except ValueError as exc:
                raise RequestValidationError([{"loc": ("body",), "msg": f"invalid JSON ({exc})",
                                               "type": "json_invalid"}]) from None
        finally:
            batcher.entered -= 1
        state = _state(request)
        pinned = requested_version(body.model_version, request.headers.get(VERSION_HEADER))
        model = await model_for(state, pinned, body.user_id)
        request.state.model_version = model.version
        result = (await batcher.score([Job(domain, body.user_id, body.item_ids)], model))[0]
        if isinstance(result, MamdrError):
            raise result  # contracts.http.map_exception answers it; count_error counts it
        count(request, domain, 200, time.perf_counter() - started, result.degraded)
        return Response(result.model_dump_json(), media_type=_JSON)

    app.router.add_api_route(CTR_PATH, ctr, methods=["POST"], response_model=CTRResponse, tags=["scoring"],
                             openapi_extra=_CTR_BODY, responses=error_responses(404, 410, 422, 503),
                             route_class_override=DirectRoute)
    add_v2_routes(app, _state, _batcher, count)  # v2 infer matched right after this route

    @app.get("/healthz", tags=["ops"])
    async def healthz() -> dict[str, str]:
        """The process is up (it may not have a model yet: see /readyz)."""
        return {"status": "ok"}

    @app.get("/readyz", response_model=Readiness, tags=["ops"],
             responses={503: {"model": Readiness,
                                   "description": "no verified model loaded yet, or the registry lost its data"}})
    async def readyz(request: Request) -> Response:
        """200 only with a verified model loaded; 503 otherwise."""
        state = _state(request)
        live = state.live
        lost = state.domains.lost
        body = Readiness(
            ready=live is not None and lost is None, model_version=live.version if live else None,
            composition=live.composer.name if live else None,
            domains_cached=live.composer.held() if live else 0,
            last_reload_error=f"domain registry {lost}" if lost else state.last_reload_error,
            versions_held=state.versions.held(),
        )
        return Response(body.model_dump_json(), status_code=200 if body.ready else 503, media_type=_JSON)

    @app.get("/metrics", tags=["ops"], response_class=Response,
             responses={200: {"content": {"text/plain": {"schema": {"type": "string"}}},
                              "description": "Prometheus text format"}})
    async def metrics(request: Request) -> Response:
        state = _state(request)
        if state.live is not None:
            state.metrics.domains_cached.set(state.live.composer.held())
            state.metrics.count_composer_misses(state.live.composer, state.live.composer.misses)
        state.metrics.keep_versions(state.served_versions())
        return Response(state.metrics.render(), media_type=state.metrics.content_type)

    from domain_registry.api import build_router

    app.include_router(build_router(lambda: app.state.serving.registry, settings.registry.admin_token,
                                    settings.artifacts_url))
    return app
