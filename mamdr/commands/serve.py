"""``mamdr serve``: the per-domain CTR service (uvicorn, one process per core; see serving.server)."""

from __future__ import annotations

import argparse


def _serve(args: argparse.Namespace) -> int:
    from contracts.settings import load_settings
    from serving.server import serve

    artifacts = args.artifacts
    if artifacts and "://" not in artifacts:
        from pathlib import Path

        artifacts = f"file://{Path(artifacts).expanduser().resolve()}"
    settings = load_settings(**{
        "artifacts_url": artifacts,
        "feature_store.url": args.feature_store,
        "registry.url": args.registry,
        "serving.host": args.host,
        "serving.port": args.port,
        "serving.composition": args.composition,
        "serving.session_cache_size": args.cache_size,
        "log_level": args.log_level,
    })
    serve(settings)
    return 0


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "serve", help="serve POST /v1/domains/{domain}/ctr (+ /healthz /readyz /metrics, registry admin API)",
        description="Serve the registry's live model version with embeddings from the feature store. "
        "Unset flags fall back to MAMDR_* environment variables, then defaults.",
    )
    p.add_argument("--artifacts", help="artifacts root (file:///path or a path) for relative artifact URIs")
    p.add_argument("--feature-store", help="redis://HOST:PORT/DB, file://PATH or memory://")
    p.add_argument("--registry", help="sqlite://PATH or redis://HOST:PORT/DB")
    p.add_argument("--host", help="bind address (default 127.0.0.1)")
    p.add_argument("--port", type=int, help="port (default 8000)")
    p.add_argument("--composition", choices=["feed", "session"], help="how θS + θi is composed (default feed)")
    p.add_argument("--cache-size", type=int, help="domains whose composed weights stay in memory (LRU)")
    p.set_defaults(func=_serve)
