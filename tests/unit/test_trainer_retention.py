"""Retention (issue 13.5) and never resetting silently (13.6), on a tiny in-process trainer.

The trainer runs on the embedded backends (file:// stream, file:// feature store, sqlite registry)
with a tiny MLP and rounds of a few hundred events. Retention keeps the newest ``keep_versions``
versions plus the live, pinned and rollback-target ones and every file a kept manifest references;
it must never delete one of those, and a crash inside it (``mid_gc`` failpoint) must leave a state
from which serving loads every registered version and the trainer resumes.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from contracts.artifacts import load_version, read_manifest
from contracts.errors import ConfigError, Conflict
from contracts.events import ClickEvent
from contracts.settings import StreamSettings, load_settings
from domain_registry import open_registry
from feature_store import open_store
from stream import open_stream
from trainer.service.loop import ContinualTrainer
from trainer.service.retention import apply_retention, published_versions
from trainer.service.state import CHECKPOINT_DIR, checkpoint_chain

DOMAINS = ("alpha", "beta", "gamma")
REPO = Path(__file__).resolve().parents[2]


def produce(url: str, start: int, count: int, domains: tuple[str, ...] = DOMAINS, users: int = 40,
            items: int = 60) -> int:
    stream = open_stream(url, StreamSettings(partitions=1, create_topics=True))
    with stream.producer() as producer:
        for n in range(start, start + count):
            producer.send(ClickEvent(event_id=f"e{n}", ts=time.time(), domain=domains[n % len(domains)],
                                     user_id=f"u{n % users}", item_id=f"i{(n * 7) % items}", clicked=(n // 3) % 2))
        producer.flush()
    stream.close()
    return start + count


def make_trainer(tmp: Path, new_lineage: bool = False, extra: dict[str, object] | None = None,
                 **trainer: object) -> ContinualTrainer:
    overrides = {f"trainer.{k}": v for k, v in {"round_events": 300, "inner_batches": 1, "batch_size": 128,
                                                 "round_seconds": 3600.0, **trainer}.items()}
    settings = load_settings(**{"stream.url": f"file://{tmp}/stream/clicks", "stream.partitions": 1,
                                "stream.create_topics": True,
                                "feature_store.url": f"file://{tmp}/fs", "registry.url": f"sqlite://{tmp}/reg.db",
                                "artifacts_url": f"file://{tmp}/artifacts", **overrides, **(extra or {})})
    registry = open_registry(settings.registry.url)
    for d in DOMAINS:
        if d not in {x.id for x in registry.list_domains()}:
            registry.create_domain(d)
    return ContinualTrainer(settings, stream=open_stream(settings.stream.url, settings.stream),
                            store=open_store(settings.feature_store.url, settings.feature_store), registry=registry,
                            artifacts=tmp / "artifacts", model_config={"emb_dim": 4, "hidden": (8,)},
                            new_lineage=new_lineage)


def rounds(trainer: ContinualTrainer, n: int) -> list[str]:
    return [r.version for r in trainer.run(max_rounds=n, idle_exit_s=0.3)]


def assert_consistent(tmp: Path, exact: bool = True) -> None:
    """Every registered version loads as serving loads it, has its checkpoint and its embeddings.

    ``exact``: and no version folder is left without a record (after a crash mid-gc the records of
    doomed versions may be gone while their folders wait for the next gc: garbage, not damage).
    """
    root = tmp / "artifacts"
    registry = open_registry(f"sqlite://{tmp}/reg.db")
    store = open_store(f"file://{tmp}/fs")
    fs_versions = set(store.versions())
    for m in registry.list_models(1000):
        loaded = load_version(root / m.id)
        assert (root / CHECKPOINT_DIR / m.id / "meta.json").exists(), m.id
        assert loaded.manifest.feature_store_version in fs_versions, m.id
    registered = {m.id for m in registry.list_models(1000)}
    assert set(published_versions(root)) == registered if exact else registered <= set(published_versions(root))
    registry.close()
    store.close()


def test_retention_keeps_newest_live_pinned_rollback_target_and_referenced_files(tmp_path: Path) -> None:
    """Direct: six exported versions; dom-1 and dom-2 never change, so every manifest points at v000001's files."""
    import torch

    from tests.support.tiny_model import publish_demo, train_tiny

    tiny = train_tiny("mlp", steps=2, delta_steps=1, n_domains=3, seed=3)
    root, registry, store = tmp_path / "artifacts", open_registry(f"sqlite://{tmp_path}/reg.db"), open_store("memory://")
    parent = None
    for k in range(1, 7):
        version = f"v{k:06d}"
        if k == 4:  # dom-0's delta changes once: from v000004 on its file lives in v000004
            tiny.params.set_delta(0, {n: t + 0.01 for n, t in tiny.params.delta(0).items()})
        publish_demo(tiny, root, store, registry, version, parent=parent, feature_store_version=version)
        (root / CHECKPOINT_DIR / version).mkdir(parents=True)
        (root / CHECKPOINT_DIR / version / "meta.json").write_text("{}")
        parent = version
    assert read_manifest(root / "v000006").deltas["dom-1"].path == "v000001/deltas/dom-1.onnx"
    assert registry.rollback().id == "v000005"  # live v000005; the next rollback would restore v000004
    report = apply_retention(root, registry, store, keep_versions=2, pinned=("v000002",))
    kept = ["v000002", "v000004", "v000005", "v000006"]  # pinned, rollback target, live, newest two
    assert report.kept == kept
    assert published_versions(root) == kept
    assert sorted(report.records) == sorted(report.feature_store) == report.checkpoints == ["v000001", "v000003"]
    assert not (root / "v000003").exists()
    husk = sorted(p.relative_to(root).as_posix() for p in (root / "v000001").rglob("*") if p.is_file())
    # no manifest, no shared graph: only deltas kept manifests point at (dom-0's by pinned v000002)
    assert husk == ["v000001/deltas/dom-0.onnx", "v000001/deltas/dom-1.onnx", "v000001/deltas/dom-2.onnx"]
    for version in kept:
        load_version(root / version)  # verifies every checksum, including the husk's files
        assert (root / CHECKPOINT_DIR / version).exists()
    assert sorted(store.versions()) == kept
    assert apply_retention(root, registry, store, keep_versions=2, pinned=("v000002",)).deleted == 0  # idempotent
    assert registry.rollback().id == "v000004"
    with torch.no_grad():
        assert load_version(root / "v000004").read_delta("dom-1")
    # a kept manifest that cannot be read: retention deletes no file and no embeddings (it cannot know
    # which files that version uses); the doomed folder waits for a readable manifest
    (root / "v000003" / "deltas").mkdir(parents=True)
    (root / "v000003" / "deltas" / "dom-0.onnx").write_bytes(b"x")
    (root / "v000002" / "manifest.json").write_text("{")
    assert apply_retention(root, registry, store, keep_versions=2, pinned=("v000002",)).folders == []
    assert (root / "v000003" / "deltas" / "dom-0.onnx").exists()
    registry.close()


