"""Streaming quality: the quickstart run end to end once per framework and seed, paired by seed.

Each run is ``mamdr quickstart`` exactly as a user runs it (``--framework F --seed S``): the benchmark's
clicks through the stream into the continual trainer, versions published and served, holdout clicks
scored over HTTP. Printed: per seed the served holdout AUC and the prequential AUC (every streamed click
scored by the model live when it arrived) of each framework, the paired difference to the baseline,
and its mean, spread and sign count; a plot of the per-round prequential AUC of each framework.

    PYTHONPATH=$PWD ~/.cache/mamdr/venv/bin/python bench/streaming_quality.py --seeds 0,1,2 \
        --plot docs/streaming_quality.png

``--short`` runs the quickstart's short plan (a tenth of the users; about a minute per run). ``--dataset amazon
--new-domain gift_cards --round-events 5000`` streams Amazon 5-core instead (9 rounds of 5,000 events; needs
MAMDR_SHARED_DATA): a stream the defaults were not chosen on. Each framework is also paired with the baseline
per domain (mean over seeds), which shows where a difference comes from.
"""

from __future__ import annotations

import argparse
import json
import logging
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

from mamdr.quickstart import QuickstartConfig, run_quickstart

METRICS = ("holdout_auc", "prequential_auc", "round_auc")
DOMAIN_METRICS = METRICS[:2]


def round_auc(rounds: list[float | None]) -> float:
    """Mean of the rounds' own prequential AUC from round 2 (round 1 has no live version to score it; runs
    recorded before that scored it with the untrained model, the same for every framework). Unlike the
    cumulative figure it never compares clicks of different rounds, which never compete for the same slate,
    so a model is not rewarded or penalised for how its score level moves between rounds."""
    values = [v for v in rounds[1:] if v is not None]
    return float(np.mean(values)) if values else float("nan")


def run_one(framework: str, seed: int, short: bool, workdir: Path, dataset: str = "ml-latest-small",
            new_domain: str | None = None, round_events: int | None = None) -> dict[str, Any]:
    extra = {"new_domain": new_domain} if new_domain else {}
    summary = run_quickstart(QuickstartConfig(workdir=workdir, short=short, framework=framework, seed=seed,
                                              dataset=dataset, round_events=round_events, progress=False,
                                              **extra))
    rounds = [r.get("prequential_round_auc") for r in summary["round_log"]]
    return {"framework": framework, "seed": seed, **{k: summary["mean"][k] for k in DOMAIN_METRICS},
            "round_auc": round_auc(rounds), "rounds": rounds,
            "domains": {d: {k: v[k] for k in DOMAIN_METRICS} for d, v in summary["domains"].items()},
            "dataset": dataset, "round_events": round_events, "seconds": summary["seconds"]}


def per_domain(runs: list[dict[str, Any]], framework: str, base: str, seeds: list[int]) -> str:
    """Each domain's paired difference (mean over seeds): where a framework gains and where it loses."""
    by = {(r["framework"], r["seed"]): r for r in runs}
    if not all("domains" in by[(f, s)] for f in (framework, base) for s in seeds):
        return ""  # runs written before per-domain figures were recorded
    domains = list(by[(base, seeds[0])]["domains"])
    lines = [f"| domain | {framework} − {base} holdout | prequential |", "|---|---:|---:|"]
    for d in domains:
        cells = []
        for m in DOMAIN_METRICS:  # a domain without a figure on a seed (None: too few clicks) is left out of its mean
            pairs = [(by[(framework, s)]["domains"].get(d, {}).get(m), by[(base, s)]["domains"][d].get(m))
                     for s in seeds]
            diffs = [a - b for a, b in pairs if a is not None and b is not None]
            cells.append(f"{statistics.mean(diffs):+.4f}" if diffs else "—")
        lines.append(f"| {d} | {cells[0]} | {cells[1]} |")
    return "\n".join(lines)


def table(runs: list[dict[str, Any]], frameworks: list[str], seeds: list[int]) -> str:
    base = frameworks[-1]
    by = {(r["framework"], r["seed"]): r for r in runs}
    head = "| seed | " + " | ".join(f"{f} {m.split('_')[0]}" for f in frameworks for m in METRICS) + " |"
    lines = [head, "|" + "---|" * (1 + len(frameworks) * len(METRICS))]
    for s in seeds:
        lines.append(f"| {s} | " + " | ".join(f"{by[(f, s)][m]:.4f}" for f in frameworks for m in METRICS) + " |")
    lines.append("")
    for f in frameworks[:-1]:
        for m in METRICS:
            diffs = [by[(f, s)][m] - by[(base, s)][m] for s in seeds]
            sd = statistics.stdev(diffs) if len(diffs) > 1 else float("nan")
            wins = sum(d > 0 for d in diffs)
            lines.append(f"{f} − {base}, {m}: mean {statistics.mean(diffs):+.4f} (sd {sd:.4f}), "
                         f"ahead on {wins} of {len(diffs)} seeds: {' '.join(f'{d:+.4f}' for d in diffs)}")
        detail = per_domain(runs, f, base, seeds)
        if detail:
            lines += ["", f"per domain, mean over seeds ({f} − {base}):", "", detail]
    return "\n".join(lines)


