"""``mamdr domains add|list|show|pause|resume|retire`` and ``mamdr models list|show|promote|rollback``.

Two ways to reach the registry, same commands, same output (``--output table|json``) and exit codes:
- directly (``--registry URL``, else ``MAMDR_REGISTRY__URL``, else the default sqlite file): local-admin mode;
- through a running service's admin API (``--api URL``, the token from ``MAMDR_REGISTRY__ADMIN_TOKEN`` or
  ``--token-file``): operators need the token, not the database's credentials. Audit actors are then the
  API's own (``api:...``).
Platform errors print one line (see ``mamdr.cli``).

Local-admin mode: whoever can open the backend (the sqlite file's permissions, the redis credentials)
administers it; there is no token on this path. Writes are recorded as such in the audit trail, as
``cli-local:<os user>`` (``cli-local:<os user>:<label>`` with ``--actor LABEL``). Only the HTTP admin
API records ``api:...`` actors, so ``--actor`` may not start with ``api`` and cannot forge one.

``models promote`` and ``models rollback`` verify the target version first, exactly as the HTTP API
does (``domain_registry.verify``): a broken version is refused, the command exits non-zero.
"""

from __future__ import annotations

import argparse
import getpass
import json
import re
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from contracts.errors import ConfigError
from mamdr.commands import add_output, emit, print_table


def _registry(args: argparse.Namespace, create: bool = False) -> Any:
    """The admin API at --api, else the registry at --registry; only ``domains add`` may create a registry
    (any other command on a missing sqlite file is a typo)."""
    from contracts.settings import load_settings
    from domain_registry import open_registry
    from mamdr.commands import require_existing

    if getattr(args, "api", None):
        from mamdr.commands.registry_api import ApiRegistry

        if args.registry:
            raise ConfigError("--api and --registry are two ways to reach the registry: give one")
        return ApiRegistry(args.api, _token(args))
    settings = load_settings(**{"registry.url": args.registry}).registry
    if not create:
        require_existing(settings.url, "registry", "--registry")
    return open_registry(settings.url, settings)


def _token(args: argparse.Namespace) -> str:
    from contracts.settings import load_settings

    if args.token_file:
        try:
            return args.token_file.read_text().strip()
        except OSError as exc:
            raise ConfigError(f"--token-file {args.token_file}: {exc.strerror}") from None
    secret = load_settings().registry.admin_token
    return secret.get_secret_value().strip() if secret is not None else ""


_LABEL_RE = re.compile(r"^[A-Za-z0-9@._-][A-Za-z0-9@._:-]{0,63}$")


def _os_user() -> str:
    try:
        return getpass.getuser()
    except (KeyError, OSError):
        return "unknown"


def _actor(args: argparse.Namespace) -> str:
    """``cli-local:<os user>[:<label>]``: the audit actor of a local-admin write."""
    base = f"cli-local:{_os_user()}"
    label = getattr(args, "actor", None)
    if not label:
        return base
    label = str(label)
    if label.lower().startswith("api") or label.lower().startswith("cli-local"):
        raise ConfigError(f"--actor {label!r}: 'api...' actors are recorded by the HTTP admin API only; "
                          "give a plain label such as --actor alice")
    if not _LABEL_RE.match(label):
        raise ConfigError(f"--actor {label!r}: use letters, digits, '@', '.', '_', '-', ':' (at most 64)")
    return f"{base}:{label}"


def _artifacts_url(args: argparse.Namespace) -> str:
    from contracts.settings import load_settings

    artifacts = getattr(args, "artifacts", None)
    if artifacts and "://" not in artifacts:
        from pathlib import Path

        artifacts = f"file://{Path(artifacts).expanduser().resolve()}"
    return load_settings(artifacts_url=artifacts).artifacts_url


