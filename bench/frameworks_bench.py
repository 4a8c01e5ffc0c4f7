"""Framework benchmark for the closing note: average AUC / RANK and epoch time relative to Alternate.

Runs one seed per process (so seeds run side by side on separate cores, one torch thread each),
then ``--merge`` folds the per-seed results into one table (RANK is computed within each seed).

    python bench/frameworks_bench.py --seed 0 --out runs/bench &   # ... one per seed
    python bench/frameworks_bench.py --merge --out runs/bench
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch

from trainer.frameworks import FrameworkConfig
from trainer.research.experiment import ExperimentConfig, aggregate, run_experiment


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--merge", action="store_true")
    p.add_argument("--dataset", default="ml-latest-small")
    p.add_argument("--frameworks", default="alternate,dn,dr,mamdr")
    p.add_argument("--epochs", type=int, default=12)
    p.add_argument("--patience", type=int, default=3)
    p.add_argument("--k", type=int, default=3)
    p.add_argument("--beta", type=float, default=0.1)
    p.add_argument("--beta-schedule", default="anneal")
    p.add_argument("--dr-budget", default="half")
    p.add_argument("--emb-dim", type=int, default=128)
    p.add_argument("--schedule", default="interleaved")
    p.add_argument("--lr", type=float, default=1e-3)
    args = p.parse_args()
    methods = tuple(args.frameworks.split(","))
    fcfg = FrameworkConfig(epochs=args.epochs, patience=args.patience, k=args.k, beta=args.beta,
                           beta_schedule=args.beta_schedule, dr_budget=args.dr_budget,
                           schedule=args.schedule, inner_lr=args.lr)
    if args.merge:
        seeds = sorted(args.out.glob("seed_*/results.json"))
        per_seed, domains, summary = [], [], ""
        for path in seeds:
            res = json.loads(path.read_text())
            domains, summary = res["domains"], res["summary"]
            cells = {}
            for m, r in res["methods"].items():
                s = r["per_seed"][0]
                cells[m] = {**s, "per_domain": {domains.index(k): v for k, v in s["per_domain"].items()},
                            "epochs": r["epochs"][0], "best_epoch": r["best_epoch"][0],
                            "epoch_time_s": r["epoch_time_s"], "train_time_s": r["train_time_s"]}
            per_seed.append(cells)
        cfg = ExperimentConfig(dataset=args.dataset, model="mlp", methods=tuple(per_seed[0]),
                               seeds=tuple(range(len(per_seed))), out=args.out, framework=fcfg, emb_dim=args.emb_dim)
        # RANK across the methods of the table, within each seed, then mean ± std over seeds.
        from trainer.evaluation import average_rank

        for cells in per_seed:
            ranks = average_rank({m: c["per_domain"] for m, c in cells.items()})
            for m in cells:
                cells[m]["avg_rank"] = ranks[m]
        results = aggregate(cfg, per_seed, domains, summary)
        (args.out / "results.json").write_text(json.dumps(results, indent=2, sort_keys=True))
        print(summary)
        print(results["table"])
        return
    torch.set_num_threads(1)
    cfg = ExperimentConfig(dataset=args.dataset, model="mlp", methods=methods, seeds=(args.seed,),
                           out=args.out / f"seed_{args.seed}", framework=fcfg, emb_dim=args.emb_dim)
    res = run_experiment(cfg, lambda msg: print(msg, flush=True))
    print(res["table"])


if __name__ == "__main__":
    main()
