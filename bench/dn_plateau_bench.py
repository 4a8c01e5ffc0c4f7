"""Why DN/MAMDR lose to Alternate on ml-latest-small: one seed per process, one torch thread.

Stage 1 trains θS with ``--first`` (dn or alternate) under its own β/outer/patience/epoch budget;
stage 2 (optional ``--second`` mamdr or dr) resumes from stage 1's best θS exactly as a staged
``mamdr experiment`` would, but with its own epoch budget and γ, so the two stages can be sized apart.
Writes per-epoch validation AUC, epoch wall times and test AUC to ``OUT/seed_N.json``.

    python bench/dn_plateau_bench.py --seed 0 --first dn --beta 0.5 --patience 5 --epochs 40 \
        --second mamdr --second-epochs 10 --out runs/dnp/b05 &
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch

from trainer.frameworks import FrameworkConfig, build_framework, fit
from trainer.research.experiment import ExperimentConfig, build, load


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--dataset", default="ml-latest-small")
    p.add_argument("--emb-dim", type=int, default=32)
    p.add_argument("--first", default="dn", choices=("dn", "alternate"))
    p.add_argument("--epochs", type=int, default=40)
    p.add_argument("--patience", type=int, default=5)
    p.add_argument("--beta", type=float, default=0.5)
    p.add_argument("--beta-schedule", default="constant")
    p.add_argument("--outer", default="interp")
    p.add_argument("--outer-lr", type=float, default=0.1)
    p.add_argument("--second", default="", choices=("", "mamdr", "dr"))
    p.add_argument("--second-epochs", type=int, default=10)
    p.add_argument("--second-patience", type=int, default=3)
    p.add_argument("--k", type=int, default=3)
    p.add_argument("--gamma", type=float, default=0.1)
    p.add_argument("--second-lr", type=float, default=1e-3, help="inner (Adam) lr of the DR rounds")
    p.add_argument("--second-specific", default=None, help="θi parameters of stage 2 (default: all but embeddings)")
    p.add_argument("--variants", default="", help="more second stages on the same θS: 'γ/lr,γ/lr'")
    p.add_argument("--dr-budget", default="half")
    args = p.parse_args()
    torch.set_num_threads(1)
    torch.use_deterministic_algorithms(True, warn_only=True)
    fcfg = FrameworkConfig(epochs=args.epochs, patience=args.patience, beta=args.beta,
                           beta_schedule=args.beta_schedule, outer=args.outer, outer_lr=args.outer_lr,
                           k=args.k, gamma=args.gamma, dr_budget=args.dr_budget, schedule="staged",
                           seed=args.seed)
    cfg = ExperimentConfig(dataset=args.dataset, model="mlp", methods=(args.first,), seeds=(args.seed,),
                           out=args.out, framework=fcfg, emb_dim=args.emb_dim)
    ds = load(args.dataset, args.seed, None)
    out: dict = {"args": {k: str(v) for k, v in vars(args).items()}, "domains": ds.domains}

    def run(name: str, fc: FrameworkConfig, resume=None, key: str = ""):  # type: ignore[no-untyped-def]
        fw = build_framework(name, build(ds, cfg, args.seed), ds, fc)
        t0 = time.perf_counter()
        res = fit(fw, lambda e, v: print(f"seed {args.seed} {name} epoch {e + 1}: val AUC {v:.4f}", flush=True),
                  resume_shared=resume)
        wall = time.perf_counter() - t0
        start = len(resume.times) if resume is not None else 0
        out[key or name] = {
            "test_auc": res.test_auc, "per_domain": {ds.domains[d]: v for d, v in res.test.items()},
            "best_epoch": res.best_epoch + 1, "epochs": res.epochs, "best_val_auc": res.best_val_auc,
            "val_history": res.val_history[start:], "epoch_times_s": res.epoch_times[start:], "wall_s": wall}
        print(f"seed {args.seed} {key or name}: test AUC {res.test_auc:.4f} best epoch {res.best_epoch + 1} "
              f"of {res.epochs}, {sum(res.epoch_times[start:]):.0f}s train", flush=True)
        return res

    first = run(args.first, fcfg)
    if args.second and first.state is not None:
        first.state.stopper.patience = args.second_patience  # fit() copies the state; the budget is per stage
        second = fcfg.with_(epochs=args.second_epochs, patience=args.second_patience, inner_lr=args.second_lr,
                            specific=args.second_specific)
        run(args.second, second, first.state)
        for spec in filter(None, args.variants.split(",")):
            gamma, lr = (float(x) for x in spec.split("/"))
            run(args.second, second.with_(gamma=gamma, inner_lr=lr), first.state,
                key=f"{args.second} γ={gamma:g} lr={lr:g}")
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / f"seed_{args.seed}.json").write_text(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
