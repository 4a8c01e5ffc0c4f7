"""A continual-trainer round at production scale: cost against table size and against active domains.

1. scale: one round of ``--round-clicks`` clicks on 2,000 hot users and items over 8 domains, after the
   user and item tables have seen N distinct ids each (N in ``--sizes``): round time (train = DN + DR,
   publish = feature store + checkpoint + ONNX) and peak RSS of the round (VmHWM, reset before it),
   each N in a fresh subprocess. The second round is measured (the first pays the ONNX exporter's
   warm-up and the optimizer's state). Target: train time and the round's peak-RSS increase flat
   within 1.5× from the smallest to the largest N.
2. throughput: clicks learned per second on one core = fresh clicks the round's DN pass trained on
   (each exactly once, plus ``replay_ratio`` replay rows each) / train seconds, for the N = smallest run.
3. per-domain cost: ``--domain-clicks`` clicks over 10/100/1,000/10,000 domains (``--domains``, round-robin,
   so min(domains, clicks) are active); the fixed cost per active domain is the slope of the round's time
   (train + publish) between two counts, also with the ingest of the round's clicks (prequential scoring
   and buffering per domain); goal 2 ms. ``--model small --store memory`` keeps 10,000 domains bounded.
4. bytes per round (part of 1.): what the measured round's publish wrote: the version folder + its
   trainer checkpoint (artifacts), the feature-store rows of the version (and their payload bytes),
   and every byte the process passed to write() during the round (``wchar``: artifacts, the file://
   feature store's SQLite pages and WAL, the stream's offsets). ``--full-publish`` measures the
   pre-incremental publish (every row, full checkpoint) for comparison; ``--plot PNG`` draws the
   publish time and bytes per round against N.

    PYTHONPATH=$PWD ~/.cache/mamdr/venv/bin/python bench/bench_round_scale.py \
        [--sizes 10000,100000,1000000] [--model paper|small] [--table-optimizer sparse_adam]

Settings the code under test does not know are skipped, so the same script measures an older tree
(``--skip scale`` etc.). One torch thread; every loop is bounded.
"""

from __future__ import annotations

import argparse
import contextlib
import itertools
import json
import logging
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
import torch
from bench_trainer import make_trainer, produce

from contracts.events import ClickEvent
from contracts.settings import TrainerSettings, load_settings

MODELS = {"paper": {"emb_dim": 128, "hidden": (256, 128, 64)}, "small": {"emb_dim": 16, "hidden": (32, 16)}}
HOT = 2000


def _status(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) * 1024
    return 0


def _reset_peak() -> None:
    with contextlib.suppress(OSError):
        Path("/proc/self/clear_refs").write_text("5")  # resets VmHWM to the current RSS (Linux)


def _wchar() -> int:
    for line in Path("/proc/self/io").read_text().splitlines():
        if line.startswith("wchar:"):
            return int(line.split()[1])
    return 0


def _tree_bytes(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file()) if path.exists() else 0


def clicks(n: int, n_domains: int, start: int, hot: int = HOT) -> list[bytes]:
    return [json.dumps(ClickEvent(event_id=f"e{i}", ts=1.7e9 + i, domain=f"d{i % n_domains}",
                                  user_id=f"x{(i * 7919) % hot}", item_id=f"y{(i * 104729) % hot}",
                                  clicked=int((i * 2654435761) % 7 < 3)).model_dump(),
                       separators=(",", ":")).encode() for i in range(start, start + n)]


