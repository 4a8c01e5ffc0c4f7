"""Markdown table of ``dn_plateau_bench.py`` runs (per seed and mean) for docs/benchmarks.md.

Cost is in Alternate-epoch equivalents: epochs run × the per-epoch cost ratio measured on a quiet
machine by ``frameworks_epoch_time.py --emb-dim 32 --k 3`` (passed in, since wall times taken while
other jobs share the 2 cores are not comparable).

    python bench/summarize_runs.py runs/dnp/b05 runs/dnp/alt_dr --ratio dn=1.04 --ratio dr=5.06 --ratio mamdr=4.74
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from statistics import mean, stdev


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("folders", nargs="+", type=Path)
    p.add_argument("--ratio", action="append", default=[], help="framework=cost per epoch vs Alternate")
    args = p.parse_args()
    ratio = {"alternate": 1.0} | {k: float(v) for k, v in (r.split("=") for r in args.ratio)}
    print("| run | stage | seed | test AUC | best epoch / epochs run | best val AUC | cost (alt-epochs) |")
    print("|---|---|---|---|---|---|---|")
    for folder in args.folders:
        per: dict[str, list[float]] = {}
        for path in sorted(folder.glob("seed_*.json")):
            out = json.loads(path.read_text())
            seed = path.stem.split("_")[1]
            first_cost = 0.0  # a second stage (dr/mamdr) resumes after its first stage's epochs
            for key in (k for k in out if k not in ("args", "domains")):
                base = key.split()[0]
                stage_cost = len(out[key]["val_history"]) * ratio.get(base, float("nan"))
                second = base in ("dr", "mamdr")
                shown = first_cost + stage_cost if second else stage_cost
                if not second:
                    first_cost = stage_cost
                per.setdefault(key, []).append(out[key]["test_auc"])
                print(f"| {folder.name} | {key} | {seed} | {out[key]['test_auc']:.4f} | {out[key]['best_epoch']} / "
                      f"{out[key]['epochs']} | {out[key]['best_val_auc']:.4f} | {shown:.0f} |")
        for key, vals in per.items():
            spread = f" ± {stdev(vals):.4f}" if len(vals) > 1 else ""
            print(f"| {folder.name} | **{key} mean** | {len(vals)} seeds | **{mean(vals):.4f}{spread}** | | | |")


if __name__ == "__main__":
    main()
