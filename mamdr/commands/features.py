"""``mamdr features load|info|publish|gc``: manage the global embedding store from a shell.

Cheap to import (no torch): loading from a trained model lives in ``trainer/feature_sync.py``.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from mamdr.commands import add_output, deprecated_alias, emit


def _store(args: argparse.Namespace, create: bool = False):
    """The store at --url; only ``load`` may create one (reading a missing file:// store is a typo)."""
    from contracts.settings import load_settings
    from feature_store import open_store
    from mamdr.commands import require_existing

    settings = load_settings(**{"feature_store.url": args.feature_store, "feature_store.namespace": args.namespace})
    if not create:
        require_existing(settings.feature_store.url, "feature store", "--feature-store")
    return open_store(settings.feature_store.url, settings.feature_store), settings.feature_store


def _load(args: argparse.Namespace) -> int:
    from contracts.errors import ConfigError
    from feature_store.loaders import bulk_write, read_embeddings

    if not args.user and not args.item:
        raise ConfigError("nothing to load: pass --user FILE and/or --item FILE")
    store, _ = _store(args, create=True)
    version = args.version or time.strftime("%Y%m%dT%H%M%S", time.gmtime())
    try:
        for kind, path, ids_path in (("user", args.user, args.user_ids), ("item", args.item, args.item_ids)):
            if path is None:
                continue
            ids, vectors = read_embeddings(path, ids_path, progress=not args.no_progress)
            n = bulk_write(store, version, kind, ids, vectors, progress=not args.no_progress)
            print(f"{kind}: {n} vectors of dimension {vectors.shape[1]} written to version {version}")
        if args.publish:
            store.publish(version)
            print(f"published {version}")
    finally:
        store.close()
    return 0


def _info(args: argparse.Namespace) -> int:
    store, fs = _store(args)
    try:
        healthy = store.health()
        current = store.current_version() if healthy else None
        rows = [store.describe(v) for v in store.versions()] if healthy else []
    finally:
        store.close()
    report = {
        "url": fs.url, "namespace": fs.namespace, "healthy": healthy, "current": current,
        "versions": [{"version": r.version, "dims": r.dims, "dtype": r.dtype, "counts": r.counts,
                      "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(r.created)),
                      "current": r.version == current} for r in rows],
    }
    emit(args, ["version", "current", "created", "dtype", "dims", "counts"],
         [[v["version"], "*" if v["current"] else "", v["created"], v["dtype"], json.dumps(v["dims"], sort_keys=True),
           json.dumps(v["counts"], sort_keys=True)] for v in report["versions"]], report)
    if args.output == "table":
        print(f"{fs.url} (namespace {fs.namespace}): {'healthy' if healthy else 'UNREACHABLE'}, current {current}")
    return 0 if healthy else 1


def _publish(args: argparse.Namespace) -> int:
    store, _ = _store(args)
    try:
        store.publish(args.version)
    finally:
        store.close()
    print(f"published {args.version}")
    return 0


def _gc(args: argparse.Namespace) -> int:
    store, fs = _store(args)
    try:
        deleted = store.gc(fs.keep_versions if args.keep is None else args.keep)
    finally:
        store.close()
    print(f"deleted {len(deleted)} version(s): {' '.join(deleted) or '-'}")
    return 0


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser("features", help="global user/item embedding store (load, info, publish, gc)")
    p.set_defaults(func=lambda _a: p.print_help() or 2)
    sub = p.add_subparsers(dest="features_command", metavar="ACTION")

    def common(q: argparse.ArgumentParser) -> None:
        q.add_argument("--feature-store", metavar="URL",
                       help="redis://, file://PATH or memory:// (default MAMDR_FEATURE_STORE__URL)")
        deprecated_alias(q, "--url", "--feature-store", "feature_store")
        q.add_argument("--namespace", help="key namespace (default MAMDR_FEATURE_STORE__NAMESPACE)")

    load = sub.add_parser("load", help="write embeddings from files as a new version")
    common(load)
    load.add_argument("--user", type=Path, help="user vectors: Taobao user_emb.json, .npy or .npz")
    load.add_argument("--user-ids", type=Path, help="ids for a .npy user file (one per line or JSON list)")
    load.add_argument("--item", type=Path, help="item vectors: Taobao item_emb.json, .npy or .npz")
    load.add_argument("--item-ids", type=Path, help="ids for a .npy item file")
    load.add_argument("--version", help="version name (default: UTC timestamp)")
    load.add_argument("--publish", action="store_true", help="make the version current after loading")
    load.add_argument("--no-progress", action="store_true", help="no progress bars")
    deprecated_alias(load, "--quiet", "--no-progress", "no_progress", flag=True)
    load.set_defaults(func=_load)

    info = add_output(sub.add_parser("info", help="health, current version and every version's dims and counts"))
    common(info)
    info.set_defaults(func=_info)

    pub = sub.add_parser("publish", help="make a loaded version current (one atomic pointer switch)")
    common(pub)
    pub.add_argument("version")
    pub.set_defaults(func=_publish)

    gc = sub.add_parser("gc", help="delete old versions, keeping the newest K and the current one")
    common(gc)
    gc.add_argument("--keep", type=int, help="versions to keep (default MAMDR_FEATURE_STORE__KEEP_VERSIONS)")
    gc.set_defaults(func=_gc)
