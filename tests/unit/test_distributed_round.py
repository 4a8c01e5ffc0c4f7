"""Distributed MAMDR round: two gloo ranks on loopback give the same model as one process running
the same schedule, and the embedding caches move exactly the touched rows.

Tolerance 1e-6 (float32): the only difference allowed is the summation order inside gloo's
all-reduce; with two ranks a + b is commutative so the result is usually bit-identical.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from feature_store import open_store
from tests.support.distributed_harness import replica_state, save_plan
from trainer.data.base import Split
from trainer.distributed.cache import CacheCounters
from trainer.distributed.launch import free_port
from trainer.distributed.plan import build_plan
from trainer.distributed.round import simulate
from trainer.distributed.service import Coordinator
from trainer.models import ModelConfig
from trainer.service.state import ModelState

DIM = 8
N_PUB = {"user": 40, "item": 30}
KNOBS = {"beta": 0.5, "gamma": 0.5, "k": 1, "inner_batches": 3, "batch_size": 16, "lr": 0.01}


def make_round(tmp: Path) -> tuple[ModelState, dict[int, Split], object]:
    """3 domains, 60 users, 45 items; the first 40 users / 30 items are in a published store version."""
    torch.manual_seed(0)
    state = ModelState("mlp", ModelConfig(n_users=64, n_items=64, n_domains=0, emb_dim=DIM, hidden=(16, 8)))
    state.ensure([f"u{i}" for i in range(60)], [f"i{i}" for i in range(45)], ["a", "b", "c"])
    rng = np.random.default_rng(1)
    train = {}
    for slot, n in enumerate((70, 50, 9)):  # a small domain: fewer rows than one batch per rank
        users = rng.integers(0, 60, n)
        items = rng.integers(0, 45, n)
        train[slot] = Split(user=users, item=items, label=(rng.random(n) < 0.3).astype(np.float32))
    with torch.no_grad():
        state.params.set_delta(2, {n: torch.randn_like(p) * 0.01 for n, p in state.params.shared_specific().items()})
    store = open_store(f"file://{tmp}/fs")
    store.declare("v000001", {"user": DIM, "item": DIM})
    store.write("v000001", "user", state.users.ids[:40], state.model.user_embedding.weight[:40].detach().numpy())
    store.write("v000001", "item", state.items.ids[:30], state.model.item_embedding.weight[:30].detach().numpy())
    store.publish("v000001")
    return state, train, store


def touched(train: dict[int, Split], kind: str) -> np.ndarray:
    return np.unique(np.concatenate([getattr(s, kind) for s in train.values()]))


@pytest.mark.timeout(120)
def test_two_ranks_match_the_single_process_schedule_and_count_cache_bytes(tmp_path: Path) -> None:
    state, train, store = make_round(tmp_path)
    plan = build_plan(state, train, targets=[0, 2], order=[1, 0, 2], round_no=3, seed=5, knobs=KNOBS,
                      fs_version="v000001", n_published=N_PUB)
    save_plan(plan, tmp_path / "plans", "r0")
    port = free_port()
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    procs = [subprocess.Popen([sys.executable, "-m", "tests.support.distributed_harness",
                               "--plan", str(tmp_path / "plans"),
                               "--rank", str(r), "--world", "2", "--port", str(port), "--fs", f"file://{tmp_path}/fs",
                               "--out", str(tmp_path / "out"), "--timeout", "30"], env=env, stderr=subprocess.PIPE)
             for r in range(2)]
    for p in procs:
        _, err = p.communicate(timeout=100)
        assert p.returncode == 0, err.decode()[-3000:]
    got = torch.load(tmp_path / "out" / "result.pt", weights_only=True)
    ref = replica_state(simulate(plan, 2, store))
    assert sorted(got) == sorted(ref)
    for key in ref:
        assert torch.allclose(got[key], ref[key], atol=1e-6, rtol=0), key
    # the round did train: θS moved, both targets' θi moved, the rows were written back as deltas
    before = plan.dense()
    assert (got["model/tower.0.weight"] - before["tower.0.weight"]).abs().max() > 1e-4
    for t in (0, 2):
        old = plan.deltas().get(t, {}).get("tower.0.weight", torch.zeros(()))
        assert (got[f"delta/{t}/tower.0.weight"] - old).abs().max() > 1e-5
    assert got["writeback/user/delta"].abs().sum(1).gt(0).float().mean() > 0.5  # cached rows were trained

    # caches: each rank fetched the published touched rows once; the new ones came with the plan
    counters = json.loads((tmp_path / "out" / "result.json").read_text())["counters"]
    users, items = touched(train, "user"), touched(train, "item")
    old_rows = int((users < 40).sum() + (items < 30).sum())
    new_rows = len(users) + len(items) - old_rows
    assert counters["fetched_rows"] == 2 * old_rows
    assert counters["fetched_bytes"] == 2 * old_rows * DIM * 4
    assert counters["from_plan_rows"] == 2 * new_rows
    theta_s = sum(v.numel() for k, v in state.model.named_parameters()
                  if k not in ("user_embedding.weight", "item_embedding.weight"))
    theta_i = sum(state.params.delta_shape(n).numel() for n in state.params.specific_names)  # one row
    tables = (len(users) + len(items)) * DIM
    # DN: both ranks all-reduce θS + touched rows; DR: each rank gathers its one target's θi to rank 0
    assert counters["exchange_bytes"] == 4 * (2 * (theta_s + tables) + 2 * theta_i)
    assert counters["uncached_bytes"] > counters["fetched_bytes"]


def test_write_back_applies_touched_rows_once_as_a_delta(tmp_path: Path) -> None:
    state, train, store = make_round(tmp_path)
    plan = build_plan(state, train, targets=[1], order=[2, 1, 0], round_no=0, seed=0, knobs=KNOBS,
                      fs_version="v000001", n_published=N_PUB)
    worker = simulate(plan, 2, store)
    table_before = state.model.user_embedding.weight.detach().clone()
    counters = CacheCounters()
    Coordinator(2, store)._write_back(type("T", (), {"state": state})(), worker, counters)  # type: ignore[arg-type]
    users, items = touched(train, "user"), touched(train, "item")
    after = state.model.user_embedding.weight.detach()
    untouched = np.setdiff1d(np.arange(after.shape[0]), users)
    assert torch.equal(after[untouched], table_before[untouched])
    assert torch.allclose(after[users], worker.model.user_embedding.weight[: len(users)].detach(), atol=1e-6)
    assert counters.written_rows == len(users) + len(items)
    assert counters.written_bytes == (len(users) + len(items)) * DIM * 4
    assert torch.equal(state.model.tower[0].weight, worker.model.tower[0].weight)
    assert torch.equal(state.params.delta(1)["tower.0.weight"], worker.params.delta(1)["tower.0.weight"])