def one_run(n_ids: int, n_domains: int, n_clicks: int, model: str, trainer_knobs: dict[str, Any],
            store: str, rounds: int = 2) -> dict[str, float]:
    """One trainer whose tables saw ``n_ids`` ids; ``rounds`` rounds of ``n_clicks``; figures of the last.

    The first round writes the whole tables (a new lineage) and pays the exporter's warm-up; with
    ``rounds`` 3 the file:// store has also finished moving that round's SQLite WAL into the database
    before the measured round, so its bytes are the measured round's own."""
    known = set(TrainerSettings.model_fields)
    knobs = {k: v for k, v in trainer_knobs.items() if k in known and v is not None}
    with tempfile.TemporaryDirectory(prefix="bench-scale-") as d:
        tmp = Path(d)
        url = f"file://{tmp}/stream/clicks"
        settings = load_settings(**{"home": str(tmp), "artifacts_url": f"file://{tmp}/artifacts",
                                    "stream.url": url,
                                        "stream.create_topics": True, "stream.group": "bench", "stream.partitions": 4,
                                    "stream.fsync": False,
                                    "trainer.round_events": n_clicks, "trainer.round_seconds": 3600.0,
                                    **{f"trainer.{k}": v for k, v in knobs.items()}})
        store_url = {"file": f"file://{tmp}/fs", "memory": "memory://scale"}[store]
        import bench_trainer

        bench_trainer.MODEL = MODELS[model]
        trainer = make_trainer(tmp, settings, n_domains, store_url=store_url)
        state = trainer.state
        assert state is not None
        # the tables have seen n_ids users and n_ids items (the hot ones among them)
        t0 = time.perf_counter()
        state.ensure([f"x{k}" for k in range(n_ids)], [f"y{k}" for k in range(n_ids)], [])
        trainer._rebuild_framework()
        grow_s = time.perf_counter() - t0
        timings: dict[str, float] = {}
        orig_train, orig_publish = trainer._train, trainer._publish

        def timed_train(*a: Any) -> Any:
            s = time.perf_counter()
            out = orig_train(*a)
            timings["train"] = time.perf_counter() - s
            return out

        def timed_publish(*a: Any) -> Any:
            s = time.perf_counter()
            out = orig_publish(*a)
            timings["publish"] = time.perf_counter() - s
            return out

        trainer._train, trainer._publish = timed_train, timed_publish  # type: ignore[method-assign]
        out: dict[str, float] = {}
        for r in range(rounds):
            produce(url, settings, clicks(n_clicks, n_domains, start=r * n_clicks))
            consumed, deadline = 0, time.monotonic() + 300
            assert trainer.consumer is not None
            t_ingest = time.perf_counter()
            while consumed < n_clicks and time.monotonic() < deadline:
                records = trainer.consumer.poll(max_records=5000, timeout_s=0.5)
                trainer.ingest(records)
                consumed += len(records)
            ingest_s = time.perf_counter() - t_ingest
            rss0 = _status("VmRSS")
            _reset_peak()
            w0 = _wchar()
            t0 = time.perf_counter()
            report = trainer.run_round()
            wrote = _wchar() - w0
            artifacts = tmp / "artifacts"
            version = report.version
            info = trainer.store.describe(version)
            dim = MODELS[model]["emb_dim"]
            last = getattr(trainer, "last_publish", {})
            out = {"round": time.perf_counter() - t0, "train": timings["train"], "publish": timings["publish"],
                   "ingest": ingest_s,
                   "version_bytes": _tree_bytes(artifacts / version),
                   "checkpoint_bytes": _tree_bytes(artifacts / ".trainer" / version),
                   "fs_rows": info.counts["user"] + info.counts["item"],
                   "fs_payload": (info.counts["user"] + info.counts["item"]) * dim * 4, "wchar": wrote,
                   "incremental": bool(last.get("fs_parent")), "checkpoint_kind": last.get("checkpoint", "full"),
                   "rss": rss0, "peak": _status("VmHWM"), "fresh": consumed,
                   "trained_rows": getattr(report, "trained_rows", 0), "domains": len(report.domains_trained),
                   "grow_s": grow_s, **{k: v for k, v in getattr(trainer, "_last_train", {}).items()}}
        out["peak_increase"] = out["peak"] - out["rss"]
        trainer.close()
        return out


