"""Every rank a trainer on its own partitions (trainer/distributed/replica.py), over the embedded backends.

* The ranks consume disjoint partitions, each dead-letters the bad events of its own partitions, the
  replicas end bit-identical, and the published lineage counts every event exactly once; rank 0's
  versions after the first are incremental, and the live one loads the replicas' final model exactly.
* A worker killed mid-round fails the round cleanly on rank 0 (non-zero exit, nothing published for
  that round) and a restart of both ranks resumes from the last published offsets: the events counted
  along the live lineage equal the events produced, exactly (none lost, none applied twice).

Two ``mamdr trainer run --world-size 2`` processes on loopback (gloo, collective timeout 20 s); rank 1
SIGKILLs itself inside the second round, after its local training and before the reconciliation.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from contracts.settings import FeatureStoreSettings, StreamSettings
from domain_registry import open_registry
from feature_store import open_store
from stream import open_stream
from trainer.distributed.launch import free_port
from trainer.distributed.replica import state_digest
from trainer.service.state import ModelState, read_chain

from .test_trainer_crash_safety import DOMAINS, lineage_events, produce
from .test_trainer_incremental import assert_store_matches


def run_ranks(tmp: Path, failpoints: dict[int, str], round_events: int = 200,
              level: str = "WARNING") -> list[tuple[int, str]]:
    port = free_port()
    cmd = [sys.executable, "-m", "mamdr.cli", "--log-level", level, "trainer", "run",
           "--stream", f"file://{tmp}/stream/clicks", "--feature-store", f"file://{tmp}/fs",
           "--registry", f"sqlite://{tmp}/registry.db", "--artifacts", f"file://{tmp}/artifacts",
           "--emb-dim", "8", "--hidden", "16,8", "--round-events", str(round_events), "--inner-batches", "2",
           "--idle-exit", "1.0", "--world-size", "2", "--dist-timeout", "20"]
    procs = []
    for rank in (0, 1):
        env = {**os.environ, "RANK": str(rank), "WORLD_SIZE": "2", "LOCAL_RANK": str(rank),
               "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(port), "OMP_NUM_THREADS": "1",
               "MAMDR_FAILPOINTS": failpoints.get(rank, "")}
        procs.append(subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE))
    out = []
    for p in procs:
        _, err = p.communicate(timeout=240)
        out.append((p.returncode, err.decode()))
    return out


@pytest.mark.timeout(360)
def test_worker_killed_mid_round_fails_the_round_and_restart_resumes_from_published_offsets(tmp_path: Path) -> None:
    registry = open_registry(f"sqlite://{tmp_path}/registry.db")
    for d in DOMAINS:
        registry.create_domain(d)
    produced = produce(f"file://{tmp_path}/stream/clicks", 0, 500)

    (rc0, err0), (rc1, err1) = run_ranks(tmp_path, {1: "dist_mid_round:2"})
    assert rc1 == -9, err1[-2000:]  # the worker died by SIGKILL inside round 2
    assert rc0 != 0 and "distributed round failed" in err0, err0[-2000:]
    assert "Traceback" not in err0
    live = registry.live_model()
    assert live is not None
    published = sorted(p.name for p in (tmp_path / "artifacts").iterdir() if p.name.startswith("v"))
    assert published == [live.id]  # round 1 only: nothing of the failed round was published
    first = json.loads((tmp_path / "artifacts" / live.id / "manifest.json").read_text())
    assert first["events_included"] == 200

    (rc0, err0), (rc1, err1) = run_ranks(tmp_path, {}, round_events=1000)  # the rest in one round
    assert (rc0, rc1) == (0, 0), (err0[-2000:], err1[-2000:])
    total, offsets, chain = lineage_events(tmp_path)
    assert total == produced  # resumed at the published offsets: none lost, none twice
    stream = open_stream(f"file://{tmp_path}/stream/clicks", StreamSettings(create_topics=True))
    consumer = stream.consumer("check")
    assert offsets == consumer.end_offsets()
    consumer.close()
    assert chain[-1] == live.id and len(chain) == 2


@pytest.mark.timeout(360)
def test_ranks_consume_disjoint_partitions_dead_letter_their_own_and_count_every_event_once(tmp_path: Path) -> None:
    registry = open_registry(f"sqlite://{tmp_path}/registry.db")
    for d in DOMAINS:
        registry.create_domain(d)
    produced = produce(f"file://{tmp_path}/stream/clicks", 0, 500, bad_every=41)  # 13 poison events
    stream = open_stream(f"file://{tmp_path}/stream/clicks", StreamSettings())
    reader = stream.consumer(None)
    ends = reader.end_offsets()
    records = reader.poll(max_records=10_000, timeout_s=1.0)
    reader.close()
    assert len(records) == produced
    poison = {(r.partition, r.offset) for r in records if b"broken" in r.value}
    assert len(poison) == 13 and {p % 2 for p, _ in poison} == {0, 1}  # bad events on both ranks' partitions

    (rc0, err0), (rc1, err1) = run_ranks(tmp_path, {}, round_events=200, level="INFO")
    assert (rc0, rc1) == (0, 0), (err0[-2000:], err1[-2000:])
    assert "rank 0 consumes ['clicks:0', 'clicks:2']" in err0 and "rank 1 consumes ['clicks:1', 'clicks:3']" in err1
    digests = [re.findall(r"replica sha256 (\w+) after (\d+) rounds", err) for err in (err0, err1)]
    assert digests[0] and digests[0] == digests[1], digests  # same rounds, bit-identical replicas
    total, offsets, chain = lineage_events(tmp_path)
    assert total == produced and offsets == ends  # every event once, every partition's offset published
    assert len(chain) == int(digests[0][0][1]) >= 2
    # each rank dead-lettered the bad events of its own partitions, each once
    dlq = stream.dead_letter_stream().consumer(None)
    letters = [json.loads(r.value) for r in dlq.poll(max_records=10_000, timeout_s=1.0)]
    dlq.close()
    assert sorted((d["source_partition"], d["source_offset"]) for d in letters) == sorted(poison)
    manifests = [json.loads((tmp_path / "artifacts" / v / "manifest.json").read_text()) for v in chain]
    assert sum(m["metrics"]["rejected"] for m in manifests) == len(poison)
    assert sum(m["metrics"]["valid"] for m in manifests) == produced - len(poison)
    # rank 0 published incrementally (the rows every rank touched): the live version's checkpoint chain loads
    # the replicas' final model exactly (a row left out of a version's change set would stay stale in it), and
    # every kept version's feature store reads exactly its checkpoint's tables
    store = open_store(f"file://{tmp_path}/fs", FeatureStoreSettings())
    root = tmp_path / "artifacts"
    assert state_digest(ModelState.load(root, chain[0])[0]) == digests[0][-1][0]
    for version, manifest in zip(chain, manifests, strict=True):
        state, _ = ModelState.load(root, version)
        fs_version = manifest["feature_store_version"]
        assert_store_matches(store, state, fs_version)
        parent = store.describe(fs_version).parent
        if version == chain[-1]:  # the first version of the lineage
            assert parent is None and read_chain(root, version)["kind"] == "full"
        else:
            assert parent is not None and read_chain(root, version)["kind"] == "rows", version
    store.close()
