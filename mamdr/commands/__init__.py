"""The ``mamdr`` subcommands, one module per package they drive (see :mod:`mamdr.cli`)."""

from __future__ import annotations

from pathlib import Path

from contracts.errors import NotFound


def require_existing(url: str, what: str, flag: str) -> None:
    """Read commands never create a store: a ``file://``/``sqlite://`` path that does not exist is a typo,
    not an empty store to report as healthy."""
    scheme, sep, rest = url.partition("://")
    if sep and scheme.lower() in ("file", "sqlite") and rest and not Path(rest).expanduser().exists():
        raise NotFound(f"no {what} at {rest}: check {flag} (read commands never create one)")
