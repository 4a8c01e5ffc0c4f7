"""The registry's HTTP admin API as a FastAPI router: serving mounts it, ``app.py`` runs it alone.

Reads are open; writes need ``Authorization: Bearer <admin token>`` (401 without, 403 when wrong).
Errors are ``{"error", "detail"}`` with the status the ``MamdrError`` carries; the router maps them
itself (through its route class) so it behaves the same in any app, and apps may also call
``install_error_handlers(app)`` for their own routes.
"""

from __future__ import annotations

import hmac
import re
from collections.abc import Awaitable, Callable
from typing import Any

from fastapi import APIRouter, Depends, Header, Query, Request, Response
from fastapi.exceptions import RequestValidationError
from fastapi.routing import APIRoute
from pydantic import BaseModel, ConfigDict

from contracts.errors import ConfigError, Forbidden, MamdrError, Unauthorized
from contracts.http import error_response, install_error_handlers, validation_response
from domain_registry.base import AuditEntry, Domain, DomainStatus, ModelVersion, Registry

__all__ = ["build_router", "install_error_handlers"]

_ACTOR_RE = re.compile(r"^[A-Za-z0-9@._:-]{1,64}$")


class _ErrorMappingRoute(APIRoute):
    """Turns platform and validation errors into JSON responses even if the app installed no handler."""

    def get_route_handler(self) -> Callable[[Request], Awaitable[Response]]:
        handler = super().get_route_handler()

        async def run(request: Request) -> Response:
            try:
                return await handler(request)
            except MamdrError as exc:
                return error_response(exc)
            except RequestValidationError as exc:
                return validation_response(exc)

        return run


class DomainCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")
    id: str  # validated by the registry so the 422 names the slug rule
    display_name: str | None = None
    settings: dict[str, Any] | None = None


class DomainPatch(BaseModel):
    """Only the given fields change; ``settings`` is merged key by key (null removes a key)."""

    model_config = ConfigDict(extra="forbid")
    display_name: str | None = None
    status: DomainStatus | None = None
    settings: dict[str, Any] | None = None


def build_router(get_registry: Callable[[], Registry], admin_token: str) -> APIRouter:
    """The ``/v1`` admin routes over the registry that ``get_registry()`` returns at request time."""
    if not admin_token:
        raise ConfigError("the registry admin token is empty; set MAMDR_REGISTRY__ADMIN_TOKEN")
    expected = admin_token.encode()

    def admin(authorization: str | None = Header(None),
              x_actor: str | None = Header(None)) -> str:
        """The actor recorded in the audit trail, once the bearer token checks out."""
        if not authorization:
            raise Unauthorized("missing Authorization header; send 'Authorization: Bearer <admin token>'")
        scheme, _, token = authorization.partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            raise Unauthorized("Authorization must be 'Bearer <admin token>'")
        if not hmac.compare_digest(token.strip().encode(), expected):
            raise Forbidden("the admin token is wrong; use the value of MAMDR_REGISTRY__ADMIN_TOKEN")
        if x_actor is not None and _ACTOR_RE.match(x_actor):
            return f"api:{x_actor}"
        return "api"

    def registry() -> Registry:
        return get_registry()

    router = APIRouter(prefix="/v1", tags=["registry"], route_class=_ErrorMappingRoute)

    @router.post("/domains", status_code=201)
    def create_domain(body: DomainCreate, actor: str = Depends(admin),
                      reg: Registry = Depends(registry)) -> Domain:
        return reg.create_domain(body.id, display_name=body.display_name, settings=body.settings, actor=actor)

    @router.get("/domains")
    def list_domains(status: DomainStatus | None = None,
                     reg: Registry = Depends(registry)) -> dict[str, list[Domain]]:
        return {"domains": reg.list_domains(status)}

    @router.get("/domains/{domain_id}")
    def get_domain(domain_id: str, reg: Registry = Depends(registry)) -> Domain:
        return reg.get_domain(domain_id)

    @router.patch("/domains/{domain_id}")
    def patch_domain(domain_id: str, body: DomainPatch, actor: str = Depends(admin),
                     reg: Registry = Depends(registry)) -> Domain:
        return reg.update_domain(domain_id, display_name=body.display_name, status=body.status,
                                 settings=body.settings, actor=actor)

    @router.delete("/domains/{domain_id}")
    def retire_domain(domain_id: str, actor: str = Depends(admin),
                      reg: Registry = Depends(registry)) -> Domain:
        """Retire: the record stays (status ``retired``) and the id can never be reused."""
        return reg.update_domain(domain_id, status="retired", actor=actor)

    @router.get("/models")
    def list_models(limit: int = Query(100, ge=1, le=1000),
                    reg: Registry = Depends(registry)) -> dict[str, Any]:
        live = reg.live_model()
        return {"live": live.id if live else None, "models": reg.list_models(limit)}

    @router.post("/models/rollback")
    def rollback(actor: str = Depends(admin), reg: Registry = Depends(registry)) -> ModelVersion:
        return reg.rollback(actor=actor)

    @router.post("/models/{version}/promote")
    def promote(version: str, actor: str = Depends(admin), reg: Registry = Depends(registry)) -> ModelVersion:
        return reg.promote(version, actor=actor)

    @router.get("/audit")
    def audit(limit: int = Query(100, ge=1, le=1000),
              reg: Registry = Depends(registry)) -> dict[str, list[AuditEntry]]:
        return {"entries": reg.audit(limit)}

    @router.get("/changes")
    def changes(reg: Registry = Depends(registry)) -> dict[str, int]:
        """The change counter, for pollers that only speak HTTP."""
        return {"change_counter": reg.change_counter()}

    return router
