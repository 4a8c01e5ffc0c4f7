"""Global user/item embedding store shared by trainer and serving (torch-free).

``open_store(url)`` picks the backend by URL scheme, the way Feast picks its online store:
``redis://``/``rediss://`` (production), ``memory://[NAME]`` (one process, tests) and
``file://PATH`` (SQLite in WAL mode that several local processes share; the quickstart's default).
"""

from __future__ import annotations

from contracts.settings import FeatureStoreSettings
from contracts.urls import parse_url
from feature_store.base import KINDS, EmbeddingStore, Kind, Lookup, VersionInfo

SCHEMES = ("redis", "rediss", "memory", "file")

__all__ = ["KINDS", "SCHEMES", "EmbeddingStore", "Kind", "Lookup", "VersionInfo", "open_store"]


def open_store(url: str | None = None, settings: FeatureStoreSettings | None = None) -> EmbeddingStore:
    """Open the embedding store at ``url`` (default: ``settings.url``). Backends import lazily."""
    settings = settings or FeatureStoreSettings()
    parsed = parse_url(url or settings.url, SCHEMES, "feature store")
    if parsed.scheme == "memory":
        from feature_store.memory_store import MemoryStore

        return MemoryStore(parsed.raw.split("://", 1)[1], namespace=settings.namespace, dtype=settings.dtype)
    if parsed.scheme == "file":
        from feature_store.sqlite_store import SqliteStore

        return SqliteStore(parsed.path, settings)
    from feature_store.redis_store import RedisStore

    return RedisStore(parsed.raw, settings)
