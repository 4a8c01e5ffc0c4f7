"""Domains, model versions and their audit trail (torch-free).

``open_registry(url)`` picks the backend by URL scheme:

- ``sqlite://PATH`` (``sqlite:///abs/registry.db``): the embedded default, one file that local
  processes share; durable across kill -9.
- ``redis://HOST:PORT/DB`` (or ``rediss://`` for TLS): what several serving replicas and the trainer
  share in a multi-replica deployment.

How trainer and serving notice changes: every write bumps ``change_counter()`` (one integer, one cheap
read). Serving polls it every ``ServingSettings.reload_poll_s`` and re-reads ``live_model()`` only
when it moved; ``Registry.wait_for_change(since, timeout_s)`` is that loop. The redis backend also
publishes the new counter value on the channel ``<prefix>changes`` (``RedisRegistry.channel``) so a
subscriber can wake at once; polling stays the source of truth (pub/sub messages can be missed).
"""

from __future__ import annotations

from contracts.settings import RegistrySettings
from contracts.urls import open_backend
from domain_registry.base import AuditEntry, Domain, DomainStatus, ModelStatus, ModelVersion, Registry

# scheme -> "module:Class" (see contracts.urls); a backend module is imported only when its scheme is used.
BACKENDS: dict[str, str] = {
    "sqlite": "domain_registry.sqlite_store:SqliteRegistry",
    "redis": "domain_registry.redis_store:RedisRegistry",
    "rediss": "domain_registry.redis_store:RedisRegistry",
}
SCHEMES = tuple(BACKENDS)

__all__ = [
    "BACKENDS",
    "SCHEMES",
    "AuditEntry",
    "Domain",
    "DomainStatus",
    "ModelStatus",
    "ModelVersion",
    "Registry",
    "open_registry",
]


def open_registry(url: str | None = None, settings: RegistrySettings | None = None) -> Registry:
    """Open the registry at ``url`` (default: ``settings.url``, then the default settings' url).

    Raises ``ConfigError`` for an unknown scheme or unusable path, ``BackendUnavailable`` when the
    server cannot be reached.
    """
    settings = settings or RegistrySettings()
    return open_backend(url or settings.url, BACKENDS, "registry", settings, Registry)
