"""One base error that knows its HTTP status and its CLI exit code; one FastAPI handler maps the first
(:mod:`contracts.http`), ``mamdr.cli`` the second.

Exit codes: 2 usage or configuration (fix the command), 3 not found / invalid data / conflict (fix the
input), 4 a backend is unavailable (retry later), 5 not allowed, 1 anything else the platform raised.
"""

from __future__ import annotations


class MamdrError(Exception):
    """Base of every error the platform raises on purpose. Messages name the fix."""

    http_status: int = 500
    exit_code: int = 1

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class ConfigError(MamdrError):
    """Bad configuration, URL, path or CLI argument."""

    http_status = 400
    exit_code = 2


class DataError(MamdrError):
    """Malformed or missing input data (dataset files, rows, events)."""

    http_status = 422
    exit_code = 3


class NotFound(MamdrError):
    http_status = 404
    exit_code = 3


class Conflict(MamdrError):
    http_status = 409
    exit_code = 3


class Gone(MamdrError):
    """The resource existed but was retired."""

    http_status = 410
    exit_code = 3


class Unauthorized(MamdrError):
    http_status = 401
    exit_code = 5


class Forbidden(MamdrError):
    http_status = 403
    exit_code = 5


class BackendUnavailable(MamdrError):
    """A backend (Redis, Kafka, the registry) cannot be reached; clients should retry."""

    http_status = 503
    exit_code = 4

    def __init__(self, message: str, retry_after_s: int = 1) -> None:
        super().__init__(message)
        self.retry_after_s = retry_after_s


class IntegrityError(MamdrError):
    """An artifact failed its checksum or shape verification."""

    http_status = 409
    exit_code = 3


def error_for_status(status: int, code: str, detail: str) -> MamdrError:
    """The reverse of the HTTP mapping, for clients of the platform's own APIs (``mamdr domains --api``): the
    error class whose ``http_status`` and code match (``IntegrityError`` and ``Conflict`` share 409)."""
    classes = [MamdrError, *_subclasses(MamdrError)]
    for cls in classes:
        if cls.http_status == status and _code(cls) == code:
            return cls(detail)
    for cls in classes:
        if cls.http_status == status and cls is not MamdrError:
            return cls(detail)
    return MamdrError(f"HTTP {status} {code}: {detail}")


def _subclasses(cls: type[MamdrError]) -> list[type[MamdrError]]:
    out: list[type[MamdrError]] = []
    for sub in cls.__subclasses__():
        out += [sub, *_subclasses(sub)]
    return out


def _code(cls: type[MamdrError]) -> str:
    import re

    return re.sub(r"(?<!^)(?=[A-Z])", "_", cls.__name__).lower()
