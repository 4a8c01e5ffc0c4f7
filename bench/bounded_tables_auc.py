"""Does the frequency filter or id expiry help (or hurt) accuracy on the quickstart's data?

Replays the prequential test's time-ordered slice of ml-latest-small (1 user in ``--share``, the five
largest genres, rounds of 2,500 events; tests/unit/test_trainer_prequential.py) through the
continual trainer once per setting and prints, per setting: the cumulative prequential AUC (each
event scored by the model before it trained on it; ids without a row scored with the cold vector),
the held-out test AUC of the final model (as serving scores: unknown or expired ids cold), and the
final table size. Same seed and data for every row.

    PYTHONPATH=$PWD ~/.cache/mamdr/venv/bin/python bench/bounded_tables_auc.py [--settings 1:0,2:0,3:0,1:2,1:4]

``--settings`` is a list of MIN_COUNT:EXPIRE_ROUNDS pairs.
"""

from __future__ import annotations

import argparse
import json
import logging
import tempfile
import time
from pathlib import Path
from typing import Any


def run(min_count: int, expire_rounds: int, tmp: Path, seed: int = 0) -> dict[str, Any]:
    import numpy as np
    import torch

    from contracts.settings import load_settings
    from domain_registry import open_registry
    from feature_store import open_store
    from stream import open_stream
    from tests.unit.test_trainer_prequential import EMB, HIDDEN, ROUND_EVENTS, mean_domain_auc, split_events
    from trainer.service.loop import ContinualTrainer

    torch.set_num_threads(1)
    streamed, test, domains = split_events()
    settings = load_settings(**{
        "home": str(tmp), "stream.url": f"file://{tmp}/stream/clicks", "stream.create_topics": True,
        "stream.group": "bench",
        "stream.partitions": 1, "stream.fsync": False, "trainer.round_events": ROUND_EVENTS,
        "trainer.round_seconds": 3600.0, "trainer.seed": seed, "trainer.min_count": min_count,
        "trainer.expire_rounds": expire_rounds,
    })
    registry = open_registry(f"sqlite://{tmp}/registry.db")
    for d in domains:
        registry.create_domain(d)
    store = open_store("memory://")
    stream = open_stream(settings.stream.url, settings.stream)
    with stream.producer() as producer:
        for e in streamed:
            producer.send(json.dumps({k: v for k, v in e.items() if k != "features"}).encode())
        producer.flush()
    trainer = ContinualTrainer(settings, stream=stream, store=store, registry=registry, artifacts=tmp / "artifacts",
                               model="mlp", model_config={"emb_dim": EMB, "hidden": HIDDEN})
    torch.manual_seed(seed)
    t0 = time.monotonic()
    trainer.start()
    rounds = 0
    while trainer.run(max_rounds=1, idle_exit_s=0.3):
        rounds += 1
    state = trainer.state
    assert state is not None
    figures = {
        "min_count": min_count, "expire_rounds": expire_rounds, "seed": seed, "rounds": rounds,
        "prequential_auc": round(trainer.prequential.mean_auc(), 4),
        "test_auc": round(mean_domain_auc(test, state.predict), 4),
        "user_rows": state.users.active, "item_rows": state.items.active,
        "test_cold_users": float(np.mean([e["user_id"] not in state.users for e in test])).__round__(3),
        "seconds": round(time.monotonic() - t0, 1),
    }
    trainer.close()
    stream.close()
    registry.close()
    return figures


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--settings", default="1:0,2:0,3:0,1:2,1:4")
    parser.add_argument("--seeds", default="0", help="trainer seeds (sampling, batch order, init), e.g. 0,1,2")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    for pair in args.settings.split(","):
        min_count, expire = (int(x) for x in pair.split(":"))
        for seed in (int(x) for x in args.seeds.split(",")):
            with tempfile.TemporaryDirectory(prefix="mamdr-bounded-") as tmp:
                print(json.dumps(run(min_count, expire, Path(tmp), seed)), flush=True)


if __name__ == "__main__":
    main()
