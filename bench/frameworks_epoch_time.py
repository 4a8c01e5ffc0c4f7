"""Epoch cost of each framework relative to Alternate, measured in the same process.

Expected (domain passes per epoch, k other domains in DR): Alternate 1, DN 1 (+ one outer step),
DR/MAMDR with ``dr_budget=half`` ≈ k + 2, with ``pass`` (the paper's full passes) ≈ 2k + 3.

    python bench/frameworks_epoch_time.py --emb-dim 32 --k 3
    python bench/frameworks_epoch_time.py --emb-dim 32 --k 3 --model deepfm \
        --frameworks alternate,joint,separate,weighted_loss,pcgrad,maml,reptile,mldg,dn,dr,mamdr
"""

from __future__ import annotations

import argparse
import time

import torch

from trainer.data import load_dataset
from trainer.frameworks import FrameworkConfig, build_framework
from trainer.models import ModelConfig, build_model


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--dataset", default="ml-latest-small")
    p.add_argument("--emb-dim", type=int, default=128)
    p.add_argument("--k", type=int, default=3)
    p.add_argument("--repeats", type=int, default=1)
    p.add_argument("--model", default="mlp")
    p.add_argument("--frameworks", default="",
                   help="comma list, each with the config default (DR/MAMDR: dr_budget=half); "
                        "default: the DN/DR/MAMDR variants")
    args = p.parse_args()
    torch.set_num_threads(1)
    ds = load_dataset(args.dataset, seed=0)
    print(ds.summary())
    cases: list[tuple[str, dict[str, str]]] = [
        ("alternate", {}), ("dn", {}), ("dn", {"outer": "adagrad"}), ("dr", {"dr_budget": "half"}),
        ("mamdr", {"dr_budget": "half"}), ("mamdr", {"dr_budget": "pass"})]
    if args.frameworks:
        names = [n.strip() for n in args.frameworks.split(",") if n.strip()]
        cases = [("alternate", {})] + [(n, {"dr_budget": "half"} if n in ("dr", "mamdr") else {})
                                       for n in names if n != "alternate"]
    times: dict[str, float] = {}
    for name, extra in cases:
        torch.manual_seed(0)
        model = build_model(args.model, ModelConfig(ds.n_users, ds.n_items, ds.n_domains, emb_dim=args.emb_dim))
        fw = build_framework(name, model, ds, FrameworkConfig(k=args.k, **extra))
        rng = torch.Generator().manual_seed(0)
        fw.train_epoch(0, rng) if name == "alternate" else None  # warm-up (allocator, optimizer state)
        best = float("inf")
        for r in range(args.repeats):
            start = time.perf_counter()
            fw.train_epoch(r + 1, rng)
            best = min(best, time.perf_counter() - start)
        label = name + "".join(f" {k}={v}" for k, v in extra.items())
        times[label] = best
        print(f"{label:<28} {best:8.2f} s/epoch  {best / times['alternate']:6.2f}× alternate", flush=True)
    print(f"expected with k={args.k}: half ≈ {args.k + 2}×, pass ≈ {2 * args.k + 3}× (equal-size domains)")


if __name__ == "__main__":
    main()
