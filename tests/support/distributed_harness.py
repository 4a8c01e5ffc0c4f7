"""Run saved round plans on N local ranks (loopback gloo): the tests' and the benchmark's driver.

``python -m tests.support.distributed_harness --plan DIR --rank R --world W --port P [--fs URL] --out DIR``
runs every plan in DIR (``<name>.pt`` tensors + ``<name>.json`` meta) as consecutive rounds; rank 0
writes the replica after the last round (``result.pt``) and the byte counters and round times
(``result.json``). Plans are plain tensors loaded with ``weights_only=True``.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from datetime import timedelta
from pathlib import Path

import torch
import torch.distributed as dist

from trainer.distributed.cache import CacheCounters
from trainer.distributed.plan import RoundPlan
from trainer.distributed.round import RoundWorker, run


def save_plan(plan: RoundPlan, folder: Path, name: str) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    torch.save(plan.tensors, folder / f"{name}.pt")
    (folder / f"{name}.json").write_text(json.dumps(plan.meta))


def load_plans(folder: Path) -> list[RoundPlan]:
    return [RoundPlan(json.loads(p.read_text()), torch.load(p.with_suffix(".pt"), weights_only=True))
            for p in sorted(folder.glob("*.json"))]


def replica_state(worker: RoundWorker) -> dict[str, torch.Tensor]:
    """What a round produced: θS (compact tables), θi of the targets, the table write-back deltas."""
    out = {f"model/{k}": v.detach().clone() for k, v in worker.model.state_dict().items()}
    for t in worker.plan.targets:
        out.update({f"delta/{t}/{n}": v.clone() for n, v in worker.params.delta(t).items()})
    for kind, (rows, delta) in worker.embedding_deltas().items():
        out[f"writeback/{kind}/rows"] = torch.from_numpy(rows)
        out[f"writeback/{kind}/delta"] = delta.clone()
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--plan", type=Path, required=True)
    parser.add_argument("--rank", type=int, required=True)
    parser.add_argument("--world", type=int, required=True)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--fs", default=None, help="feature store URL holding the plans' fs_version")
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--timeout", type=float, default=30.0)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    os.environ.update({"MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(args.port)})
    dist.init_process_group("gloo", init_method="env://", rank=args.rank, world_size=args.world,
                            timeout=timedelta(seconds=args.timeout))
    store = None
    if args.fs:
        from feature_store import open_store

        store = open_store(args.fs)
    from trainer.distributed.comm import all_reduce_sum, gather_to_root

    plans = load_plans(args.plan)
    totals, times, phases, worker = CacheCounters(), [], [], None
    for plan in plans:
        dist.barrier()
        t0 = time.perf_counter()
        counters = CacheCounters(plan_bytes=plan.nbytes() if args.rank else 0)
        worker = run(plan, args.rank, args.world, store, all_reduce_sum, gather_to_root, counters)
        times.append(time.perf_counter() - t0)
        phases.append(worker.seconds)
        totals = totals.add(CacheCounters.from_tensor(all_reduce_sum([counters.as_tensor()])[0]))
    if args.rank == 0 and worker is not None:
        args.out.mkdir(parents=True, exist_ok=True)
        torch.save(replica_state(worker), args.out / "result.pt")
        (args.out / "result.json").write_text(json.dumps({
            "counters": totals.to_json(), "round_seconds": times, "phases": phases,
            "events": [p.events() for p in plans]}))
    dist.barrier()
    dist.destroy_process_group()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