def plot(runs: list[dict[str, Any]], frameworks: list[str], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax, dx) = plt.subplots(1, 2, figsize=(12, 4.2))
    base = frameworks[-1]
    by = {(r["framework"], r["seed"]): r["rounds"] for r in runs}
    for f in frameworks:
        curves = [r["rounds"] for r in runs if r["framework"] == f]
        n = min(len(c) for c in curves)
        values = np.array([[np.nan if v is None else v for v in c[:n]] for c in curves], dtype=float)
        x = np.arange(1, n + 1)
        ax.plot(x, np.nanmean(values, axis=0), marker="o", label=f"{f} (mean of {len(curves)} seeds)")
        ax.fill_between(x, np.nanmin(values, axis=0), np.nanmax(values, axis=0), alpha=0.2)
        if f == base:
            continue
        seeds = sorted(s for (g, s) in by if g == f and (base, s) in by)
        for s in seeds:  # the paired difference, seed by seed: small gaps the left panel cannot show
            pairs = list(zip(by[(f, s)], by[(base, s)], strict=False))
            diff = [np.nan if a is None or b is None else a - b for a, b in pairs]
            dx.plot(np.arange(1, len(diff) + 1), diff, marker=".", alpha=0.7, label=f"{f} − {base}, seed {s}")
    ax.set_xlabel("round")
    ax.set_ylabel("prequential AUC of the round")
    ax.set_title("each round's clicks scored by the model live when they arrived", fontsize=10)
    ax.legend(loc="lower right", fontsize=8)
    dx.axhline(0.0, color="grey", linewidth=0.8)
    dx.set_xlabel("round")
    dx.set_ylabel("paired difference of the round's prequential AUC")
    dx.set_title("the same, as differences to the baseline", fontsize=10)
    dx.legend(loc="lower left", fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--frameworks", default="mamdr,alternate",
                    help="comma-separated; the last one is the baseline the others are paired against")
    ap.add_argument("--seeds", default="0,1,2", help="comma-separated seeds (each pairs all frameworks)")
    ap.add_argument("--short", action="store_true", help="the quickstart's short plan (a tenth of the users)")
    ap.add_argument("--dataset", default="ml-latest-small",
                    help="the quickstart's dataset (e.g. amazon, with MAMDR_SHARED_DATA: a stream the defaults "
                         "were not tuned on)")
    ap.add_argument("--new-domain", default=None, help="the domain the quickstart onboards mid-stream "
                                                       "(required for a dataset without film-noir)")
    ap.add_argument("--round-events", type=int, default=None,
                    help="events per trainer round (default the plan's: 40,000, --short 15,000; Amazon's 54k "
                         "clicks need fewer)")
    ap.add_argument("--plot", type=Path, default=None, help="write the per-round prequential plot here")
    ap.add_argument("--json", type=Path, default=None, help="write every run's figures here")
    ap.add_argument("--merge", type=Path, nargs="+", default=None,
                    help="print and plot the runs of earlier --json files instead of running (seeds run apart)")
    args = ap.parse_args(argv)
    if args.merge:
        runs = [r for path in args.merge for r in json.loads(path.read_text())]
        for r in runs:  # files written before the per-round mean was recorded
            r.setdefault("round_auc", round_auc(r["rounds"]))
        streams = {(r.get("dataset", "ml-latest-small"), r.get("round_events")) for r in runs}
        if len(streams) > 1:
            raise SystemExit(f"--merge: the files hold runs of different streams {sorted(streams, key=str)}")
        frameworks = list(dict.fromkeys(r["framework"] for r in runs))
        frameworks.sort(key=lambda f: f == "alternate")  # the baseline last
        seeds = sorted({r["seed"] for r in runs})
        print(table(runs, frameworks, seeds))
        if args.plot:
            plot(runs, frameworks, args.plot)
        return 0
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    frameworks = args.frameworks.split(",")
    seeds = [int(s) for s in args.seeds.split(",")]
    runs: list[dict[str, Any]] = []
    todo = [(f, s) for s in seeds for f in frameworks]
    t0 = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="mamdr-streaming-quality-") as tmp:
        for n, (f, s) in enumerate(todo, 1):
            runs.append(run_one(f, s, args.short, Path(tmp) / f"{f}-{s}", args.dataset, args.new_domain,
                                args.round_events))
            took = time.monotonic() - t0
            r = runs[-1]
            print(f"[{n}/{len(todo)}] {f} seed {s}: holdout {r['holdout_auc']:.4f} prequential "
                  f"{r['prequential_auc']:.4f} ({r['seconds']:.0f} s; ETA {took / n * (len(todo) - n):.0f} s)",
                  file=sys.stderr, flush=True)
    if args.json:  # first: the runs took long, the table must not be able to lose them
        args.json.write_text(json.dumps(runs, indent=2) + "\n")
    print(f"\nstreaming quality ({args.dataset}, {'short' if args.short else 'full'} quickstart), paired by seed:\n")
    print(table(runs, frameworks, seeds))
    if args.plot:
        plot(runs, frameworks, args.plot)
        print(f"\nplot: {args.plot}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
