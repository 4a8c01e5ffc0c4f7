"""Backend URLs: ``scheme://rest``, and the one way every URL-picked backend is chosen.

Each backend family (stream, feature store, registry, artifacts) keeps ONE table, in its own package,
of ``scheme -> "module:Class"`` and opens a URL with :func:`open_backend`::

    BACKENDS = {"file": "stream.file_stream:FileStream", "kafka": "stream.kafka_stream:KafkaStream"}
    open_backend(url, BACKENDS, "stream", settings, Stream)

The class is imported only when its scheme is used (``file://`` never loads kafka-python) and built with
its uniform constructor ``Class.from_url(parsed, settings)``. Adding a backend is one file plus one row.
The tables live in the packages above; nothing here imports them.
"""

from __future__ import annotations

import importlib
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol, TypeVar
from urllib.parse import urlsplit

from contracts.errors import ConfigError

T = TypeVar("T")


@dataclass(frozen=True)
class BackendUrl:
    scheme: str
    raw: str

    @property
    def rest(self) -> str:
        """Everything after ``scheme://``."""
        return self.raw.split("://", 1)[1]

    @property
    def path(self) -> Path:
        """Filesystem path of a ``file://``/``sqlite://`` URL (``file:///abs`` or ``file://rel``)."""
        if not self.rest:
            raise ConfigError(f"{self.raw!r} has no path; write e.g. {self.scheme}:///var/lib/mamdr/x")
        return Path(self.rest).expanduser()

    @property
    def host(self) -> str:
        return urlsplit(self.raw).hostname or "127.0.0.1"

    @property
    def port(self) -> int | None:
        return urlsplit(self.raw).port

    @property
    def url_path(self) -> str:
        return urlsplit(self.raw).path.lstrip("/")


class FromUrl(Protocol):
    """What a backend class in a table provides: one constructor from a parsed URL and its settings."""

    @classmethod
    def from_url(cls, parsed: BackendUrl, settings: Any) -> Any: ...


def _schemes(allowed: tuple[str, ...]) -> str:
    return ", ".join(s + "://" for s in allowed)


def parse_url(url: str, allowed: tuple[str, ...], what: str) -> BackendUrl:
    """Split a backend URL and check its scheme is one this backend family supports."""
    if "://" not in url:
        raise ConfigError(f"{what} URL {url!r} has no scheme; use one of {_schemes(allowed)}")
    scheme = url.split("://", 1)[0].lower()
    if scheme not in allowed:
        raise ConfigError(f"{what} URL scheme {scheme!r} is not supported; use one of {_schemes(allowed)}")
    return BackendUrl(scheme=scheme, raw=url)


def load_object(spec: str) -> Any:
    """``"package.module:attr"`` → the attribute, importing the module now."""
    module_name, sep, attr = spec.partition(":")
    if not sep or not attr:
        raise ValueError(f"backend spec {spec!r} is not 'module:attr'")
    return getattr(importlib.import_module(module_name), attr)


def open_backend(url: str, backends: Mapping[str, str], what: str, settings: Any, base: type[T]) -> T:
    """The backend for ``url`` from a family's ``scheme -> "module:Class"`` table.

    Raises ``ConfigError`` naming the allowed schemes for a URL without one or with an unknown one; the
    backend's own ``from_url`` raises ``ConfigError``/``BackendUnavailable`` for the rest of the URL.
    """
    parsed = parse_url(url, tuple(backends), what)
    cls: FromUrl = load_object(backends[parsed.scheme])
    backend = cls.from_url(parsed, settings)
    if not isinstance(backend, base):
        raise TypeError(f"{backends[parsed.scheme]}.from_url returned {type(backend).__name__}, "
                        f"not a {base.__name__}")
    return backend
