"""Soak of bounded tables + retention: many quick rounds of a tiny model over ids that are always new.

Each round streams ``events_per_round`` clicks over three domains: half from a steady core of 30
users and 40 items, half from ``new_ids_per_round`` users and items never seen before (think of a
day of one-minute rounds with a constant churn of visitors). With ``expire_rounds`` and
``keep_versions`` the trainer frees the rows of ids gone quiet and deletes old versions; every
figure below must then stop growing after the first few rounds while ``ids_seen`` grows without bound:

- table_rows: rows of the user + item tables in use or free (the vocabulary's high-water mark);
- fs_keys: vectors stored in the feature store over all its versions;
- disk_bytes: every file under the artifacts folder (versions, husks, checkpoints);
- folders / checkpoints / registry_records / fs_versions: what retention keeps.

    PYTHONPATH=$PWD ~/.cache/mamdr/venv/bin/python bench/soak_retention.py [--rounds 300] [--expire-rounds 2]

``tests/unit/test_trainer_bounded_tables.py`` runs the same soak for 60 rounds and asserts flatness.
"""

from __future__ import annotations

import argparse
import json
import logging
import tempfile
import time
from pathlib import Path
from typing import Any

DOMAINS = ("alpha", "beta", "gamma")


def soak(tmp: Path, rounds: int = 36, events_per_round: int = 200, new_ids_per_round: int = 40,
         expire_rounds: int = 2, keep_versions: int = 3, min_count: int = 1,
         log_every: int = 0) -> list[dict[str, Any]]:
    import torch

    from contracts.events import ClickEvent
    from contracts.settings import load_settings
    from domain_registry import open_registry
    from feature_store import open_store
    from stream import open_stream
    from trainer.service.loop import ContinualTrainer
    from trainer.service.retention import disk_bytes

    torch.set_num_threads(1)
    settings = load_settings(**{
        "stream.url": f"file://{tmp}/stream/clicks", "stream.partitions": 1,
                                "stream.create_topics": True, "stream.fsync": False,
        "feature_store.url": f"file://{tmp}/fs", "registry.url": f"sqlite://{tmp}/reg.db",
        "artifacts_url": f"file://{tmp}/artifacts", "trainer.round_events": events_per_round,
        "trainer.round_seconds": 3600.0, "trainer.inner_batches": 1, "trainer.batch_size": 128,
        "trainer.reservoir_size": 500, "trainer.expire_rounds": expire_rounds,
        "trainer.keep_versions": keep_versions, "trainer.min_count": min_count,
    })
    registry = open_registry(settings.registry.url)
    for d in DOMAINS:
        registry.create_domain(d)
    stream = open_stream(settings.stream.url, settings.stream)
    store = open_store(settings.feature_store.url, settings.feature_store)
    trainer = ContinualTrainer(settings, stream=stream, store=store, registry=registry, artifacts=tmp / "artifacts",
                               model_config={"emb_dim": 4, "hidden": (8,)})
    root = tmp / "artifacts"
    seen: set[str] = set()
    figures: list[dict[str, Any]] = []
    n = 0
    try:
        for r in range(rounds):
            with stream.producer() as producer:
                for k in range(events_per_round):
                    if k % 2:
                        user, item = f"u{(n * 7) % 30}", f"i{(n * 11) % 40}"
                    else:
                        j = (k // 2) % new_ids_per_round
                        user, item = f"new-u{r}-{j}", f"new-i{r}-{j}"
                    seen.update((user, item))
                    producer.send(ClickEvent(event_id=f"e{n}", ts=time.time(), domain=DOMAINS[n % 3], user_id=user,
                                             item_id=item, clicked=(n // 5) % 2))
                    n += 1
                producer.flush()
            reports = trainer.run(max_rounds=1, idle_exit_s=0.3)
            assert reports, "the trainer published nothing"
            state = trainer.state
            assert state is not None
            fs_versions = store.versions()
            figures.append({
                "round": r + 1, "version": reports[-1].version, "ids_seen": len(seen),
                "table_rows": len(state.users) + len(state.items),
                "active_ids": state.users.active + state.items.active,
                "fs_keys": sum(sum(store.describe(v).counts.values()) for v in fs_versions),
                "fs_versions": len(fs_versions), "disk_bytes": disk_bytes(root),
                "folders": sum(1 for p in root.iterdir() if p.is_dir() and p.name.startswith("v")),
                "checkpoints": sum(1 for _ in (root / ".trainer").iterdir()),
                "registry_records": len(registry.list_models(10_000)),
            })
            if log_every and (r + 1) % log_every == 0:
                print(json.dumps(figures[-1]), flush=True)
    finally:
        trainer.close()
        store.close()
        stream.close()
        registry.close()
    return figures


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=300)
    parser.add_argument("--events", type=int, default=200, help="events per round")
    parser.add_argument("--new-ids", type=int, default=40, help="new users and items per round")
    parser.add_argument("--expire-rounds", type=int, default=2)
    parser.add_argument("--keep-versions", type=int, default=3)
    parser.add_argument("--min-count", type=int, default=1)
    parser.add_argument("--every", type=int, default=25, help="print the figures every this many rounds")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    with tempfile.TemporaryDirectory(prefix="mamdr-soak-") as tmp:
        t0 = time.monotonic()
        figures = soak(Path(tmp), args.rounds, args.events, args.new_ids, args.expire_rounds, args.keep_versions,
                       args.min_count, log_every=args.every)
        print(json.dumps({"rounds": len(figures), "seconds": round(time.monotonic() - t0, 1),
                          "first": figures[0], "last": figures[-1]}))


if __name__ == "__main__":
    main()
