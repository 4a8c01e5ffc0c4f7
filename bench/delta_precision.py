"""Float16 vs float32 deltas: served holdout AUC on ml-latest-small, one trained model published both ways.

Trains what ``mamdr quickstart`` trains (same data, split, seed, model and continual trainer; no HTTP
server and no onboarding step) with float32 deltas, then publishes the live version's deltas once more in
float16: the same float32 θi rounded to float16, byte for byte what the exporter writes with
``trainer.delta_dtype = float16``. Every held-out click of the registered domains is then scored through
the serving path (``serving.scoring.score_many``: feature-store read, cold-start fallback, the ``feed``
composer holding each version's deltas as published) and the per-domain and pooled AUCs are compared.

The quickstart is deterministic (same seed, same figures), so a rerun prints the same numbers; ``--workdir``
keeps the trained run and a second call only scores.

Run: ``PYTHONPATH=$PWD ~/.cache/mamdr/venv/bin/python bench/delta_precision.py [--short] [--workdir DIR]``
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import time
from collections import defaultdict
from pathlib import Path

import numpy as np

DONE = "delta_precision.json"


def train(workdir: Path, short: bool, seed: int) -> dict[str, object]:
    """The quickstart's training steps with float32 deltas; returns what scoring needs."""
    import contextlib

    import torch

    from contracts.artifacts import open_artifacts
    from contracts.errors import Conflict
    from domain_registry import open_registry
    from feature_store import open_store
    from mamdr.quickstart import QuickstartConfig, _produce, _train, load_events, prepare_workdir, settings_for
    from stream import open_stream
    from trainer.service.loop import ContinualTrainer

    torch.set_num_threads(1)
    cfg = QuickstartConfig(workdir=workdir, short=short, seed=seed, progress=False)
    workdir = prepare_workdir(workdir)
    os.environ["MAMDR_TRAINER__DELTA_DTYPE"] = "float32"  # the reference; float16 is derived from it below
    settings = settings_for(cfg, workdir, "x" * 32)
    ev = load_events(cfg)
    registry = open_registry(settings.registry.url, settings.registry)
    store = open_store(settings.feature_store.url, settings.feature_store)
    stream = open_stream(settings.stream.url, settings.stream)
    artifacts = open_artifacts(settings.artifacts_url).root
    artifacts.mkdir(parents=True, exist_ok=True)
    trainer = ContinualTrainer(settings, stream=stream, store=store, registry=registry, artifacts=artifacts,
                               model="mlp", model_config={"emb_dim": cfg.plan.emb_dim, "hidden": cfg.plan.hidden})
    try:
        for d in ev.domains:
            with contextlib.suppress(Conflict):
                registry.create_domain(d, display_name=ev.names[d])
        trainer.start()
        rounds: list[dict[str, object]] = []
        _produce(stream, ev.main, "benchmark", False)
        _train(trainer, rounds, idle_s=1.5)
    finally:
        trainer.close()
        stream.close()
        store.close()
        registry.close()
    holdout = [e for e in ev.holdout if e["domain"] in set(ev.domains)]
    return {"version": rounds[-1]["version"], "rounds": len(rounds), "holdout": holdout,
            "settings": {"artifacts_url": settings.artifacts_url, "feature_store": settings.feature_store.url,
                         "registry": settings.registry.url}}


def publish_float16(artifacts: Path, version: str) -> str:
    """``<version>-f16``: the version with every delta rounded to float16 (what the exporter writes)."""
    from contracts.artifacts import load_version
    from trainer.export.onnx_graph import delta_model
    from trainer.export.publish import publish_version

    name = f"{version}-f16"
    if (artifacts / name).exists():
        return name
    loaded = load_version(artifacts / version)
    if loaded.delta_dtype != "float32":
        raise SystemExit(f"{version} was not published in float32")
    deltas = {}
    for domain in loaded.manifest.deltas:
        arrays = loaded.read_delta(domain)
        deltas[domain] = (delta_model(domain, arrays, "float16"), arrays)
    m = loaded.manifest
    publish_version(artifacts, name, loaded.shared_bytes, deltas, m.contract, domains=m.domains,
                    feature_store_version=m.feature_store_version, cold_start=m.cold_start, delta_dtype="float16")
    return name


