"""The ``mamdr`` subcommands, one module per package they drive (see :mod:`mamdr.cli`)."""

from __future__ import annotations

import argparse
import json
import sys
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


class _Deprecated(argparse.Action):
    """An old flag spelling kept for one release: it still works and says which flag replaces it."""

    def __init__(self, option_strings: list[str], dest: str, new: str = "", const: Any = None,
                 nargs: Any = None, **kwargs: Any) -> None:
        self.new = new
        super().__init__(option_strings, dest, nargs=nargs, const=const, **kwargs)

    def __call__(self, parser: argparse.ArgumentParser, namespace: argparse.Namespace, values: Any,
                 option_string: str | None = None) -> None:
        print(f"mamdr: warning: {option_string} is deprecated and goes away in the next release; use {self.new}",
              file=sys.stderr)
        setattr(namespace, self.dest, self.const if self.nargs == 0 else values)


def deprecated_alias(parser: argparse.ArgumentParser, old: str, new: str, dest: str, *, flag: bool = False,
                     type: Any = None) -> None:
    """``old`` does what ``new`` does (hidden from ``--help``) and prints a deprecation line when used."""
    extra: dict[str, Any] = {"nargs": 0, "const": True} if flag else {"type": type} if type else {}
    parser.add_argument(old, dest=dest, action=_Deprecated, new=new, help=argparse.SUPPRESS, **extra)


class HelpFormatter(argparse.HelpFormatter):
    """Every ``--help`` shows each option's default (unless the help already names it or there is none)."""

    def _get_help_string(self, action: argparse.Action) -> str:
        text = action.help or ""
        if ("default" in text.lower() or action.default in (None, False, argparse.SUPPRESS)
                or not action.option_strings):
            return text
        return f"{text} (default: %(default)s)"
