"""The whole CTR benchmark as a time-ordered stream of click events, for the streaming replay.

Positives keep their observed time; each sampled negative takes the time of the positive it was sampled
against, so the replay interleaves clicks and non-clicks as a live log would. Ties are broken by (domain,
user, clicked first, item), and event ids number the events in that order, so the same source, seed and
options always give the same events with the same ids.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

from trainer.data.ctr_benchmark import SPLITS, BenchmarkTable
from trainer.data.loading import build_benchmark_table


class BenchmarkEvents:
    """Iterable of ClickEvent-shaped dicts in time order; ``domains`` lists the domain ids (slugs)."""

    def __init__(self, table: BenchmarkTable, *, with_split: bool = False) -> None:
        self.table = table
        self.domains: list[str] = list(table.source.domains)
        self.domain_names: list[str] = list(table.source.domain_names)
        self.with_split = with_split
        t = table
        self.order = np.lexsort((t.item, -t.label, t.user, t.domain, t.ts))
        self.prefix = f"{t.source.name}-s{t.seed}"

    def __len__(self) -> int:
        return int(self.order.shape[0])

    def __iter__(self) -> Iterator[dict[str, Any]]:
        t = self.table
        users, items = t.source.user_ids, t.source.item_ids
        width = max(len(str(len(self))), 6)
        o = self.order
        cols = zip(t.ts[o].tolist(), t.domain[o].tolist(), t.user[o].tolist(), t.item[o].tolist(),
                   t.label[o].astype(np.int64).tolist(), t.split[o].tolist(), strict=True)
        for n, (ts, d, u, i, clicked, s) in enumerate(cols):
            event: dict[str, Any] = {"event_id": f"{self.prefix}-{n:0{width}d}", "ts": ts,
                                     "domain": self.domains[d], "user_id": users[u], "item_id": items[i],
                                     "clicked": clicked}
            if self.with_split:
                event["features"] = {"split": SPLITS[s]}
            yield event


def benchmark_events(name_or_path: str | Path, *, seed: int = 0, data_dir: str | Path | None = None,
                     with_split: bool = False, **options: Any) -> BenchmarkEvents:
    """The benchmark of ``load_dataset(name_or_path, seed=...)`` as time-ordered click events.

    ``with_split=True`` adds ``features={"split": "train"|"val"|"test"}`` to each event so a replay can hold
    out the evaluation rows. Only raw sources with timestamps (MovieLens, Amazon) can be replayed.
    """
    return BenchmarkEvents(build_benchmark_table(name_or_path, seed=seed, data_dir=data_dir, **options),
                           with_split=with_split)
