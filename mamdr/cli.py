"""The ``mamdr`` command. Its subcommands live in :mod:`mamdr.commands`, one module per package they drive.

A command module exposes ``register(subparsers)`` and must stay cheap to import (no torch at
import time: heavy imports go inside the command functions), so ``mamdr serve --help`` is fast.
Every command is ``func(args) -> int``. Errors the platform raises on purpose print one line.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import sys
from collections.abc import Sequence

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
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in COMMAND_MODULES:
        try:
            module = importlib.import_module(name)
        except ModuleNotFoundError as exc:
            if exc.name != name:
                raise
            continue
        module.register(sub)
    return parser


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
    except KeyboardInterrupt:
        print("mamdr: interrupted", file=sys.stderr)
        return 130


def _env_log_level() -> str:
    """``MAMDR_LOG_LEVEL`` (validated like every setting), INFO when unset."""
    import os

    value = os.environ.get("MAMDR_LOG_LEVEL", "INFO").upper()
    if value not in LOG_LEVELS:
        print(f"mamdr: error: MAMDR_LOG_LEVEL={value!r}: use one of {', '.join(LOG_LEVELS)}", file=sys.stderr)
        raise SystemExit(2)
    return value


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
