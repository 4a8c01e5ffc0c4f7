"""Bounded per-domain buffers of fresh events plus a replay reservoir of older ones.

Fresh rows wait for the next round; after a round they move into a reservoir (uniform reservoir
sampling, per domain) so that DN keeps seeing old domains and the model does not forget them.
Memory is bounded: when training falls behind, a full buffer keeps a uniform sample of what arrived
(reservoir sampling again) and counts what it had to drop, which the trainer reports as lag.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

ROW_DTYPE = np.dtype([("user", np.int64), ("item", np.int64), ("label", np.float32)])


@dataclass
class _Reservoir:
    capacity: int
    rows: np.ndarray = field(default_factory=lambda: np.empty(0, dtype=ROW_DTYPE))
    seen: int = 0

    def add(self, new: np.ndarray, rng: np.random.Generator) -> int:
        """Reservoir-sample ``new`` into the buffer; returns how many rows were not kept."""
        dropped = 0
        free = self.capacity - len(self.rows)
        if free > 0:
            take = new[:free]
            self.rows = np.concatenate([self.rows, take])
            self.seen += len(take)
            new = new[free:]
        for row in new:  # only runs once full: bounded work per event
            self.seen += 1
            j = int(rng.integers(0, self.seen))
            if j < self.capacity:
                self.rows[j] = row
            dropped += 1
        return dropped


class DomainBuffers:
    """Fresh rows per domain (bounded) and a replay reservoir per domain (bounded)."""

    def __init__(self, per_domain: int, reservoir: int, seed: int = 0) -> None:
        self.per_domain = per_domain
        self.reservoir_size = reservoir
        self.rng = np.random.default_rng(seed)
        self.fresh: dict[int, _Reservoir] = {}
        self.replay: dict[int, _Reservoir] = {}
        self.dropped = 0

    def add(self, domain: int, user: np.ndarray, item: np.ndarray, label: np.ndarray) -> None:
        rows = np.empty(len(user), dtype=ROW_DTYPE)
        rows["user"], rows["item"], rows["label"] = user, item, label
        buf = self.fresh.setdefault(domain, _Reservoir(self.per_domain))
        self.dropped += buf.add(rows, self.rng)

    def pending(self) -> int:
        return sum(len(b.rows) for b in self.fresh.values())

    def take_fresh(self) -> dict[int, np.ndarray]:
        """Hand over this round's fresh rows and start empty buffers."""
        out = {d: b.rows for d, b in self.fresh.items() if len(b.rows)}
        self.fresh = {}
        return out

    def retire(self, fresh: dict[int, np.ndarray]) -> None:
        """After a round, keep a uniform sample of what was trained on for replay."""
        for d, rows in fresh.items():
            self.replay.setdefault(d, _Reservoir(self.reservoir_size)).add(rows, self.rng)

    def replay_rows(self, domain: int) -> np.ndarray:
        r = self.replay.get(domain)
        return r.rows if r is not None else np.empty(0, dtype=ROW_DTYPE)

    def forget(self, users: np.ndarray, items: np.ndarray) -> int:
        """Drop buffered rows that use a freed user or item row (it may soon belong to another id)."""
        dropped = 0
        for buffers in (self.fresh, self.replay):
            for res in buffers.values():
                gone = np.isin(res.rows["user"], users) | np.isin(res.rows["item"], items)
                if gone.any():
                    res.rows = res.rows[~gone]
                    dropped += int(gone.sum())
        return dropped
