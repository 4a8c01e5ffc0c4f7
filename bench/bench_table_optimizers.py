"""Quality of the row-sparse table optimizers against dense Adam (the paper's) on a small offline run.

MAMDR (DN + DR, the streaming trainer's framework) on the synthetic benchmark (known ground truth,
users and items shared over domains), the same seeds, data, model and budget for each table
optimizer; mean test AUC over domains (and the ground truth's own AUC as the ceiling) and the time
per epoch. Rows with ``table_lr`` try the row-wise optimizers at another table learning rate.

    PYTHONPATH=$PWD ~/.cache/mamdr/venv/bin/python bench/bench_table_optimizers.py [--seeds 0,1] [--epochs 8]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
import numpy as np
import torch

from trainer.data.synthetic import make_synthetic
from trainer.frameworks import MAMDR, FrameworkConfig, fit
from trainer.models import ModelConfig, build_model

VARIANTS = [("dense", None), ("sparse_adam", None), ("sparse_adam", 1e-2), ("rowwise_adagrad", 0.05)]


def run(table_optimizer: str, table_lr: float | None, seed: int, epochs: int) -> tuple[float, float]:
    ds = make_synthetic(n_domains=6, n_users=1000, n_items=500, rows_per_domain=6000, seed=seed, signal=3.0)
    torch.manual_seed(seed)
    model = build_model("mlp", ModelConfig(n_users=ds.n_users, n_items=ds.n_items, n_domains=ds.n_domains,
                                           emb_dim=16, hidden=(64, 32), dropout=0.1))
    cfg = FrameworkConfig(epochs=epochs, patience=epochs, batch_size=256, k=2, seed=seed, dr_budget="half",
                          inner_lr=3e-3, beta_schedule="anneal", table_optimizer=table_optimizer, table_lr=table_lr)
    result = fit(MAMDR(model, ds, cfg))
    return result.test_auc, result.mean_epoch_time


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", default="0,1")
    parser.add_argument("--epochs", type=int, default=8)
    args = parser.parse_args()
    torch.set_num_threads(1)
    seeds = [int(s) for s in args.seeds.split(",")]
    base: dict[int, float] = {}
    print(f"MAMDR on synthetic (6 domains, 1000 users, 500 items, 36k rows; lr 3e-3, β annealed), "
          f"{args.epochs} epochs, seeds {seeds}; test AUC mean over domains", flush=True)
    for kind, lr in VARIANTS:
        aucs, times = [], []
        for seed in seeds:
            auc, t = run(kind, lr, seed, args.epochs)
            aucs.append(auc)
            times.append(t)
            if kind == "dense":
                base[seed] = auc
        delta = [a - base[s] for a, s in zip(aucs, seeds, strict=True)]
        label = f"{kind}" + (f" (table_lr {lr})" if lr is not None else " (table_lr = lr 3e-3)")
        print(f"  {label:36s} AUC {np.mean(aucs):.4f} ± {np.std(aucs):.4f}  Δ vs dense Adam "
              f"{np.mean(delta):+.4f} (per seed {', '.join(f'{d:+.4f}' for d in delta)}); "
              f"{np.mean(times):.2f} s/epoch", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
