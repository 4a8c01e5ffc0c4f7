"""The one mapping from errors to HTTP responses, shared by every FastAPI app and route (torch-free).

Every error response, whoever raises it, has one body shape (:class:`ErrorBody`)::

    {"error": "<stable snake_case code>", "detail": "<one line naming the fix>"}

except under ``/v2`` (the KServe Open Inference Protocol), whose clients expect its error shape
(:class:`V2ErrorBody`): ``{"error": "<code>: <reason>"}``. Same status, same code and reason; only the
rendering differs, chosen by the request path in :func:`error_body`.

:func:`map_exception` is the only place an exception becomes a response:

- ``MamdrError`` subclasses carry their status (``NotFound`` -> 404 ``not_found``);
  ``BackendUnavailable`` adds ``Retry-After``, ``Unauthorized`` adds ``WWW-Authenticate``.
- request validation errors -> 422 ``invalid_request`` (the first problem as one line).
- the framework's own ``HTTPException`` (unknown path 404, wrong method 405 with ``Allow``,
  unparsable body 400) -> the same shape, code from the status (``method_not_allowed``).
- anything else is a bug, not an outage: logged with its traceback, answered 500 ``internal_error``.

It is reached two ways, both calling the same function: :class:`MappedRoute` (the route class of
every router, so a router maps its errors even in an app without handlers) and the app-level
handlers :func:`install_error_handlers` adds (for errors raised outside any route: unknown paths,
wrong methods, middleware). ``ERROR_RESPONSES`` / :func:`error_responses` declare the same body
in the OpenAPI schema, so every status code a route can answer is documented.

:class:`BodyLimitMiddleware` answers 413 before a too-large body is parsed or buffered.
"""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Awaitable, Callable
from http import HTTPStatus
from typing import Any

from fastapi import FastAPI, Request, Response
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from fastapi.routing import APIRoute
from pydantic import BaseModel
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.routing import Match
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from contracts.errors import BackendUnavailable, MamdrError, Unauthorized

log = logging.getLogger(__name__)

# Observers see (request, status) of every error response the mapper builds (serving counts them).
ErrorObserver = Callable[[Request, int], None]


class ErrorBody(BaseModel):
    """The body of every error response."""

    error: str
    detail: str


class V2ErrorBody(BaseModel):
    """The body of every error response under ``/v2`` (Open Inference Protocol): ``"<code>: <reason>"``."""

    error: str


V2_PREFIX = "/v2"


def is_v2(path: str) -> bool:
    """Whether a request path is under the Open Inference Protocol's prefix (and answers in its shape)."""
    return path == V2_PREFIX or path.startswith(V2_PREFIX + "/")


_DESCRIPTIONS = {
    400: "malformed request (e.g. a body that cannot be read)",
    401: "missing or malformed Authorization header",
    403: "wrong admin token",
    404: "unknown path or resource (or the admin API is disabled)",
    405: "method not allowed on this path",
    409: "conflict (duplicate id, nothing to roll back, or a version that fails verification)",
    410: "the resource was retired",
    413: "request body larger than serving.max_body_bytes",
    422: "invalid request (body, path or query)",
    500: "unexpected server error (logged with a traceback)",
    503: "a backend is unavailable or the server is at its concurrency limit; retry (Retry-After)",
}

ERROR_RESPONSES: dict[int | str, dict[str, Any]] = {
    code: {"model": ErrorBody, "description": text} for code, text in _DESCRIPTIONS.items()
}

# What any route can answer, whatever it does: declared app-wide (FastAPI(responses=...)).
COMMON_ERRORS = (400, 405, 413, 422, 500, 503)


def error_responses(*codes: int) -> dict[int | str, dict[str, Any]]:
    """OpenAPI ``responses`` for these error codes, all with the ``ErrorBody`` schema."""
    return {code: ERROR_RESPONSES[code] for code in codes}


def v2_error_responses(*codes: int) -> dict[int | str, dict[str, Any]]:
    """OpenAPI ``responses`` of ``/v2`` routes: the same codes with the ``V2ErrorBody`` schema."""
    return {code: {"model": V2ErrorBody, "description": _DESCRIPTIONS[code]} for code in codes}


