"""``mamdr trainer run``: the continual trainer service. Torch is imported inside the command only."""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import signal
import sys
from typing import Any

log = logging.getLogger("mamdr.trainer")


def register(subparsers: Any) -> None:
    trainer = subparsers.add_parser("trainer", help="continual MAMDR trainer over a click stream")
    sub = trainer.add_subparsers(dest="trainer_command", metavar="SUBCOMMAND")
    run = sub.add_parser("run", help="consume clicks, train MAMDR rounds, publish versions, commit offsets")
    run.add_argument("--stream", help="kafka://HOST:PORT/TOPIC or file://DIR (env MAMDR_STREAM__URL)")
    run.add_argument("--feature-store", help="redis://, file:// or memory:// (env MAMDR_FEATURE_STORE__URL)")
    run.add_argument("--registry", help="sqlite://PATH or redis://HOST:PORT/DB (env MAMDR_REGISTRY__URL)")
    run.add_argument("--artifacts", help="file://DIR where versions are published (env MAMDR_ARTIFACTS_URL)")
    run.add_argument("--group", help="consumer group (env MAMDR_STREAM__GROUP)")
    run.add_argument("--model", default="mlp", help="model name from the zoo (default mlp)")
    run.add_argument("--emb-dim", type=int, default=None, help="embedding width (default 128, the paper's)")
    run.add_argument("--hidden", default=None, help="hidden widths, e.g. 256,128,64 (the paper's)")
    run.add_argument("--round-seconds", type=float, help="publish at least this often while events arrive")
    run.add_argument("--round-events", type=int, help="publish after this many events")
    run.add_argument("--inner-batches", type=int, help="K: at most this many mini-batches per DR update")
    run.add_argument("--dr-k", type=int, help="DR neighbours per domain")
    run.add_argument("--beta", type=float, help="DN outer step size")
    run.add_argument("--framework", choices=("mamdr", "dn", "alternate"),
                     help="mamdr (DN + DR, default), dn (shared model only) or alternate (plain online training)")
    run.add_argument("--table-optimizer", choices=("sparse_adam", "rowwise_adagrad", "dense"),
                     help="optimizer of the user/item tables (env MAMDR_TRAINER__TABLE_OPTIMIZER)")
    run.add_argument("--replay-ratio", type=float, help="replay rows per fresh row in a round")
    run.add_argument("--specific", help="θi's scope for a new lineage: head (default), default (every parameter "
                                        "but the tables) or glob patterns")
    run.add_argument("--precision", choices=("auto", "bf16", "fp32"),
                     help="the training forward's arithmetic (DN's steps, DR's head inputs): auto (bfloat16 where the "
                          "CPU has it in hardware, default), bf16 or fp32")
    run.add_argument("--overload-policy", choices=("backpressure", "sample"),
                     help="when the consumer lag exceeds --max-lag-events: stop polling past a round "
                          "(backpressure) or train on a counted uniform sample (sample)")
    run.add_argument("--max-lag-events", type=int, help="consumer lag that counts as overloaded")
    run.add_argument("--auto-onboard", action="store_true", default=None,
                     help="create unknown domains in the registry instead of dead-lettering their events")
    run.add_argument("--min-count", type=int,
                     help="an id gets its own embedding row once seen this many times (default 1)")
    run.add_argument("--expire-rounds", type=int, help="free rows of ids not seen for this many rounds (0: never)")
    run.add_argument("--expire-seconds", type=float, help="free rows of ids not seen for this long (0: never)")
    run.add_argument("--keep-versions", type=int,
                     help="newest versions kept on disk, in the feature store and the registry (default 5)")
    run.add_argument("--pin", action="append", metavar="VERSION",
                     help="a version retention never deletes (repeatable; env MAMDR_TRAINER__PINNED_VERSIONS)")
    run.add_argument("--new-lineage", action="store_true",
                     help="start a new model on purpose although the live version's checkpoint is missing")
    run.add_argument("--max-rounds", type=int, help="stop after this many published rounds")
    run.add_argument("--idle-exit", type=float, help="stop after this many seconds without events")
    run.add_argument("--metrics-port", type=int, default=None,
                     help="serve /metrics (Prometheus) and /healthz (liveness) on HOST:PORT")
    run.add_argument("--metrics-host", default="127.0.0.1",
                     help="address of the metrics endpoint (0.0.0.0 inside a container)")
    run.add_argument("--seed", type=int, help="seed of sampling and batch order")
    run.add_argument("--world-size", type=int, default=None,
                     help="train on N processes over torch.distributed (torchrun's WORLD_SIZE/RANK are used "
                          "when set; otherwise N-1 local worker processes are started)")
    run.add_argument("--dist-timeout", type=float, default=600.0,
                     help="seconds a collective waits for a peer before the round fails (default 600)")
    run.set_defaults(func=cmd_run)
    trainer.set_defaults(func=lambda args: (trainer.print_help(), 2)[1])