def _child(args: argparse.Namespace, n_ids: int, n_domains: int, n_clicks: int) -> dict[str, float]:
    cmd = [sys.executable, __file__, "--one", f"{n_ids},{n_domains},{n_clicks}", "--model", args.model,
           "--store", args.store, "--rounds", str(args.rounds)]
    for flag in ("table_optimizer", "inner_batches", "replay_ratio", "dr_k", "specific", "precision"):
        value = getattr(args, flag)
        if value is not None:
            cmd += [f"--{flag.replace('_', '-')}", str(value)]
    if args.full_publish:
        cmd.append("--full-publish")
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=args.timeout, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"{cmd}: {done.stderr[-2000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="10000,100000,1000000")
    parser.add_argument("--round-clicks", type=int, default=20_000)
    parser.add_argument("--domains", default="10,100,1000,10000")
    parser.add_argument("--domain-clicks", type=int, default=5000)
    parser.add_argument("--model", choices=sorted(MODELS), default="paper")
    parser.add_argument("--store", choices=("file", "memory"), default="file")
    parser.add_argument("--table-optimizer", dest="table_optimizer", default=None)
    parser.add_argument("--inner-batches", dest="inner_batches", type=int, default=None)
    parser.add_argument("--replay-ratio", dest="replay_ratio", type=float, default=None)
    parser.add_argument("--dr-k", dest="dr_k", type=int, default=None)
    parser.add_argument("--specific", default=None, help="θi's scope (trainer.specific; default: the settings')")
    parser.add_argument("--precision", default=None, help="training forward: auto, bf16 or fp32 (trainer.precision)")
    parser.add_argument("--skip", default="", help="comma list of scale,domains to skip")
    parser.add_argument("--rounds", type=int, default=3, help="rounds per trainer; the last is measured")
    parser.add_argument("--full-publish", action="store_true", help="every row and a full checkpoint per round")
    parser.add_argument("--plot", help="write a PNG of publish time and bytes per round against N")
    parser.add_argument("--timeout", type=float, default=900.0, help="seconds per measured run")
    parser.add_argument("--one", help=argparse.SUPPRESS)
    args = parser.parse_args()
    torch.set_num_threads(1)
    logging.basicConfig(level=logging.ERROR)
    knobs: dict[str, Any] = {k: getattr(args, k) for k in ("table_optimizer", "inner_batches", "replay_ratio", "dr_k",
                                                          "specific", "precision")}
    if args.full_publish:
        knobs["incremental_publish"] = False
    if args.one:
        n_ids, n_domains, n_clicks = (int(x) for x in args.one.split(","))
        print(json.dumps(one_run(n_ids, n_domains, n_clicks, args.model, knobs, args.store, args.rounds)))
        return 0
    skip = set(args.skip.split(","))
    mb = 1024 * 1024
    print(f"model {args.model} {MODELS[args.model]}, knobs {knobs}, store {args.store}://, 1 torch thread, "
          f"round {args.rounds} of each trainer measured",
          flush=True)
    if "scale" not in skip:
        sizes = [int(x) for x in args.sizes.split(",")]
        runs = {}
        for n in sizes:
            r = runs[n] = _child(args, n, 8, args.round_clicks)
            print(f"  N={n:>9,} ids/table: round {r['round']:6.2f} s (train {r['train']:5.2f} s, publish "
                  f"{r['publish']:5.2f} s); RSS before {r['rss'] / mb:6.0f} MB, peak {r['peak'] / mb:6.0f} MB, "
                  f"round's peak increase {r['peak_increase'] / mb:5.0f} MB; {r['fresh']} clicks, "
                  f"{r['trained_rows']} rows in the DN pass; DN {r.get('dn_ms', 0) / 1000:.2f} s, "
                  f"DR {r.get('dr_ms', 0) / 1000:.2f} s", flush=True)
        lo, hi = runs[sizes[0]], runs[sizes[-1]]
        print("  bytes per round (the measured round's publish; ratio to the smallest N):", flush=True)
        for n in sizes:
            r = runs[n]
            art = r["version_bytes"] + r["checkpoint_bytes"]
            lo_art = lo["version_bytes"] + lo["checkpoint_bytes"]
            print(f"    N={n:>9,}: publish {r['publish']:6.2f} s ({r['publish'] / lo['publish']:5.2f}x); artifacts "
                  f"{art / mb:8.2f} MB ({art / lo_art:5.2f}x; version {r['version_bytes'] / mb:.2f} MB + "
                  f"{r['checkpoint_kind']} checkpoint {r['checkpoint_bytes'] / mb:.2f} MB); feature store "
                  f"{r['fs_rows']:,} rows = {r['fs_payload'] / mb:.2f} MB ({r['fs_payload'] / lo['fs_payload']:5.2f}x, "
                  f"{'incremental' if r['incremental'] else 'full'}); written by the process "
                  f"{r['wchar'] / mb:8.2f} MB ({r['wchar'] / lo['wchar']:5.2f}x)", flush=True)
        if args.plot:
            _plot(args.plot, sizes, runs, "full publish" if args.full_publish else "incremental publish")
        print(f"  ratio N={sizes[-1]:,} / N={sizes[0]:,}: train {hi['train'] / lo['train']:.2f}x, "
              f"round {hi['round'] / lo['round']:.2f}x, publish {hi['publish'] / lo['publish']:.2f}x, "
              f"round's peak RSS increase {hi['peak_increase'] / max(lo['peak_increase'], 1):.2f}x, "
              f"peak RSS {hi['peak'] / lo['peak']:.2f}x", flush=True)
        dn = lo.get("dn_ms", 0) / 1000
        print(f"  clicks learned per second (N={sizes[0]:,}, one core): {lo['fresh'] / lo['train']:,.0f} "
              f"(DN + DR; {lo['fresh'] / lo['round']:,.0f} including publish"
              + (f"; DN's pass alone {lo['fresh'] / dn:,.0f}" if dn else "") + ")", flush=True)
    if "domains" not in skip:
        counts = [int(x) for x in args.domains.split(",")]
        dom = {}
        for n in counts:
            r = dom[n] = _child(args, 10_000, n, args.domain_clicks)
            r["active"] = min(n, args.domain_clicks)  # clicks go round-robin over the domains
            print(f"  {args.domain_clicks} clicks over {n:6,d} domains ({r['domains']:,} trained): ingest "
                  f"{r['ingest']:6.2f} s, round {r['round']:6.2f} s (train {r['train']:6.2f} s, publish "
                  f"{r['publish']:6.2f} s)", flush=True)
        goal = 2.0
        print(f"  fixed cost per active domain (slope between points; goal {goal:.0f} ms):", flush=True)
        pairs = list(itertools.pairwise(counts)) + ([(counts[0], counts[-1])] if len(counts) > 2 else [])
        for a, b in pairs:
            da = dom[b]["active"] - dom[a]["active"]
            if da <= 0:
                continue
            slope = {k: (dom[b][k] - dom[a][k]) / da * 1000 for k in ("train", "publish", "round", "ingest")}
            whole = slope["round"] + slope["ingest"]
            print(f"    {dom[a]['active']:>6,} -> {dom[b]['active']:>6,} active: round {slope['round']:6.2f} ms "
                  f"(train {slope['train']:5.2f}, publish {slope['publish']:5.2f}) = {slope['round'] / goal:4.2f}x "
                  f"the goal; with ingest (prequential scoring) {whole:6.2f} ms = {whole / goal:4.2f}x", flush=True)
    return 0


