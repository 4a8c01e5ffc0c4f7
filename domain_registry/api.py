"""The registry's HTTP admin API as a FastAPI router: serving mounts it, ``app.py`` runs it alone.

Every route needs ``Authorization: Bearer <admin token>`` (401 without, 403 when wrong; compared in
constant time), reads included: models, audit and domains are admin data. There is no built-in
credential: with no token configured, or one shorter than ``MIN_TOKEN_CHARS`` (a word or an example,
not a secret), the router is built *disabled*: every admin path answers 404 ``admin_disabled`` naming how to set a
token (and the app logs the same at startup). Scoring, health and metrics are not part of it.

Promote and rollback verify the target version first (``domain_registry.verify``): a version whose
artifacts do not load or differ from what was recorded at publish is refused with 409 and a reason.

Errors go through the one mapper (``contracts.http.map_exception``) via the route class, so the router
behaves the same in any app; API actors in the audit trail are ``api`` or ``api:<X-Actor>``.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import re
from collections.abc import Callable
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Header, Path, Query, Security
from fastapi.security import HTTPBearer
from pydantic import BaseModel, ConfigDict, Field, SecretStr

from contracts.errors import Forbidden, NotFound, Unauthorized
from contracts.events import DOMAIN_ID_PATTERN
from contracts.http import MappedRoute, error_responses, install_error_handlers
from contracts.settings import HOW_TO_SET_TOKEN, admin_token_problem
from domain_registry.base import VERSION_ID_PATTERN, AuditEntry, Domain, DomainStatus, ModelVersion, Registry
from domain_registry.rules import MAX_DISPLAY_NAME, MAX_SETTINGS_BYTES
from domain_registry.verify import verified_promote, verified_rollback

__all__ = ["AdminDisabled", "build_router", "install_error_handlers"]

log = logging.getLogger(__name__)

_ACTOR_RE = re.compile(r"^[A-Za-z0-9@._:-]{1,64}$")
# Every admin route can answer these (auth, validation, a bug, a registry outage).
_ROUTER_ERRORS = (401, 403, 422, 500, 503)


class AdminDisabled(NotFound):
    """The admin API is off because no usable token is configured (404 ``admin_disabled``)."""

    code = "admin_disabled"


# Id rules are documented in the schema and enforced by the registry (so the 422 names the rule).
_DOMAIN_ID_SCHEMA = {"pattern": DOMAIN_ID_PATTERN, "maxLength": 64}
_VERSION_SCHEMA = {"pattern": VERSION_ID_PATTERN, "maxLength": 128}


# Documents the scheme in OpenAPI (securitySchemes); ``admin`` itself checks the header.
_BEARER = HTTPBearer(auto_error=False, description="the admin token (MAMDR_REGISTRY__ADMIN_TOKEN)")

DomainPath = Annotated[str, Path(description="domain slug", json_schema_extra=_DOMAIN_ID_SCHEMA)]
VersionPath = Annotated[str, Path(description="model version id", json_schema_extra=_VERSION_SCHEMA)]


_NAME_SCHEMA = {"minLength": 1, "maxLength": MAX_DISPLAY_NAME, "pattern": r"\S"}
_SETTINGS_SCHEMA = {"properties": {"dr_k": {"type": "integer", "minimum": 1}},
                    "description": f"a JSON object of at most {MAX_SETTINGS_BYTES} bytes"}
_PATCH_SETTINGS_SCHEMA = {"properties": {"dr_k": {"type": ["integer", "null"], "minimum": 1}},
                          "description": "keys to set; a null value removes the key"}


class DomainCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")
    id: str = Field(json_schema_extra=_DOMAIN_ID_SCHEMA)  # type: ignore[arg-type]
    display_name: str | None = Field(None, json_schema_extra=_NAME_SCHEMA)  # type: ignore[arg-type]
    settings: dict[str, Any] | None = Field(None, json_schema_extra=_SETTINGS_SCHEMA)  # type: ignore[arg-type]


class DomainPatch(BaseModel):
    """Only the given fields change; ``settings`` is merged key by key (null removes a key)."""

    model_config = ConfigDict(extra="forbid")
    display_name: str | None = Field(None, json_schema_extra=_NAME_SCHEMA)  # type: ignore[arg-type]
    status: DomainStatus | None = None
    settings: dict[str, Any] | None = Field(None, json_schema_extra=_PATCH_SETTINGS_SCHEMA)  # type: ignore[arg-type]


# Every admin path and its methods: the disabled router answers them all with 404 admin_disabled.
ADMIN_PATHS: dict[str, list[str]] = {
    "/domains": ["GET", "POST"],
    "/domains/{domain_id}": ["GET", "PATCH", "DELETE"],
    "/models": ["GET"],
    "/models/rollback": ["POST"],
    "/models/{version}/promote": ["POST"],
    "/audit": ["GET"],
    "/changes": ["GET"],
}


def _disabled_router(reason: str) -> APIRouter:
    message = f"the admin API is disabled: {reason}; {HOW_TO_SET_TOKEN} and restart"
    router = APIRouter(prefix="/v1", tags=["registry"], route_class=MappedRoute)

    def disabled() -> None:
        raise AdminDisabled(message)

    for path, methods in ADMIN_PATHS.items():
        router.add_api_route(path, disabled, methods=methods, include_in_schema=False)
    return router


def build_router(get_registry: Callable[[], Registry], admin_token: str | SecretStr | None,
                 artifacts_url: str | None = None) -> APIRouter:
    """The ``/v1`` admin routes over the registry that ``get_registry()`` returns at request time.

    ``artifacts_url`` resolves relative artifact URIs when promote/rollback verify a version
    (default: the process settings'). Without a usable ``admin_token`` the routes are disabled.
    """
    problem = admin_token_problem(admin_token)
    if problem is not None:
        log.warning("registry admin API disabled: %s; %s", problem, HOW_TO_SET_TOKEN)
        return _disabled_router(problem)
    assert admin_token is not None
    secret = admin_token.get_secret_value() if isinstance(admin_token, SecretStr) else admin_token
    # Digests of equal length: compare_digest then leaks neither the content nor the token's length.
    expected = hashlib.sha256(secret.strip().encode()).digest()
    if artifacts_url is None:
        from contracts.settings import get_settings

        artifacts_url = get_settings().artifacts_url
    artifacts: str = artifacts_url

    def admin(authorization: str | None = Header(None, include_in_schema=False),
              x_actor: str | None = Header(None, description="name recorded in the audit trail as api:<name>"),
              _bearer: Any = Security(_BEARER)) -> str:
        """The actor recorded in the audit trail, once the bearer token checks out."""
        if not authorization:
            raise Unauthorized("missing Authorization header; send 'Authorization: Bearer <admin token>'")
        scheme, _, token = authorization.partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            raise Unauthorized("Authorization must be 'Bearer <admin token>'")
        if not hmac.compare_digest(hashlib.sha256(token.strip().encode()).digest(), expected):
            raise Forbidden("the admin token is wrong; use the value of MAMDR_REGISTRY__ADMIN_TOKEN")
        if x_actor is not None and _ACTOR_RE.match(x_actor):
            return f"api:{x_actor}"
        return "api"

    def registry() -> Registry:
        return get_registry()

    def errors(*codes: int) -> dict[int | str, dict[str, Any]]:
        return error_responses(*codes)

    router = APIRouter(prefix="/v1", tags=["registry"], route_class=MappedRoute,
                       dependencies=[Depends(admin)], responses=error_responses(*_ROUTER_ERRORS))

    @router.post("/domains", status_code=201, responses=errors(409, 422))
    def create_domain(body: DomainCreate, actor: str = Depends(admin),
                      reg: Registry = Depends(registry)) -> Domain:
        return reg.create_domain(body.id, display_name=body.display_name, settings=body.settings, actor=actor)

    @router.get("/domains", responses=errors())
    def list_domains(status: DomainStatus | None = None,
                     reg: Registry = Depends(registry)) -> dict[str, list[Domain]]:
        return {"domains": reg.list_domains(status)}

    @router.get("/domains/{domain_id}", responses=errors(404))
    def get_domain(domain_id: DomainPath, reg: Registry = Depends(registry)) -> Domain:
        return reg.get_domain(domain_id)

    @router.patch("/domains/{domain_id}", responses=errors(404, 409, 410))
    def patch_domain(domain_id: DomainPath, body: DomainPatch, actor: str = Depends(admin),
                     reg: Registry = Depends(registry)) -> Domain:
        return reg.update_domain(domain_id, display_name=body.display_name, status=body.status,
                                 settings=body.settings, actor=actor)

    @router.delete("/domains/{domain_id}", responses=errors(404, 409, 410))
    def retire_domain(domain_id: DomainPath, actor: str = Depends(admin),
                      reg: Registry = Depends(registry)) -> Domain:
        """Retire: the record stays (status ``retired``) and the id can never be reused."""
        return reg.update_domain(domain_id, status="retired", actor=actor)

    @router.get("/models", responses=errors())
    def list_models(limit: int = Query(100, ge=1, le=1000),
                    reg: Registry = Depends(registry)) -> dict[str, Any]:
        live = reg.live_model()
        return {"live": live.id if live else None, "models": reg.list_models(limit)}

    @router.post("/models/rollback", responses=errors(409))
    def rollback(actor: str = Depends(admin), reg: Registry = Depends(registry)) -> ModelVersion:
        """Restore the previous live version, once its artifacts verify (409 with the reason if not)."""
        return verified_rollback(reg, artifacts, actor)

    @router.post("/models/{version}/promote", responses=errors(404, 409))
    def promote(version: VersionPath, actor: str = Depends(admin), reg: Registry = Depends(registry)) -> ModelVersion:
        """Make a version live, once its artifacts verify (409 with the reason if not)."""
        return verified_promote(reg, version, artifacts, actor)

    @router.get("/audit", responses=errors())
    def audit(limit: int = Query(100, ge=1, le=1000),
              reg: Registry = Depends(registry)) -> dict[str, list[AuditEntry]]:
        return {"entries": reg.audit(limit)}

    @router.get("/changes", responses=errors())
    def changes(reg: Registry = Depends(registry)) -> dict[str, int]:
        """The change counter, for pollers that only speak HTTP."""
        return {"change_counter": reg.change_counter()}

    return router