def settings_from_args(args: argparse.Namespace):  # type: ignore[no-untyped-def]
    from contracts.settings import load_settings

    return load_settings(**{
        "stream.url": args.stream, "feature_store.url": args.feature_store, "registry.url": args.registry,
        "artifacts_url": args.artifacts, "stream.group": args.group,
        "trainer.round_seconds": args.round_seconds, "trainer.round_events": args.round_events,
        "trainer.inner_batches": args.inner_batches, "trainer.dr_k": args.dr_k, "trainer.beta": args.beta,
        "trainer.framework": args.framework,
        "trainer.auto_onboard": args.auto_onboard, "trainer.seed": args.seed,
        "trainer.min_count": args.min_count, "trainer.expire_rounds": args.expire_rounds,
        "trainer.expire_seconds": args.expire_seconds, "trainer.keep_versions": args.keep_versions,
        "trainer.pinned_versions": tuple(args.pin) if args.pin else None,
        "trainer.table_optimizer": args.table_optimizer, "trainer.replay_ratio": args.replay_ratio,
        "trainer.specific": args.specific, "trainer.precision": args.precision,
        "trainer.overload_policy": args.overload_policy, "trainer.max_lag_events": args.max_lag_events,
    })


def cmd_run(args: argparse.Namespace) -> int:
    from contracts.artifacts import open_artifacts
    from domain_registry import open_registry
    from feature_store import open_store
    from stream import open_stream
    from trainer.service.loop import ContinualTrainer
    from trainer.service.metrics import TrainerMetrics

    settings = settings_from_args(args)
    from trainer.distributed.launch import prepare

    rank_argv = [sys.executable, "-m", "mamdr.cli", *sys.argv[1:]]  # how --world-size N starts ranks 1..N-1
    session = prepare(args, settings, rank_argv)  # None: one process; else this rank (each a full trainer)
    metrics = TrainerMetrics()
    model_config: dict[str, Any] = {"emb_dim": args.emb_dim} if args.emb_dim else {}
    if args.hidden:
        model_config["hidden"] = tuple(int(x) for x in args.hidden.split(","))
    trainer = ContinualTrainer(
        settings, stream=open_stream(settings.stream.url, settings.stream),
        store=open_store(settings.feature_store.url, settings.feature_store),
        registry=open_registry(settings.registry.url, settings.registry),
        artifacts=open_artifacts(settings.artifacts_url).root, model=args.model, model_config=model_config,
        metrics=metrics, new_lineage=args.new_lineage,
    )
    if args.metrics_port is not None:  # /metrics, and /healthz that fails when the loop stops making progress
        from trainer.service.health import serve

        # local rank r of a distributed run serves on metrics_port + r (one port per process on a host)
        serve(metrics.registry, trainer.heartbeat, settings.trainer.liveness_timeout_s, args.metrics_host,
              args.metrics_port + (session.env.local_rank if session is not None else 0))

    def stop(signum: int, _frame: object) -> None:
        log.info("signal %d: finishing the current round, then stopping", signum)
        trainer.stop_event.set()

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    if session is not None:
        session.attach(trainer, metrics.registry)
    with session.guard() if session is not None else contextlib.nullcontext():
        try:
            reports = trainer.run(max_rounds=args.max_rounds, idle_exit_s=args.idle_exit)
        finally:
            trainer.close()
    print(json.dumps({"rounds": len(reports), "last_version": reports[-1].version if reports else None,
                      "events": sum(r.events for r in reports)}))
    return 0