def score(run: dict, version: str, batch: int = 16) -> tuple[dict[str, float], float, np.ndarray]:
    """Per-domain AUC, pooled AUC and every score of the holdout, served by ``version`` in this process."""
    from contracts.artifacts import open_artifacts
    from contracts.settings import load_settings
    from domain_registry import open_registry
    from feature_store import open_store
    from mamdr.quickstart_report import holdout_requests
    from serving.live import DomainTable, build_live
    from serving.reload import ServingState
    from serving.scoring import Job, score_many
    from trainer.evaluation import auc

    conf = run["settings"]
    settings = load_settings(**{"artifacts_url": conf["artifacts_url"], "feature_store.url": conf["feature_store"],
                                "registry.url": conf["registry"]})
    registry = open_registry(settings.registry.url, settings.registry)
    store = open_store(settings.feature_store.url, settings.feature_store)
    try:
        state = ServingState(settings=settings, store=store, registry=registry)
        state.domains = DomainTable.from_registry(registry, registry.change_counter())
        state.live = build_live(open_artifacts(settings.artifacts_url).root / version, settings.serving)
        requests = holdout_requests(run["holdout"], 10**9, settings.serving.max_items)
        labels: dict[str, list[int]] = defaultdict(list)
        scores: dict[str, list[float]] = defaultdict(list)
        every: list[float] = []
        for start in range(0, len(requests), batch):
            chunk = requests[start:start + batch]
            results = score_many(state, [Job(d, u, items) for d, u, items, _ in chunk])
            for (domain, _, _, ys), result in zip(chunk, results, strict=True):
                if isinstance(result, Exception):
                    raise result
                labels[domain].extend(ys)
                scores[domain].extend(result.scores)
                every.extend(result.scores)
        per_domain = {d: auc(labels[d], scores[d]) for d in sorted(labels)}
        pooled = auc([y for d in sorted(labels) for y in labels[d]], [s for d in sorted(labels) for s in scores[d]])
        return per_domain, pooled, np.asarray(every)
    finally:
        store.close()
        registry.close()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--short", action="store_true", help="the quickstart's --short data and model (a smoke run)")
    ap.add_argument("--workdir", type=Path, default=Path("runs/delta-precision"))
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    logging.basicConfig(level=logging.WARNING)
    workdir = args.workdir.expanduser().resolve()
    done = workdir / DONE
    t0 = time.monotonic()
    if done.exists():
        run = json.loads(done.read_text())
        trained = f"trained earlier in {run['train_seconds']:.0f} s"
    else:
        run = train(workdir, args.short, args.seed)
        run["train_seconds"] = time.monotonic() - t0
        done.write_text(json.dumps(run))
        trained = f"trained in {run['train_seconds']:.0f} s"
    artifacts = Path(run["settings"]["artifacts_url"].removeprefix("file://"))
    v32 = run["version"]
    v16 = publish_float16(artifacts, v32)
    auc32, pooled32, s32 = score(run, v32)
    auc16, pooled16, s16 = score(run, v16)
    print(f"ml-latest-small ({'short' if args.short else 'full'} quickstart run, seed {args.seed}): "
          f"{run['rounds']} rounds, version {v32}, {len(s32)} held-out clicks of {len(auc32)} domains "
          f"({trained})")
    print(f"{'domain':24s} {'AUC float32':>12s} {'AUC float16':>12s} {'difference':>11s}")
    for d in auc32:
        print(f"{d:24s} {auc32[d]:12.6f} {auc16[d]:12.6f} {auc16[d] - auc32[d]:+11.6f}")
    mean32 = float(np.nanmean(list(auc32.values())))
    mean16 = float(np.nanmean(list(auc16.values())))
    print(f"{'mean over domains':24s} {mean32:12.6f} {mean16:12.6f} {mean16 - mean32:+11.6f}")
    print(f"{'pooled':24s} {pooled32:12.6f} {pooled16:12.6f} {pooled16 - pooled32:+11.6f}")
    diff = np.abs(s16 - s32)
    print(f"served scores: max |float16 - float32| {diff.max():.2e}, mean {diff.mean():.2e}; "
          f"largest |AUC change| {max(abs(auc16[d] - auc32[d]) for d in auc32):.6f}")
    from contracts.artifacts import load_version

    paths = [load_version(artifacts / v).delta_paths for v in (v32, v16)]
    sizes = [sum(p.stat().st_size for p in found.values()) for found in paths]
    print(f"delta files: float32 {sizes[0] / 2**20:.2f} MiB, float16 {sizes[1] / 2**20:.2f} MiB "
          f"({len(paths[1])} domains with a delta)")


if __name__ == "__main__":
    main()