def error_code(exc: BaseException) -> str:
    """``NotFound`` -> ``not_found``; a stable code clients can switch on (``code`` overrides)."""
    code = getattr(exc, "code", None)
    if isinstance(code, str) and code:
        return code
    return re.sub(r"(?<!^)(?=[A-Z])", "_", type(exc).__name__).lower()


def status_code_name(status: int) -> str:
    """405 -> ``method_not_allowed``; the code of a bare HTTP status."""
    try:
        phrase = HTTPStatus(status).phrase
    except ValueError:
        return "http_error"
    return re.sub(r"[^a-z0-9]+", "_", phrase.lower()).strip("_")


def error_content(code: str, detail: str, v2: bool = False) -> dict[str, str]:
    """The one error body, in the v2 shape when ``v2``."""
    return {"error": f"{code}: {detail}"} if v2 else {"error": code, "detail": detail}


def error_body(status: int, code: str, detail: str, headers: dict[str, str] | None = None,
               v2: bool = False) -> JSONResponse:
    return JSONResponse(status_code=status, content=error_content(code, detail, v2), headers=headers)


def error_response(exc: MamdrError, v2: bool = False) -> JSONResponse:
    headers: dict[str, str] = {}
    if isinstance(exc, BackendUnavailable):
        headers["Retry-After"] = str(max(1, int(exc.retry_after_s)))
    if isinstance(exc, Unauthorized):
        headers["WWW-Authenticate"] = "Bearer"
    return error_body(exc.http_status, error_code(exc), exc.message, headers, v2)


def validation_response(exc: RequestValidationError, v2: bool = False) -> JSONResponse:
    """The first problem as one line: ``body.id: Field required``."""
    errors = exc.errors()
    first = errors[0] if errors else {}
    loc = ".".join(str(p) for p in first.get("loc", ())) or "request"
    more = f" (and {len(errors) - 1} more)" if len(errors) > 1 else ""
    return error_body(422, "invalid_request", f"{loc}: {first.get('msg', 'invalid')}{more}", v2=v2)


def http_exception_response(exc: StarletteHTTPException, v2: bool = False) -> JSONResponse:
    """The framework's own errors (404 unknown path, 405, 400 unreadable body) in the one shape."""
    detail = exc.detail if isinstance(exc.detail, str) else json.dumps(exc.detail)
    if exc.status_code == 404 and detail == "Not Found":
        detail = "no such path; see /docs for the API"
    elif exc.status_code == 405:
        detail = f"method not allowed; allowed: {(exc.headers or {}).get('Allow', 'see /docs')}"
    return error_body(exc.status_code, status_code_name(exc.status_code), detail, dict(exc.headers or {}), v2)


_METHODS = ("GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS")


def allowed_methods(request: Request) -> list[str]:
    """Every method some route of the app accepts on this path (Starlette's 405 names only one route's)."""
    routes = getattr(request.app, "routes", ())
    return [m for m in _METHODS
            if any(route.matches({**request.scope, "method": m})[0] == Match.FULL for route in routes)]


def map_exception(request: Request | None, exc: BaseException) -> Response:
    """The one exception -> response mapping (see the module docstring)."""
    v2 = request is not None and is_v2(request.url.path)
    if isinstance(exc, MamdrError):
        response: Response = error_response(exc, v2)
    elif isinstance(exc, RequestValidationError):
        response = validation_response(exc, v2)
    elif isinstance(exc, StarletteHTTPException):
        if exc.status_code == 405 and request is not None and (methods := allowed_methods(request)):
            exc = StarletteHTTPException(405, exc.detail, {**(exc.headers or {}), "Allow": ", ".join(methods)})
        response = http_exception_response(exc, v2)
    else:
        where = f"{request.method} {request.url.path}" if request is not None else "request"
        log.error("unexpected error in %s: %s: %s", where, type(exc).__name__, exc, exc_info=exc)
        response = error_body(500, "internal_error",
                              f"unexpected server error ({type(exc).__name__}); it was logged, please report it", v2=v2)
    if request is not None:
        observer: ErrorObserver | None = getattr(request.app.state, "error_observer", None)
        if observer is not None:
            try:
                observer(request, response.status_code)
            except Exception:  # an observer must never turn an answer into a crash
                log.exception("error observer failed")
    return response