def test_trainer_resumes_from_a_rollback_and_keeps_its_target(tmp_path: Path) -> None:
    url = f"file://{tmp_path}/stream/clicks"
    n = 0
    trainer = make_trainer(tmp_path, keep_versions=2, pinned_versions=("v000002",))
    for _ in range(6):
        n = produce(url, n, 300)
        rounds(trainer, 1)
    trainer.close()
    root = tmp_path / "artifacts"
    assert published_versions(root) == ["v000002", "v000005", "v000006"]  # newest 2 + pinned
    assert_consistent(tmp_path)
    registry = trainer.registry
    assert registry.rollback().id == "v000005"
    assert apply_retention(root, registry, trainer.store, 2, ("v000002",)).deleted == 0
    trainer = make_trainer(tmp_path, keep_versions=2)  # v000002 no longer pinned
    n = produce(url, n, 300)
    assert rounds(trainer, 1) == ["v000007"]
    trainer.close()
    assert read_manifest(root / "v000007").parent == "v000005"  # resumed from the rolled-back-to version
    # newest two (v000006 is rolled back, still among them), live v000007, rollback target v000005
    assert published_versions(root) == ["v000005", "v000006", "v000007"]
    assert_consistent(tmp_path)


def test_missing_checkpoint_refuses_to_start_unless_new_lineage(tmp_path: Path) -> None:
    url = f"file://{tmp_path}/stream/clicks"
    produce(url, 0, 300)
    trainer = make_trainer(tmp_path)
    assert rounds(trainer, 1) == ["v000001"]
    trainer.close()
    ckpt = tmp_path / "artifacts" / CHECKPOINT_DIR / "v000001"
    for f in ckpt.iterdir():
        f.unlink()
    ckpt.rmdir()
    with pytest.raises(ConfigError, match=r"v000001 has no trainer checkpoint.*--new-lineage") as err:
        make_trainer(tmp_path).start()
    assert "\n" not in err.value.message
    produce(url, 300, 300)
    trainer = make_trainer(tmp_path, new_lineage=True)
    assert rounds(trainer, 1) == ["v000002"]
    trainer.close()
    assert read_manifest(tmp_path / "artifacts" / "v000002").parent is None  # a new lineage, on purpose


def test_cli_names_the_fix_in_one_line(tmp_path: Path) -> None:
    registry = open_registry(f"sqlite://{tmp_path}/reg.db")
    from domain_registry.base import ModelVersion

    registry.register_model(ModelVersion(id="v000003", created_at=time.time(), artifact_uri="file:///x/v000003"))
    registry.promote("v000003")
    registry.close()
    proc = subprocess.run([sys.executable, "-m", "mamdr.cli", "trainer", "run", "--stream",
                           f"file://{tmp_path}/stream/clicks", "--feature-store", f"file://{tmp_path}/fs",
                           "--registry", f"sqlite://{tmp_path}/reg.db", "--artifacts",
                           f"file://{tmp_path}/artifacts", "--idle-exit", "0.2"],
                          capture_output=True, text=True, timeout=120, env=_env())
    assert proc.returncode != 0
    lines = [line for line in proc.stderr.splitlines() if line.startswith("mamdr: error")]
    assert len(lines) == 1 and "--new-lineage" in lines[0], proc.stderr[-2000:]


