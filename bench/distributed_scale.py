"""The paper's production scale on paper (docs/distributed.md): memory of 69,102 domain deltas,
bytes moved per outer step with and without the embedding caches, workers needed for an event rate.

    python bench/distributed_scale.py [--worker-events-s 900 --rate 50000 --domains-per-step 100 --k 8]

Parameter counts come from the real model code (the zoo's MLP at the paper's sizes), not constants.
"""

from __future__ import annotations

import argparse
import math

import numpy as np

from trainer.models import ModelConfig, build_model
from trainer.params import DomainParameters

PAPER = {"domains": 69_102, "users": 84_307_785, "items": 16_385_662, "train": 420_097_203,
         "ps": 40, "workers": 400, "batch": 1024, "emb": 128}
GB = 1e9


def mlp_counts(emb: int = 128, hidden: tuple[int, ...] = (256, 128, 64)) -> dict[str, int]:
    """θS dense size and the size of one θi as ``DomainParameters`` holds it (one domain row)."""
    model = build_model("mlp", ModelConfig(n_users=1, n_items=1, n_domains=2, emb_dim=emb, hidden=hidden))
    params = DomainParameters(model)
    tables = set(model.SHARED_TABLES)
    dense = sum(p.numel() for n, p in model.named_parameters() if n not in tables) - emb  # one domain row
    held = sum(t.numel() for t in params.delta(1).values())  # what the trainer really allocates
    return {"dense": dense, "delta_row": held, "domain_table_width": emb}


def unique_rows(draws: int, population: int, zipf_a: float, seed: int = 0) -> int:
    """Distinct ids among ``draws`` Zipf-distributed draws (a click stream's long tail)."""
    rng = np.random.default_rng(seed)
    return int(np.unique(rng.zipf(zipf_a, draws) % population).size)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--worker-events-s", type=float, default=None,
                        help="measured events/s of one worker (bench/bench_distributed.py, world 1)")
    parser.add_argument("--rate", type=float, default=50_000.0, help="event rate to sustain (events/s)")
    parser.add_argument("--domains-per-step", type=int, default=100, help="domains in one worker's outer step")
    parser.add_argument("--k", type=int, default=8, help="inner mini-batches per domain (K)")
    parser.add_argument("--zipf", type=float, default=1.2, help="Zipf exponent of user/item popularity")
    args = parser.parse_args(argv)
    emb, d = PAPER["emb"], PAPER["domains"]
    c = mlp_counts(emb)
    print(f"MLP 3x{emb} -> 256-128-64 -> 1: dense theta_S {c['dense']:,} params (with one {emb}-wide domain row); "
          f"theta_i as exported {c['delta_row']:,} params")
    for name, nbytes in (("float32", 4), ("float16", 2)):
        print(f"  {d:,} deltas, {name}: {d * c['delta_row'] * nbytes / GB:6.1f} GB "
              f"({d * c['delta_row'] * nbytes / GB / PAPER['ps']:.2f} GB per PS over {PAPER['ps']})")
    full = d * (c["delta_row"] - emb + d * emb) * 4
    print(f"  (a full-size domain table in every delta, as a naive copy of θ per domain would hold it: "
          f"{full / GB:,.0f} GB float32)")
    tables = (PAPER["users"] + PAPER["items"]) * emb * 4
    print(f"user+item tables: {tables / GB:.1f} GB float32 ({tables / GB / PAPER['ps']:.2f} GB per PS)")

    steps = args.domains_per_step * args.k
    draws = steps * PAPER["batch"]
    per_step_rows = 2 * PAPER["batch"]
    u = unique_rows(draws, PAPER["users"], args.zipf, 1)
    i = unique_rows(draws, PAPER["items"], args.zipf, 2)
    row = emb * 4
    dense = c["dense"] * 4
    without = steps * 2 * (per_step_rows * row + dense)  # pull + push at every inner step
    with_cache = 2 * ((u + i) * row + dense)  # static fill once, delta write-back once
    print(f"one worker outer step = {args.domains_per_step} domains x K={args.k} = {steps} inner steps "
          f"of {PAPER['batch']} rows ({draws:,} samples; {u:,} distinct users, {i:,} distinct items, "
          f"Zipf {args.zipf})")
    print(f"  without caches: {without / GB:7.2f} GB moved per worker per outer step")
    print(f"  with caches:    {with_cache / GB:7.2f} GB (x{without / with_cache:.0f} less); "
          f"x{PAPER['workers']} workers: {with_cache * PAPER['workers'] / GB:.0f} GB per outer step")
    if args.worker_events_s:
        need = math.ceil(args.rate / args.worker_events_s)
        epoch_h = PAPER["train"] / (PAPER["workers"] * args.worker_events_s) / 3600
        print(f"at {args.worker_events_s:,.0f} events/s per worker: {args.rate:,.0f} events/s needs >= {need} "
              f"workers (perfect scaling); {PAPER['workers']} workers pass the {PAPER['train']:,} samples in "
              f"{epoch_h:.1f} h")


if __name__ == "__main__":
    main()