class MappedRoute(APIRoute):
    """Route class of every router: errors raised in the route (dependencies, body, handler) are
    mapped here by :func:`map_exception`, so a router behaves the same in any app."""

    def get_route_handler(self) -> Callable[[Request], Awaitable[Response]]:
        handler = super().get_route_handler()

        async def run(request: Request) -> Response:
            try:
                return await handler(request)
            except Exception as exc:
                return map_exception(request, exc)

        return run


class DirectRoute(APIRoute):
    """Route class of the hot scoring endpoints, whose only parameters are path parameters and the
    ``Request`` (the body is read and validated by the endpoint itself): the endpoint is called directly,
    without FastAPI's per-request dependency solving (a quarter of the framework's time per request in a
    profile of the scoring endpoint), while the route stays an ``APIRoute`` so the OpenAPI schema still
    documents it. Errors are mapped as in :class:`MappedRoute`."""

    def get_route_handler(self) -> Callable[[Request], Awaitable[Response]]:
        endpoint = self.endpoint

        async def run(request: Request) -> Response:
            try:
                return await endpoint(request=request, **request.path_params)  # type: ignore[no-any-return]
            except Exception as exc:
                return map_exception(request, exc)

        return run


async def _handler(request: Request, exc: Exception) -> Response:
    return map_exception(request, exc)


def install_error_handlers(app: FastAPI, observer: ErrorObserver | None = None) -> None:
    """Route every error of ``app`` through :func:`map_exception`; call it before adding routes.

    Sets ``MappedRoute`` as the app's route class, and app-level handlers for what is raised outside
    routes (unknown path, wrong method, middleware). ``observer(request, status)`` sees every error.
    """
    app.router.route_class = MappedRoute
    app.state.error_observer = observer
    for kind in (MamdrError, RequestValidationError, StarletteHTTPException, Exception):
        app.add_exception_handler(kind, _handler)


# -- request body limit -------------------------------------------------------------------------------


class _BodyTooLarge(Exception):
    pass


def _raw_error(status: int, code: str, detail: str, path: str = "") -> tuple[Message, Message]:
    body = json.dumps(error_content(code, detail, is_v2(path))).encode()
    start: Message = {"type": "http.response.start", "status": status, "headers": [
        (b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()),
        (b"connection", b"close")]}
    return start, {"type": "http.response.body", "body": body}


class BodyLimitMiddleware:
    """ASGI middleware: 413 for a body over ``max_bytes``, before anything parses or buffers it.

    A ``Content-Length`` over the limit is refused without reading a byte; a body without one
    (chunked) is counted as it streams and refused as soon as the count passes the limit, whatever
    the route was doing with it (its own answer is dropped). The server keeps at most one
    ``max_bytes`` of a request body in memory.
    """

    def __init__(self, app: ASGIApp, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = int(max_bytes)

    def _too_large(self, path: str) -> tuple[Message, Message]:
        return _raw_error(413, "payload_too_large",
                          f"request body exceeds {self.max_bytes} bytes (serving.max_body_bytes)", path)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        for name, value in scope.get("headers", ()):
            if name == b"content-length":
                if not value.strip().isdigit():
                    for message in _raw_error(400, "bad_request", "Content-Length is not a number", scope["path"]):
                        await send(message)
                    return
                if int(value) > self.max_bytes:
                    for message in self._too_large(scope["path"]):
                        await send(message)
                    return
        received = 0
        exceeded = False
        started = False

        async def limited_receive() -> Message:
            nonlocal received, exceeded
            if exceeded:
                raise _BodyTooLarge
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.max_bytes:
                    exceeded = True
                    raise _BodyTooLarge
            return message

        async def guarded_send(message: Message) -> None:
            nonlocal started
            if exceeded:
                return  # the route's answer to a cut-off body is replaced by the 413 below
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        try:
            await self.app(scope, limited_receive, guarded_send)
        except Exception:
            if not exceeded:
                raise
        if exceeded and not started:
            for message in self._too_large(scope["path"]):
                await send(message)
