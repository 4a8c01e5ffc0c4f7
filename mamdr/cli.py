"""The ``mamdr`` command. Its subcommands live in :mod:`mamdr.commands`, one module per package they drive.

A command module exposes ``register(subparsers)`` and must stay cheap to import (no torch at
import time: heavy imports go inside the command functions), so ``mamdr serve --help`` is fast.
Every command is ``func(args) -> int``. Errors the platform raises on purpose print one line and exit
with a code scripts can branch on (:data:`EXIT_CODES`): 2 usage (bad flags, arguments, configuration),
3 not found or invalid (unknown id, bad data, conflict, a version that fails verification, refused),
4 a backend is unavailable (retrying may help).
"""

from __future__ import annotations

import argparse
import importlib
import logging
import os
import sys
from collections.abc import Sequence

from pydantic import ValidationError

from contracts.errors import MamdrError
from mamdr import __version__

LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR")

# Order is the order of the help listing.
COMMAND_MODULES = (
    "mamdr.commands.experiment",
    "mamdr.commands.stream",
    "mamdr.commands.trainer",
    "mamdr.commands.serve",
    "mamdr.commands.features",
    "mamdr.commands.registry",
    "mamdr.commands.stack",
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="mamdr",
        description="Multi-domain CTR platform: MAMDR training, per-domain serving, feature store, registry.",
    )
    parser.add_argument("--version", action="version", version=f"mamdr {__version__}")
    parser.add_argument("--log-level", default=None, type=str.upper, choices=LOG_LEVELS,
                        help="default: MAMDR_LOG_LEVEL, else INFO")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_parser_class())
    for name in COMMAND_MODULES:
        try:
            module = importlib.import_module(name)
        except ModuleNotFoundError as exc:
            if exc.name != name:
                raise
            continue
        module.register(sub)
    return parser


def _parser_class() -> type[argparse.ArgumentParser]:
    """Every subcommand's parser (nested ones too) shows defaults in ``--help``."""
    from mamdr.commands import HelpFormatter

    class Parser(argparse.ArgumentParser):
        def __init__(self, *args: object, **kwargs: object) -> None:
            kwargs.setdefault("formatter_class", HelpFormatter)
            super().__init__(*args, **kwargs)  # type: ignore[arg-type]

    return Parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    level = args.log_level or _env_log_level()
    logging.basicConfig(
        level=getattr(logging, level),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    func = getattr(args, "func", None)
    if func is None:
        parser.print_help()
        return 2
    try:
        return int(func(args) or 0)
    except MamdrError as exc:
        print(f"mamdr: error: {exc.message}", file=sys.stderr)
        return exc.exit_code
    except ValidationError as exc:  # a MAMDR_* variable or flag outside its bounds
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first.get("loc", ()))
        print(f"mamdr: error: invalid setting {where}: {first.get('msg')} (see the settings table in README.md)",
              file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("mamdr: interrupted", file=sys.stderr)
        return 130


def _env_log_level() -> str:
    """``MAMDR_LOG_LEVEL`` (validated like every setting), INFO when unset."""

    value = os.environ.get("MAMDR_LOG_LEVEL", "INFO").upper()
    if value not in LOG_LEVELS:
        print(f"mamdr: error: MAMDR_LOG_LEVEL={value!r}: use one of {', '.join(LOG_LEVELS)}", file=sys.stderr)
        raise SystemExit(2)
    return value


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
