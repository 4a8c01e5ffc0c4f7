"""A trainer killed at any moment and restarted loses no event and applies none twice.

The trainer runs as a subprocess on the embedded backends (file:// stream, file:// feature store,
sqlite registry) and SIGKILLs itself at named failpoints (trainer/service/failpoints.py) while
events keep arriving between runs. Afterwards the events counted along the live version's lineage
(each published manifest's ``events_included``) must equal the events produced, exactly, and the
final offsets must equal the log's end.
"""

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
from stream import open_stream

DOMAINS = ("alpha", "beta", "gamma")


def produce(stream_url: str, start: int, count: int, bad_every: int = 97) -> int:
    stream = open_stream(stream_url, StreamSettings(create_topics=True))
    with stream.producer() as producer:
        for n in range(start, start + count):
            if n % bad_every == 0:
                producer.send(b'{"event_id": "broken"')  # poison: must be dead-lettered and counted
                continue
            producer.send(ClickEvent(event_id=f"e{n}", ts=time.time(), domain=DOMAINS[n % 3],
                                     user_id=f"u{n % 50}", item_id=f"i{(n * 7) % 80}", clicked=(n // 3) % 2))
        producer.flush()
    stream.close()
    return count


def run_trainer(tmp: Path, failpoints: str | None) -> int:
    env = {**os.environ, "MAMDR_FAILPOINTS": failpoints or ""}
    cmd = [sys.executable, "-m", "mamdr.cli", "--log-level", "WARNING", "trainer", "run",
           "--stream", f"file://{tmp}/stream/clicks", "--feature-store", f"file://{tmp}/fs",
           "--registry", f"sqlite://{tmp}/registry.db", "--artifacts", f"file://{tmp}/artifacts",
           "--emb-dim", "8", "--hidden", "16,8", "--round-events", "400", "--inner-batches", "2",
           "--idle-exit", "1.0",
           # the count walks every manifest of the lineage back to its root: retention must keep them all
           "--keep-versions", "1000"]
    proc = subprocess.run(cmd, env=env, capture_output=True, timeout=240)
    if proc.returncode not in (0, -9):
        raise AssertionError(proc.stderr.decode()[-3000:])
    return proc.returncode


def lineage_events(tmp: Path) -> tuple[int, dict[str, int], list[str]]:
    registry = open_registry(f"sqlite://{tmp}/registry.db")
    live = registry.live_model()
    assert live is not None
    total, version, chain = 0, live.id, []
    offsets: dict[str, int] | None = None
    while version:
        manifest = json.loads((tmp / "artifacts" / version / "manifest.json").read_text())
        offsets = offsets if offsets is not None else manifest["offsets"]
        total += manifest["events_included"]
        chain.append(version)
        version = manifest["parent"]
    return total, offsets or {}, chain


@pytest.mark.timeout(600)
def test_kill_minus_nine_at_every_stage_loses_nothing_and_double_counts_nothing(tmp_path: Path) -> None:
    registry = open_registry(f"sqlite://{tmp_path}/registry.db")
    for d in DOMAINS:
        registry.create_domain(d)
    registry.close()
    stream_url = f"file://{tmp_path}/stream/clicks"
    produced = 0
    codes = []
    for i, point in enumerate(["mid_round:1", "mid_publish:1", "after_checkpoint:1", "after_export:1",
                               "after_commit:1"]):
        produced += produce(stream_url, produced, 450 + 50 * i)
        codes.append(run_trainer(tmp_path, point))
    assert codes.count(-9) >= 4, codes  # the failpoints really fired
    produced += produce(stream_url, produced, 300)
    assert run_trainer(tmp_path, None) == 0
    total, offsets, chain = lineage_events(tmp_path)
    assert total == produced, (total, produced, chain)
    stream = open_stream(stream_url, StreamSettings(create_topics=True))
    consumer = stream.consumer("check")
    assert offsets == consumer.end_offsets()
    consumer.close()
    stream.close()
