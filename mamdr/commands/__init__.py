"""The ``mamdr`` subcommands, one module per package they drive (see :mod:`mamdr.cli`)."""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from contracts.errors import NotFound


def require_existing(url: str, what: str, flag: str) -> None:
    """Read commands never create a store: a ``file://``/``sqlite://`` path that does not exist is a typo,
    not an empty store to report as healthy."""
    scheme, sep, rest = url.partition("://")
    if sep and scheme.lower() in ("file", "sqlite") and rest and not Path(rest).expanduser().exists():
        raise NotFound(f"no {what} at {rest}: check {flag} (read commands never create one)")


OUTPUTS = ("table", "json")


def add_output(parser: Any) -> Any:
    """``--output table|json``: what every command that prints records takes (JSON is the stable one)."""
    parser.add_argument("--output", "-o", choices=OUTPUTS, default="table",
                        help="table for people, json for scripts (one document: an object, or an array of them)")
    return parser


def emit(args: Any, headers: Sequence[str], rows: Sequence[Sequence[Any]], records: Any) -> None:
    """Print ``records`` as JSON with ``--output json``, else ``rows`` under ``headers`` as a table."""
    if getattr(args, "output", "table") == "json":
        print(json.dumps(records, indent=2, sort_keys=True, default=str))
        return
    print_table(headers, rows)


def print_table(headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> None:
    cells = [[str(c) for c in headers], *[["-" if c is None else str(c) for c in row] for row in rows]]
    widths = [max(len(r[i]) for r in cells) for i in range(len(headers))]
    for n, row in enumerate(cells):
        print("  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip())
        if n == 0:
            print("  ".join("-" * w for w in widths))