def _positive(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1, got {value}")
    return value


def _when(ts: float | None) -> str:
    return "-" if ts is None else datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%d %H:%M:%S")


def _parse_settings(pairs: Sequence[str] | None) -> dict[str, Any]:
    """``--set dr_k=3 --set note=hi``: values are JSON when they parse, strings otherwise."""
    out: dict[str, Any] = {}
    for pair in pairs or ():
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise ConfigError(f"--set {pair!r}: write KEY=VALUE, e.g. --set dr_k=3")
        try:
            out[key] = json.loads(value)
        except json.JSONDecodeError:
            out[key] = value
    return out


_DOMAIN_HEADERS = ["id", "name", "status", "created", "updated", "settings"]


def _domain_row(d: Any) -> list[Any]:
    return [d.id, d.display_name, d.status, _when(d.created_at), _when(d.updated_at),
            json.dumps(d.settings, sort_keys=True)]


def _show_domain(args: argparse.Namespace, domain: Any) -> None:
    emit(args, _DOMAIN_HEADERS, [_domain_row(domain)], domain.model_dump(mode="json"))


# -- domains
def cmd_domains_add(args: argparse.Namespace) -> int:
    with _registry(args, create=True) as reg:
        _show_domain(args, reg.create_domain(args.id, display_name=args.name, settings=_parse_settings(args.set),
                                             actor=_actor(args)))
    return 0


def cmd_domains_list(args: argparse.Namespace) -> int:
    with _registry(args) as reg:
        domains = reg.list_domains(args.status)
    emit(args, _DOMAIN_HEADERS, [_domain_row(d) for d in domains], [d.model_dump(mode="json") for d in domains])
    return 0


def cmd_domains_show(args: argparse.Namespace) -> int:
    with _registry(args) as reg:
        _show_domain(args, reg.get_domain(args.id))
    return 0


def _status_command(status: str) -> Callable[[argparse.Namespace], int]:
    def run(args: argparse.Namespace) -> int:
        with _registry(args) as reg:
            _show_domain(args, reg.update_domain(args.id, status=status, actor=_actor(args)))
        return 0

    return run


# -- models
def _model_rows(models: Sequence[Any]) -> list[list[Any]]:
    return [[m.id, m.status, m.parent, _when(m.created_at), _when(m.promoted_at), len(m.domain_checksums),
             m.artifact_uri] for m in models]


_MODEL_HEADERS = ["version", "status", "parent", "created", "live since", "deltas", "artifacts"]


def cmd_models_list(args: argparse.Namespace) -> int:
    with _registry(args) as reg:
        models = reg.list_models(args.limit)
    emit(args, _MODEL_HEADERS, _model_rows(models), [m.model_dump(mode="json") for m in models])
    return 0


def cmd_models_show(args: argparse.Namespace) -> int:
    with _registry(args) as reg:
        model = reg.get_model(args.version)
    if args.output == "json":
        emit(args, [], [], model.model_dump(mode="json"))
        return 0
    print_table(_MODEL_HEADERS, _model_rows([model]))
    if model.metrics:
        print_table(["metric", "value"], sorted(model.metrics.items()))
    return 0


def cmd_models_promote(args: argparse.Namespace) -> int:
    from domain_registry.verify import verified_promote

    actor = _actor(args)
    with _registry(args) as reg:
        model = (reg.promote(args.version) if args.api  # the service verifies it
                 else verified_promote(reg, args.version, _artifacts_url(args), actor))
    emit(args, _MODEL_HEADERS, _model_rows([model]), model.model_dump(mode="json"))
    return 0


def cmd_models_rollback(args: argparse.Namespace) -> int:
    from domain_registry.verify import verified_rollback

    actor = _actor(args)
    with _registry(args) as reg:
        model = reg.rollback() if args.api else verified_rollback(reg, _artifacts_url(args), actor)
    emit(args, _MODEL_HEADERS, _model_rows([model]), model.model_dump(mode="json"))
    return 0


def _common(p: argparse.ArgumentParser, writes: bool = False) -> argparse.ArgumentParser:
    p.add_argument("--registry", metavar="URL", help="sqlite://PATH or redis://HOST:PORT/DB "
                   "(default: MAMDR_REGISTRY__URL or ~/.mamdr/registry.db)")
    p.add_argument("--api", metavar="URL", help="a running service's admin API instead, e.g. http://127.0.0.1:8000 "
                   "(token: MAMDR_REGISTRY__ADMIN_TOKEN or --token-file)")
    p.add_argument("--token-file", metavar="PATH", type=Path, help="file holding the admin token (with --api)")
    add_output(p)
    if writes:
        p.add_argument("--actor", metavar="LABEL", help="label added to the audit actor cli-local:$USER "
                       "(local-admin mode; may not start with 'api')")
    return p


def _artifacts(p: argparse.ArgumentParser) -> argparse.ArgumentParser:
    p.add_argument("--artifacts", help="artifacts root (file:///path or a path) for relative artifact URIs "
                   "(default: MAMDR_ARTIFACTS_URL)")
    return p


def register(subparsers: Any) -> None:
    domains = subparsers.add_parser("domains", help="add, list, pause, resume or retire domains")
    dsub = domains.add_subparsers(dest="domains_command", metavar="ACTION", required=True)
    add = _common(dsub.add_parser("add", help="create an active domain (served by θS at once)"), writes=True)
    add.add_argument("id", help="slug: lowercase letters, digits, '-' and '_', at most 64 characters")
    add.add_argument("--name", help="display name (default: the id)")
    add.add_argument("--set", action="append", metavar="KEY=VALUE", help="a domain setting, e.g. dr_k=3")
    add.set_defaults(func=cmd_domains_add)
    lst = _common(dsub.add_parser("list", help="list domains"))
    lst.add_argument("--status", choices=["active", "paused", "retired"], help="only domains with this status")
    lst.set_defaults(func=cmd_domains_list)
    for name, func, text in (
        ("show", cmd_domains_show, "show one domain"),
        ("pause", _status_command("paused"), "mark a domain paused (trainer and serving read the status)"),
        ("resume", _status_command("active"), "make a paused domain active again"),
        ("retire", _status_command("retired"), "retire a domain for good (its record is kept)"),
    ):
        p = _common(dsub.add_parser(name, help=text), writes=name != "show")
        p.add_argument("id")
        p.set_defaults(func=func)

    models = subparsers.add_parser("models", help="list, promote or roll back model versions")
    msub = models.add_subparsers(dest="models_command", metavar="ACTION", required=True)
    ml = _common(msub.add_parser("list", help="model versions, newest first"))
    ml.add_argument("--limit", type=_positive, default=20, help="newest N versions (default 20)")
    ml.set_defaults(func=cmd_models_list)
    ms = _common(msub.add_parser("show", help="one model version and its metrics"))
    ms.add_argument("version")
    ms.set_defaults(func=cmd_models_show)
    mp = _artifacts(_common(msub.add_parser(
        "promote", help="verify a version and make it live (the live one becomes superseded)"), writes=True))
    mp.add_argument("version")
    mp.set_defaults(func=cmd_models_promote)
    mr = _artifacts(_common(msub.add_parser(
        "rollback", help="verify the previous live version and roll back to it"), writes=True))
    mr.set_defaults(func=cmd_models_rollback)
