"""Why v2 infer trails /v1 under load: per-request Python cost of each protocol, and wrk runs taken in turns.

1. In-process, per request (100 candidates): decoding the body (orjson + validation, v2 also ``jobs_of``) and
   encoding the answer (v1 ``CTRResponse.model_dump_json``; v2 the ``V2InferResponse`` model, as before, and
   the orjson dict it is now). This is event-loop time, paid while holding the GIL the scoring thread needs.
2. One server, the paper MLP over Redis (bench_serving's setup), wrk at 8 and 64 connections on v1 and v2
   **in turns** (v1, v2, v1, v2, ...): bench_serving measures v1 then v2 minutes apart, and this machine's
   speed moves by 2-3x between minutes; medians over the rounds.

Run: ``PYTHONPATH=$PWD ~/.cache/mamdr/venv/bin/python bench/bench_protocols.py [--rounds 3] [--seconds 5]``
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import sys
import tempfile
import timeit
from pathlib import Path

import orjson

sys.path.insert(0, str(Path(__file__).resolve().parent))
import bench_serving as bs


def micro(repeat: int = 7, number: int = 2000) -> list[str]:
    from serving.schemas import CTRRequest, CTRResponse, parse_json
    from serving.v2 import V2InferRequest, V2InferResponse, V2Output, jobs_of

    items = [f"i{k}" for k in range(bs.N_CANDIDATES)]
    b1 = json.dumps({"user_id": "u42", "item_ids": items}).encode()
    b2 = json.dumps({"inputs": [{"name": "user_id", "shape": [1], "datatype": "BYTES", "data": ["u42"]},
                                {"name": "item_ids", "shape": [len(items)], "datatype": "BYTES",
                                 "data": items}]}).encode()
    scores = [0.5 + k / 1000 for k in range(len(items))]
    row = CTRResponse(scores=scores, model_version="v1", cold_user=False, cold_items=[], degraded=False)
    params = {"cold_users": [], "cold_items": [], "degraded": False}

    def v2_model() -> bytes:
        return V2InferResponse(model_name="d", model_version="v1", parameters=params, outputs=[
            V2Output(name="scores", datatype="FP32", shape=[len(items)], data=row.scores)]).model_dump_json().encode()

    def v2_orjson() -> bytes:
        return orjson.dumps({"model_name": "d", "model_version": "v1", "id": None, "parameters": params,
                             "outputs": [{"name": "scores", "shape": [len(items)], "datatype": "FP32",
                                          "data": row.scores}]})

    cases = {
        "v1 decode (orjson + CTRRequest)": lambda: CTRRequest.model_validate(parse_json(b1)),
        "v2 decode (orjson + V2InferRequest + jobs_of)": lambda: jobs_of(
            "d", V2InferRequest.model_validate(parse_json(b2)), 16),
        "v1 encode (CTRResponse.model_dump_json)": row.model_dump_json,
        "v2 encode, before (V2InferResponse model)": v2_model,
        "v2 encode, now (orjson of the same shape)": v2_orjson,
    }
    assert orjson.loads(v2_model()) == orjson.loads(v2_orjson())
    lines = []
    for name, fn in cases.items():
        us = min(timeit.repeat(fn, number=number, repeat=repeat)) / number * 1e6
        lines.append(f"  {name:48s} {us:7.1f} us")
    return lines


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--seconds", type=float, default=5.0)
    ap.add_argument("--users", type=int, default=5000)
    args = ap.parse_args()
    print("per request, in-process (min of 7 repeats):", flush=True)
    for line in micro():
        print(line, flush=True)
    tmp = Path(tempfile.mkdtemp(prefix="bench-protocols-"))
    redis_proc, redis_url = bs.start_redis(tmp)
    try:
        world = bs.build_world(tmp, redis_url, args.users, args.users)
        server = bs.Server(tmp, redis_url, tmp / "registry.db", cache=256, composition="feed")
        try:
            domains = [f"dom-{d}" for d in range(4)]
            reqs = {p: bs._bodies(world, domains, 500, seed=1, protocol=p) for p in ("v1", "v2")}
            for p in reqs:
                bs.run_requests(server.port, reqs[p][:100])  # warm-up
            found: dict[tuple[str, int], list[float]] = {}
            for _ in range(args.rounds):
                for connections in (8, 64):
                    for p in ("v1", "v2"):
                        w = bs.wrk(server.port, reqs[p], connections, args.seconds, tmp)
                        if w["errors"]:
                            raise SystemExit(f"{p}: {w['errors']:.0f} non-2xx answers")
                        found.setdefault((p, connections), []).append(w["rps"])
            print(f"wrk in turns, {args.rounds} rounds of {args.seconds:.0f} s, one server (median req/s, all runs):")
            for connections in (8, 64):
                med = {p: statistics.median(found[(p, connections)]) for p in ("v1", "v2")}
                runs = "  ".join(f"{p} [{', '.join(f'{r:.0f}' for r in found[(p, connections)])}]" for p in med)
                print(f"  {connections:2d} connections: v1 {med['v1']:6.0f}  v2 {med['v2']:6.0f}  "
                      f"(v2/v1 {med['v2'] / med['v1']:.2f})   {runs}", flush=True)
        finally:
            server.stop()
    finally:
        redis_proc.terminate()
        redis_proc.wait(10)
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
