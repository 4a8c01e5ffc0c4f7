"""One mapping from platform errors to HTTP responses, shared by every FastAPI app (torch-free).

``MamdrError`` subclasses carry their status; the body is always ``{"error": ..., "detail": ...}``
(``error`` a stable snake_case code, ``detail`` the one-line reason naming the fix). Request
validation errors become the same shape with 422, so clients parse one format and never see a 500
for their own mistakes. ``BackendUnavailable`` adds ``Retry-After``; 401 adds ``WWW-Authenticate``.
"""

from __future__ import annotations

import re

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse

from contracts.errors import BackendUnavailable, MamdrError, Unauthorized


def error_code(exc: BaseException) -> str:
    """``NotFound`` -> ``not_found``; a stable code clients can switch on."""
    return re.sub(r"(?<!^)(?=[A-Z])", "_", type(exc).__name__).lower()


def error_response(exc: MamdrError) -> JSONResponse:
    headers: dict[str, str] = {}
    if isinstance(exc, BackendUnavailable):
        headers["Retry-After"] = str(max(1, int(exc.retry_after_s)))
    if isinstance(exc, Unauthorized):
        headers["WWW-Authenticate"] = "Bearer"
    body = {"error": error_code(exc), "detail": exc.message}
    return JSONResponse(status_code=exc.http_status, content=body, headers=headers)


def validation_response(exc: RequestValidationError) -> JSONResponse:
    """The first problem as one line: ``body.id: Field required``."""
    errors = exc.errors()
    first = errors[0] if errors else {}
    loc = ".".join(str(p) for p in first.get("loc", ())) or "request"
    more = f" (and {len(errors) - 1} more)" if len(errors) > 1 else ""
    return JSONResponse(status_code=422, content={"error": "invalid_request",
                                                  "detail": f"{loc}: {first.get('msg', 'invalid')}{more}"})


async def _mamdr_handler(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, MamdrError)
    return error_response(exc)


async def _validation_handler(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RequestValidationError)
    return validation_response(exc)


def install_error_handlers(app: FastAPI) -> None:
    """Map ``MamdrError`` (by its ``http_status``) and request validation errors on ``app``."""
    app.add_exception_handler(MamdrError, _mamdr_handler)
    app.add_exception_handler(RequestValidationError, _validation_handler)
