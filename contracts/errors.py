"""One base error that knows its HTTP status; one FastAPI handler maps it (see serving)."""

from __future__ import annotations


class MamdrError(Exception):
    """Base of every error the platform raises on purpose. Messages name the fix."""

    http_status: int = 500

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class ConfigError(MamdrError):
    """Bad configuration, URL, path or CLI argument."""

    http_status = 400


class DataError(MamdrError):
    """Malformed or missing input data (dataset files, rows, events)."""

    http_status = 422


class NotFound(MamdrError):
    http_status = 404


class Conflict(MamdrError):
    http_status = 409


class Gone(MamdrError):
    """The resource existed but was retired."""

    http_status = 410


class Unauthorized(MamdrError):
    http_status = 401


class Forbidden(MamdrError):
    http_status = 403


class BackendUnavailable(MamdrError):
    """A backend (Redis, Kafka, the registry) cannot be reached; clients should retry."""

    http_status = 503

    def __init__(self, message: str, retry_after_s: int = 1) -> None:
        super().__init__(message)
        self.retry_after_s = retry_after_s


class IntegrityError(MamdrError):
    """An artifact failed its checksum or shape verification."""

    http_status = 409
