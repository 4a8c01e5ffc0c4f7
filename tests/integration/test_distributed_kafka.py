"""The stream spread over the ranks, on a real broker: rank r reads (validates, trains on) the partitions
p % W == r, and rank 0 alone publishes and commits the offsets of every partition."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from contracts.events import ClickEvent
from contracts.settings import StreamSettings
from domain_registry import open_registry
from stream import drain, open_stream
from tests.fixtures.kafka_broker import KafkaTopic
from trainer.distributed.launch import free_port

DOMAINS = ["comedy", "drama", "horror", "kids", "noir", "western"]


def _settings(topic: KafkaTopic) -> StreamSettings:
    return StreamSettings(url=topic.url, partitions=topic.partitions, timeout_s=10.0, create_topics=True)


def _produce(topic: KafkaTopic, n: int) -> None:
    with open_stream(topic.url, _settings(topic)) as stream, stream.producer() as producer:
        for i in range(n):
            producer.send(ClickEvent(event_id=f"e{i}", ts=time.time(), domain=DOMAINS[i % len(DOMAINS)],
                                     user_id=f"u{i % 40}", item_id=f"i{(i * 7) % 60}", clicked=(i // 3) % 2))


def test_sharded_consumers_split_the_partitions_and_rank_0_commits_them_all(kafka_topic_factory) -> None:
    topic = kafka_topic_factory(3)
    _produce(topic, 240)
    with open_stream(topic.url, _settings(topic)) as stream:
        ends = stream.consumer(None).end_offsets()
        with stream.consumer(topic.group, shard=(0, 2)) as rank0, stream.consumer(None, shard=(1, 2)) as rank1:
            mine = drain(rank0, sum(v for k, v in ends.items() if int(k.rsplit(":", 1)[1]) % 2 == 0), timeout_s=20)
            theirs = drain(rank1, ends[f"{topic.name}:1"], timeout_s=20)
            filled = {int(k.rsplit(":", 1)[1]) for k, v in ends.items() if v > 0}  # keys hash to partitions
            assert {r.partition for r in mine} == filled & {0, 2} and {r.partition for r in theirs} == filled & {1}
            assert len(mine) + len(theirs) == 240
            assert rank0.poll(timeout_s=0.3) == [] and rank1.poll(timeout_s=0.3) == []
            rank1.seek({f"{topic.name}:0": 0})  # another shard's partition: ignored, not an error
            assert rank1.poll(timeout_s=0.3) == []
            rank0.commit(ends)  # rank 0 commits the worker's partition too
        with stream.consumer(topic.group) as fresh:
            assert fresh.committed() == ends
            assert fresh.poll(timeout_s=1.0) == []


@pytest.mark.timeout(300)
def test_two_ranks_consume_their_own_partitions_and_rank_0_publishes_every_offset(kafka_topic_factory,
                                                                                  tmp_path: Path) -> None:
    topic = kafka_topic_factory(2)
    registry = open_registry(f"sqlite://{tmp_path}/registry.db")
    for d in DOMAINS:
        registry.create_domain(d)
    _produce(topic, 300)
    port = free_port()
    cmd = [sys.executable, "-m", "mamdr.cli", "--log-level", "INFO", "trainer", "run", "--stream", topic.url,
           "--group", topic.group, "--feature-store", f"file://{tmp_path}/fs",
           "--registry", f"sqlite://{tmp_path}/registry.db", "--artifacts", f"file://{tmp_path}/artifacts",
           "--emb-dim", "8", "--hidden", "16,8", "--round-events", "150", "--inner-batches", "2",
           "--idle-exit", "3.0", "--world-size", "2", "--dist-timeout", "60"]
    procs = []
    for rank in (0, 1):
        env = {**os.environ, "RANK": str(rank), "WORLD_SIZE": "2", "LOCAL_RANK": str(rank),
               "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(port), "OMP_NUM_THREADS": "1"}
        procs.append(subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE))
    outs = [p.communicate(timeout=240) for p in procs]
    for p, (_, err) in zip(procs, outs, strict=True):
        assert p.returncode == 0, err.decode()[-3000:]
    worker_log = outs[1][1].decode()
    assert f"rank 1 consumes ['{topic.name}:1']" in worker_log, worker_log[-2000:]
    summary = json.loads(outs[0][0].decode().strip().splitlines()[-1])
    assert summary["events"] == 300 and summary["rounds"] == 2  # two rounds of exactly round_events
    assert "replica sha256" in worker_log and worker_log.split("replica sha256 ")[1].split()[0] == \
        outs[0][1].decode().split("replica sha256 ")[1].split()[0]  # the replicas ended identical
    live = registry.live_model()
    assert live is not None
    manifest = json.loads((tmp_path / "artifacts" / live.id / "manifest.json").read_text())
    with open_stream(topic.url, _settings(topic)) as stream:
        ends = stream.consumer(None).end_offsets()
        assert ends[f"{topic.name}:1"] > 0  # the worker's partition had events ...
        assert manifest["offsets"] == ends  # ... and rank 0 published every partition's offset
        with stream.consumer(topic.group) as group:
            assert group.committed() == ends  # and committed them