def test_rollback_never_reaches_past_the_kept_checkpoints(tmp_path: Path) -> None:
    """Checkpoints are kept for every retained version and records go with their files."""
    url = f"file://{tmp_path}/stream/clicks"
    n = 0
    trainer = make_trainer(tmp_path, keep_versions=2)
    for _ in range(5):
        n = produce(url, n, 300)
        rounds(trainer, 1)
    trainer.close()
    registry = trainer.registry
    restored = []
    while True:
        try:
            restored.append(registry.rollback().id)
        except Conflict as exc:
            assert "no earlier" in exc.message
            break
        make_trainer(tmp_path).start()  # resumable from every version a rollback can reach
    assert restored == ["v000004"]  # v000003 and older were forgotten with their files
    assert_consistent(tmp_path)


def _env(**extra: str) -> dict[str, str]:
    env = {**os.environ, **extra}
    env["PYTHONPATH"] = str(REPO) + os.pathsep + env.get("PYTHONPATH", "")
    return env


def run_cli_trainer(tmp: Path, failpoints: str = "", keep: int = 2) -> int:
    cmd = [sys.executable, "-m", "mamdr.cli", "--log-level", "WARNING", "trainer", "run",
           "--stream", f"file://{tmp}/stream/clicks", "--feature-store", f"file://{tmp}/fs",
           "--registry", f"sqlite://{tmp}/reg.db", "--artifacts", f"file://{tmp}/artifacts",
           "--emb-dim", "4", "--hidden", "8", "--round-events", "300", "--inner-batches", "1",
           "--idle-exit", "0.5", "--keep-versions", str(keep)]
    proc = subprocess.run(cmd, env=_env(MAMDR_FAILPOINTS=failpoints, MAMDR_STREAM__PARTITIONS="1"),
                          capture_output=True, timeout=240)
    if proc.returncode not in (0, -9):
        raise AssertionError(proc.stderr.decode()[-3000:])
    return proc.returncode


@pytest.mark.timeout(600)
def test_crash_inside_gc_leaves_a_consistent_state_and_the_next_gc_finishes(tmp_path: Path) -> None:
    registry = open_registry(f"sqlite://{tmp_path}/reg.db")
    for d in DOMAINS:
        registry.create_domain(d)
    registry.close()
    url = f"file://{tmp_path}/stream/clicks"
    n = produce(url, 0, 1500)  # five rounds
    assert run_cli_trainer(tmp_path, "mid_gc:4") == -9  # killed inside the 4th gc, after its record deletes
    assert_consistent(tmp_path, exact=False)
    restarted = make_trainer(tmp_path, keep_versions=2)
    restarted.start()  # a start finishes the interrupted gc before any new event arrives
    restarted.close()
    assert_consistent(tmp_path)
    root = tmp_path / "artifacts"
    # leftovers of writers killed mid-write: removed once older than the grace period
    stale = [root / ".tmp-v000099-deadbeef", root / CHECKPOINT_DIR / ".tmp-v000099-deadbeef"]
    for path in stale:
        path.mkdir(parents=True)
        (path / "shared.onnx").write_bytes(b"x" * 100)
        os.utime(path, (time.time() - 3600, time.time() - 3600))
    n = produce(url, n, 300)
    assert run_cli_trainer(tmp_path) == 0
    assert_consistent(tmp_path)
    assert not any(p.exists() for p in stale)
    registry = open_registry(f"sqlite://{tmp_path}/reg.db")
    live = registry.live_model()
    assert live is not None
    versions = published_versions(root)
    assert len(versions) == 2 and live.id == versions[-1]
    # the kept versions' checkpoints and the links of their incremental chains back to a full base, no more
    needed = sorted({link for v in versions for link in checkpoint_chain(root, v)})
    assert set(versions) <= set(needed)
    assert sorted(p.name for p in (root / CHECKPOINT_DIR).iterdir()) == needed
    assert set(open_store(f"file://{tmp_path}/fs").versions()) == set(versions)
    # nothing lost: the live manifest's offsets are the log's end
    stream = open_stream(url, StreamSettings(partitions=1, create_topics=True))
    consumer = stream.consumer("check")
    assert read_manifest(root / live.id).offsets == consumer.end_offsets()
    consumer.close()
    stream.close()
    # and a gc repeated now deletes nothing
    assert apply_retention(root, registry, open_store(f"file://{tmp_path}/fs"), 2).deleted == 0
