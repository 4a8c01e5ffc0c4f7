"""``mamdr quickstart`` and ``mamdr dev up|down|status``: the whole platform on one machine.

Cheap to import (no torch): the quickstart's torch side lives in ``mamdr.quickstart``, the process
management of the dev stack in ``mamdr.devstack``.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from mamdr.commands import deprecated_alias

DEFAULT_QUICKSTART_DIR = Path("runs/quickstart")
DEFAULT_DEV_DIR = Path.home() / ".mamdr" / "dev"


def register(subparsers: Any) -> None:
    q = subparsers.add_parser(
        "quickstart", help="the whole product on ml-latest-small: stream → train → serve → onboard → report",
        description="Builds the shipped ml-latest-small benchmark, streams its clicks into the continual trainer, "
        "serves the published versions over HTTP, onboards a new domain and writes a report. Embedded backends "
        "by default (no servers needed); --stream/--feature-store/--registry use real servers.")
    q.add_argument("--workdir", type=Path, default=DEFAULT_QUICKSTART_DIR,
                   help=f"where everything is written (default {DEFAULT_QUICKSTART_DIR}; a previous quickstart "
                   "there is replaced)")
    q.add_argument("--short", action="store_true", help="a tenth of the users and a smaller model (~1-2 min)")
    q.add_argument("--stream", metavar="URL", help="kafka://HOST:PORT/TOPIC instead of the embedded file:// stream")
    q.add_argument("--feature-store", metavar="URL", help="redis://HOST:PORT/DB instead of the embedded file:// store")
    q.add_argument("--registry", metavar="URL", help="redis://HOST:PORT/DB instead of the embedded sqlite file")
    deprecated_alias(q, "--kafka", "--stream", "stream")
    deprecated_alias(q, "--redis", "--feature-store URL --registry URL", "redis")
    q.add_argument("--new-domain", default="film-noir", help="the domain held back and onboarded (film-noir)")
    q.add_argument("--seed", type=int, default=0, help="seed of the data split, sampling and training")
    q.add_argument("--framework", choices=("mamdr", "dn", "alternate"), default="mamdr",
                   help="what the trainer runs: alternate is plain online training, the baseline to compare with")
    q.add_argument("--serve", action="store_true", help="keep serving up after the summary until Ctrl-C")
    q.add_argument("--no-progress", action="store_true", help="no progress bars (log lines only)")
    q.set_defaults(func=cmd_quickstart)

    dev = subparsers.add_parser("dev", help="a local stack of real servers: redis, kafka, trainer, serving",
                                description="Starts redis-server, the cached Kafka broker, the trainer and serving "
                                "as background processes on 127.0.0.1 (pid files and logs in --workdir).")
    sub = dev.add_subparsers(dest="dev_command", metavar="SUBCOMMAND")
    up = sub.add_parser("up", help="start the stack and wait until every part is healthy")
    down = sub.add_parser("down", help="stop the stack (SIGTERM, SIGKILL after --timeout)")
    status = sub.add_parser("status", help="which parts run and answer")
    for p in (up, down, status):
        p.add_argument("--workdir", type=Path, default=DEFAULT_DEV_DIR, help=f"default {DEFAULT_DEV_DIR}")
    for flag in ("redis", "kafka", "serving", "metrics"):
        up.add_argument(f"--{flag}-port", type=int, default=0, help="default: a free port")
    up.add_argument("--round-seconds", type=float, default=10.0, help="trainer round period (default 10)")
    up.add_argument("--timeout", type=float, default=120.0, help="seconds to wait for each part (default 120)")
    down.add_argument("--timeout", type=float, default=20.0, help="seconds before SIGKILL (default 20)")
    up.set_defaults(func=cmd_dev_up)
    down.set_defaults(func=cmd_dev_down)
    status.set_defaults(func=cmd_dev_status)
    dev.set_defaults(func=lambda args: (dev.print_help(), 2)[1])


def cmd_quickstart(args: argparse.Namespace) -> int:
    from mamdr.quickstart import QuickstartConfig, run_quickstart

    run_quickstart(QuickstartConfig(
        workdir=args.workdir, short=args.short, stream=args.stream,
        feature_store=args.feature_store or getattr(args, "redis", None),
        registry=args.registry or getattr(args, "redis", None), new_domain=args.new_domain,
        seed=args.seed, progress=not args.no_progress, keep_serving=args.serve, framework=args.framework,
    ))
    return 0


def cmd_dev_up(args: argparse.Namespace) -> int:
    from mamdr import devstack

    st = devstack.up(args.workdir, redis_port=args.redis_port, kafka_port=args.kafka_port,
                     serving_port=args.serving_port, metrics_port=args.metrics_port,
                     round_seconds=args.round_seconds, timeout_s=args.timeout)
    print("\nthe stack is up:")
    for name, url in st.urls().items():
        print(f"  {name:24s} {url}")
    wd = st.workdir
    print(f"\nadmin token: {wd}/admin_token\nnext:\n"
          f"  mamdr domains add comedy --registry {st.redis_url}\n"
          f"  mamdr stream replay --dataset ml-latest-small --rate 2000 --stream {st.stream_url}\n"
          f"  mamdr dev status --workdir {wd}    mamdr dev down --workdir {wd}")
    return 0


def cmd_dev_down(args: argparse.Namespace) -> int:
    from mamdr import devstack

    devstack.down(args.workdir, timeout_s=args.timeout)
    return 0


def cmd_dev_status(args: argparse.Namespace) -> int:
    from mamdr import devstack

    rows = devstack.status(args.workdir)
    st = devstack.load_state(args.workdir.expanduser().resolve())
    for name, row in rows.items():
        state = "healthy" if row["healthy"] else ("running, not answering" if row["running"] else "stopped")
        print(f"{name:8s} {state:24s} pid {row['pid'] or '-'}")
    if st is not None and all(r["healthy"] for r in rows.values()):
        print(f"serving {st.serving_url}  stream {st.stream_url}  redis {st.redis_url}")
    return 0 if all(r["healthy"] for r in rows.values()) else 1
