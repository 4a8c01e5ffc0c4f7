"""The admin API on its own (``uvicorn --factory domain_registry.app:create_admin_app``).

Serving mounts the same router next to its scoring routes; this app is for deployments that run
the registry API as a separate service.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI

from contracts.errors import BackendUnavailable
from contracts.http import COMMON_ERRORS, BodyLimitMiddleware, error_responses, install_error_handlers
from contracts.settings import RegistrySettings, Settings, get_settings
from domain_registry import open_registry
from domain_registry.api import build_router
from domain_registry.base import Registry


def create_admin_app(settings: Settings | RegistrySettings | None = None) -> FastAPI:
    """An app serving ``/v1`` registry routes and ``/healthz``; the registry opens in ``lifespan``."""
    if settings is None:
        settings = get_settings()
    full = settings if isinstance(settings, Settings) else get_settings()
    reg_settings = settings.registry if isinstance(settings, Settings) else settings

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        app.state.registry = open_registry(reg_settings.url, reg_settings)
        try:
            yield
        finally:
            app.state.registry.close()

    app = FastAPI(title="MAMDR domain registry", lifespan=lifespan, responses=error_responses(*COMMON_ERRORS))
    install_error_handlers(app)
    app.add_middleware(BodyLimitMiddleware, max_bytes=full.serving.max_body_bytes)

    def get_registry() -> Registry:
        registry: Registry | None = getattr(app.state, "registry", None)
        if registry is None:
            raise BackendUnavailable("the registry is not open yet; retry shortly")
        return registry

    app.include_router(build_router(get_registry, reg_settings.admin_token, full.artifacts_url))

    @app.get("/healthz")
    def healthz() -> dict[str, object]:
        return {"status": "ok", "change_counter": get_registry().change_counter()}

    return app
