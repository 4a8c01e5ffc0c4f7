"""One vocabulary for every command (issue 17): the same flag for the same thing everywhere, help text and
defaults on every option, --output on every command that prints records, and old spellings that still work
for one release with a deprecation line."""

from __future__ import annotations

import argparse
import contextlib
import io

import pytest

from mamdr.cli import build_parser, main

# concept -> the one flag; a visible option may not spell these concepts any other way
VOCABULARY = {"stream URL": "--stream", "feature store URL": "--feature-store", "registry URL": "--registry",
              "artifacts root": "--artifacts", "progress off": "--no-progress", "output format": "--output",
              "inner mini-batches": "--inner-batches", "DR neighbours": "--dr-k"}
RETIRED = {"--url", "--kafka", "--redis", "--quiet", "--inner-steps", "--k"}
URL_FLAGS = {"--stream", "--feature-store", "--registry", "--artifacts", "--api"}
PRINTS_RECORDS = {"domains add", "domains list", "domains show", "domains pause", "domains resume", "domains retire",
                  "models list", "models show", "models promote", "models rollback", "features info", "stream tail"}


def _commands() -> dict[str, argparse.ArgumentParser]:
    out: dict[str, argparse.ArgumentParser] = {}

    def walk(parser: argparse.ArgumentParser, path: list[str]) -> None:
        subs = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
        if subs:
            for name, sub in subs[0].choices.items():
                walk(sub, [*path, name])
        else:
            out[" ".join(path)] = parser

    walk(build_parser(), [])
    return out


def _visible(parser: argparse.ArgumentParser) -> list[argparse.Action]:
    return [a for a in parser._actions if a.option_strings and a.help != argparse.SUPPRESS
            and "--help" not in a.option_strings]


@pytest.mark.parametrize("command", sorted(_commands()))
def test_every_option_speaks_the_shared_vocabulary(command: str) -> None:
    parser = _commands()[command]
    for action in _visible(parser):
        long = [o for o in action.option_strings if o.startswith("--")]
        assert long and not set(long) & RETIRED, f"{command}: {long} is a retired spelling"
        assert action.help, f"{command} {long}: no help text"
        if action.metavar == "URL" or ("://" in action.help and action.type in (None, str)):
            assert set(long) <= URL_FLAGS, f"{command} {long} takes a backend URL: name it one of {URL_FLAGS}"
    formatted = parser.format_help()
    for action in _visible(parser):
        if action.default not in (None, False, argparse.SUPPRESS) and action.choices is None:
            assert "default" in (action.help or "").lower() or "(default:" in formatted, (command, action.dest)
    if command in PRINTS_RECORDS:
        assert any("--output" in a.option_strings for a in _visible(parser)), f"{command} needs --output"


def test_the_vocabulary_is_used_where_the_concept_exists() -> None:
    commands = _commands()
    flags = {name: {o for a in _visible(p) for o in a.option_strings} for name, p in commands.items()}
    assert {"--stream", "--feature-store", "--registry", "--artifacts"} <= flags["trainer run"]
    assert {"--feature-store", "--registry", "--artifacts"} <= flags["serve"]
    assert {"--stream", "--feature-store", "--registry", "--no-progress"} <= flags["quickstart"]
    assert {"--feature-store"} <= flags["features info"] and "--no-progress" in flags["features load"]
    assert {"--inner-batches", "--dr-k", "--no-progress"} <= flags["experiment"]
    assert "--no-progress" in flags["stream replay"] and "--partitions" not in flags["stream tail"]
    for name in ("domains list", "domains show", "models list", "models show"):
        assert "--actor" not in flags[name], f"{name} writes nothing: no --actor"


def test_old_spellings_still_work_once_with_a_warning() -> None:
    parser = build_parser()
    err = io.StringIO()
    with contextlib.redirect_stderr(err):
        args = parser.parse_args(["experiment", "--dataset", "synthetic", "--out", "x", "--k", "2",
                                  "--inner-steps", "4"])
    assert (args.k, args.inner_steps) == (2, 4)
    assert "--k is deprecated" in err.getvalue() and "use --dr-k" in err.getvalue()
    with contextlib.redirect_stderr(io.StringIO()):
        q = parser.parse_args(["quickstart", "--kafka", "kafka://h:1/t", "--redis", "redis://h:2/0"])
    assert q.stream == "kafka://h:1/t" and q.redis == "redis://h:2/0"


def test_framework_choices_match_the_framework_config() -> None:
    from mamdr.commands import experiment as cli
    from trainer.frameworks import config

    for name in ("INNER_OPTIMIZERS", "OUTER_OPTIMIZERS", "BETA_SCHEDULES", "SCHEDULES", "DR_BUDGETS", "DELTA_INITS",
                 "DOMAIN_SAMPLINGS"):
        assert getattr(cli, name) == getattr(config, name), name


def test_help_of_every_command_renders() -> None:
    for command in _commands():
        out = io.StringIO()
        with contextlib.redirect_stdout(out), pytest.raises(SystemExit) as done:
            main([*command.split(), "--help"])
        assert done.value.code == 0 and "usage:" in out.getvalue()