def _plot(path: str, sizes: list[int], runs: dict[int, dict[str, float]], label: str) -> None:
    """Publish seconds and bytes per round against N (log-log), one PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    mb = 1024 * 1024
    fig, (a, b) = plt.subplots(1, 2, figsize=(10, 4))
    a.plot(sizes, [runs[n]["publish"] for n in sizes], "o-", label="publish")
    a.plot(sizes, [runs[n]["round"] for n in sizes], "s--", label="whole round")
    a.set(xscale="log", yscale="log", xlabel="ids per table (N)", ylabel="seconds", title=f"round time ({label})")
    a.legend()
    b.plot(sizes, [(runs[n]["version_bytes"] + runs[n]["checkpoint_bytes"]) / mb for n in sizes], "o-",
           label="artifacts (version + checkpoint)")
    b.plot(sizes, [runs[n]["fs_payload"] / mb for n in sizes], "s-", label="feature-store rows")
    b.plot(sizes, [runs[n]["wchar"] / mb for n in sizes], "^--", label="all bytes written (wchar)")
    b.set(xscale="log", yscale="log", xlabel="ids per table (N)", ylabel="MB per round", title="bytes per round")
    b.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    print(f"  plot: {path}", flush=True)


if __name__ == "__main__":
    sys.exit(main())
