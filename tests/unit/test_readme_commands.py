"""The README's commands exist, their ``--help`` works, the flags it shows are real, and its configuration
reference is the one generated from ``contracts/settings.py``."""

from __future__ import annotations

import argparse
import contextlib
import io
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

from mamdr import settings_doc
from mamdr.cli import build_parser

README = Path(__file__).resolve().parents[2] / "README.md"
TEXT = README.read_text()


def _subparsers(parser: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            return dict(action.choices)
    return {}


def readme_commands() -> list[str]:
    """Every ``mamdr ...`` command in a code block or an inline code span."""
    found: list[str] = []
    for block in re.findall(r"```(?:bash|sh|console)?\n(.*?)```", TEXT, flags=re.S):
        for line in block.replace("\\\n", " ").splitlines():
            line = line.split("#", 1)[0].strip()
            if line.startswith("mamdr "):
                found.append(line)
    found += [m for m in re.findall(r"`(mamdr [^`]+)`", TEXT)]
    return sorted(set(found))


def resolve(command: str) -> tuple[list[str], argparse.ArgumentParser, list[str]]:
    """(subcommand path, its parser, the flags the command uses)."""
    words = shlex.split(command.replace("...", "").rstrip("\\ "))[1:]
    parser = build_parser()
    path: list[str] = []
    for word in words:
        choices = _subparsers(parser)
        if not choices or word.startswith("-"):
            break
        assert word in choices, f"README: `{command}`: {' '.join(['mamdr', *path])} has no subcommand {word!r}"
        path.append(word)
        parser = choices[word]
    flags = [w.split("=", 1)[0] for w in words if w.startswith("--")]
    flags += [f for w in words if "/" in w and w.startswith("--") for f in w.split("/") if f.startswith("--")]
    return path, parser, flags


COMMANDS = readme_commands()


def test_the_readme_names_the_main_commands() -> None:
    named = {" ".join(resolve(c)[0]) for c in COMMANDS}
    for expected in ("quickstart", "dev up", "dev down", "serve", "stream replay", "models rollback", "domains add"):
        assert expected in named, f"the README no longer shows `mamdr {expected}`"


@pytest.mark.parametrize("command", COMMANDS)
def test_readme_command_exists_and_its_help_works(command: str) -> None:
    path, parser, flags = resolve(command)
    assert path, f"`{command}` names no subcommand"
    options = {s for a in parser._actions for s in a.option_strings}
    for flag in flags:
        assert flag in options, f"README: `{command}`: `mamdr {' '.join(path)}` has no option {flag}"
    out = io.StringIO()
    with contextlib.redirect_stdout(out), pytest.raises(SystemExit) as exit_:
        build_parser().parse_args([*path, "--help"])
    assert exit_.value.code == 0 and "usage: mamdr" in out.getvalue()


def test_the_console_command_runs() -> None:
    done = subprocess.run([sys.executable, "-m", "mamdr.cli", "quickstart", "--help"], capture_output=True,
                          text=True, timeout=60)
    assert done.returncode == 0 and "--short" in done.stdout and "--stream" in done.stdout


def test_configuration_reference_matches_the_settings() -> None:
    assert settings_doc.reference() in TEXT, "run: python -m mamdr.settings_doc --write README.md"


def test_every_setting_has_an_env_var_and_a_meaning() -> None:
    rows = settings_doc.rows()
    assert len(rows) >= 40
    for setting, env, _default, meaning in rows:
        assert env == "MAMDR_" + setting.upper().replace(".", "__")
        assert meaning, f"{setting} has no description: add one in contracts/settings.py or settings_doc.NOTES"
