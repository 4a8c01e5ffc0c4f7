"""Global user/item embedding store shared by trainer and serving (torch-free).

``open_store(url)`` picks the backend by URL scheme, the way Feast picks its online store:
``redis://``/``rediss://`` (production), ``memory://[NAME]`` (one process, tests) and
``file://PATH`` (SQLite in WAL mode that several local processes share; the quickstart's default).
"""

from __future__ import annotations

from contracts.settings import FeatureStoreSettings
from contracts.urls import open_backend
from feature_store.base import KINDS, EmbeddingStore, Kind, Lookup, VersionInfo

# scheme -> "module:Class" (see contracts.urls); a backend module is imported only when its scheme is used.
BACKENDS: dict[str, str] = {
    "redis": "feature_store.redis_store:RedisStore",
    "rediss": "feature_store.redis_store:RedisStore",
    "memory": "feature_store.memory_store:MemoryStore",
    "file": "feature_store.sqlite_store:SqliteStore",
}
SCHEMES = tuple(BACKENDS)

__all__ = ["BACKENDS", "KINDS", "SCHEMES", "EmbeddingStore", "Kind", "Lookup", "VersionInfo", "open_store"]


def open_store(url: str | None = None, settings: FeatureStoreSettings | None = None) -> EmbeddingStore:
    """Open the embedding store at ``url`` (default: ``settings.url``)."""
    settings = settings or FeatureStoreSettings()
    return open_backend(url or settings.url, BACKENDS, "feature store", settings, EmbeddingStore)
