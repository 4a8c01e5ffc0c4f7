"""Backend URLs: ``scheme://rest``. One small parser shared by every resolver."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

from contracts.errors import ConfigError


@dataclass(frozen=True)
class BackendUrl:
    scheme: str
    raw: str

    @property
    def path(self) -> Path:
        """Filesystem path of a ``file://``/``sqlite://`` URL (``file:///abs`` or ``file://rel``)."""
        rest = self.raw.split("://", 1)[1]
        if not rest:
            raise ConfigError(f"{self.raw!r} has no path; write e.g. {self.scheme}:///var/lib/mamdr/x")
        return Path(rest).expanduser()

    @property
    def host(self) -> str:
        return urlsplit(self.raw).hostname or "127.0.0.1"

    @property
    def port(self) -> int | None:
        return urlsplit(self.raw).port

    @property
    def url_path(self) -> str:
        return urlsplit(self.raw).path.lstrip("/")


def parse_url(url: str, allowed: tuple[str, ...], what: str) -> BackendUrl:
    """Split a backend URL and check its scheme is one this backend family supports."""
    if "://" not in url:
        raise ConfigError(f"{what} URL {url!r} has no scheme; use one of {', '.join(s + '://' for s in allowed)}")
    scheme = url.split("://", 1)[0].lower()
    if scheme not in allowed:
        raise ConfigError(
            f"{what} URL scheme {scheme!r} is not supported; use one of {', '.join(s + '://' for s in allowed)}"
        )
    return BackendUrl(scheme=scheme, raw=url)
