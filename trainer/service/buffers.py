"""Per-domain buffers of fresh events plus a replay reservoir of older ones, all numpy, no per-row loops.

Fresh rows wait for the next round, which trains on every one of them at least once; after a round
they move into a reservoir (uniform reservoir sampling, per domain) from which later rounds mix
replay rows in, so that DN keeps seeing old domains and the model does not forget them.

Memory is bounded twice: a round holds at most ``round_events`` events (the loop stops polling
there), and ``per_domain`` caps one domain's fresh rows; beyond the cap a uniform sample is kept
and the excess is counted in ``dropped`` (never silent: the trainer exports it as a metric and
logs it). ``sample_fresh`` is the ``sample`` overload policy's down-sampling of a whole round.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch

from trainer.data.base import Split
from trainer.frameworks.base import Batch

ROW_DTYPE = np.dtype([("user", np.int64), ("item", np.int64), ("label", np.float32)])


def _reservoir_add(rows: np.ndarray, seen: int, capacity: int, new: np.ndarray,
                   rng: np.random.Generator) -> tuple[np.ndarray, int, int]:
    """Algorithm R over a whole chunk at once: returns (rows, seen, rows not kept).

    Row k of ``new`` (the (seen+k+1)-th ever) replaces slot j ~ U[0, seen+k] when j < capacity; a
    later row that draws the same slot wins, exactly as the one-at-a-time loop would."""
    free = capacity - len(rows)
    if free > 0:
        take = new[:free]
        rows = np.concatenate([rows, take])
        seen += len(take)
        new = new[free:]
    if not len(new):
        return rows, seen, 0
    slots = rng.integers(0, seen + np.arange(1, len(new) + 1))
    keep = slots < capacity
    rows[slots[keep]] = new[keep]  # numpy assigns repeated indices in order: the last one wins
    return rows, seen + len(new), len(new)


@dataclass
class _Reservoir:
    capacity: int
    rows: np.ndarray = field(default_factory=lambda: np.empty(0, dtype=ROW_DTYPE))
    seen: int = 0

    def add(self, new: np.ndarray, rng: np.random.Generator) -> int:
        """Reservoir-sample ``new`` into the buffer; returns how many rows were not kept."""
        self.rows, self.seen, dropped = _reservoir_add(self.rows, self.seen, self.capacity, new, rng)
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

    def sample_fresh(self, fresh: dict[int, np.ndarray], keep: int) -> tuple[dict[int, np.ndarray], int]:
        """A uniform sample of ``keep`` rows over all domains of ``fresh``; returns it and the rows dropped."""
        total = sum(len(r) for r in fresh.values())
        if total <= keep:
            return fresh, 0
        domains = list(fresh)
        sizes = np.array([len(fresh[d]) for d in domains])
        chosen = np.sort(self.rng.choice(total, size=keep, replace=False))
        bounds = np.concatenate([[0], np.cumsum(sizes)])
        out = {}
        for k, d in enumerate(domains):
            lo, hi = np.searchsorted(chosen, bounds[k]), np.searchsorted(chosen, bounds[k + 1])
            if hi > lo:
                out[d] = fresh[d][chosen[lo:hi] - bounds[k]]
        self.dropped += total - keep
        return out, total - keep

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
    def replay_sample(self, n: int) -> dict[int, np.ndarray]:
        """``n`` replay rows (fewer if the reservoirs hold fewer), uniform over every reservoir's rows so
        old domains keep appearing in proportion to their reservoirs; without replacement."""
        domains = [d for d, r in self.replay.items() if len(r.rows)]
        if n <= 0 or not domains:
            return {}
        sizes = np.array([len(self.replay[d].rows) for d in domains], dtype=np.float64)
        counts = self.rng.multinomial(min(n, int(sizes.sum())), sizes / sizes.sum())
        out = {}
        for d, c in zip(domains, counts, strict=True):
            if c:
                rows = self.replay[d].rows
                c = min(int(c), len(rows))
                out[d] = rows[self.rng.choice(len(rows), size=c, replace=False)] if c < len(rows) else rows.copy()
        return out


def round_batches(train: dict[int, Split], order: list[int], batch_size: int,
                  rng: torch.Generator) -> list[Batch]:
    """DN's inner batches for a round: every row of ``train`` exactly once, domains in ``order``.

    Each domain's rows are shuffled and laid end to end in the chained order, then cut into
    mini-batches of ``batch_size``: a domain with many rows gets its own consecutive batches (the
    per-domain chaining of Algorithm 1), while domains smaller than a batch share one with their
    neighbours in the order (those are joint steps within the chain). The number of optimizer steps
    is ⌈rows / batch_size⌉, however many domains the round holds: a domain costs one slice, not K
    steps of its own."""
    parts = [(d, train[d]) for d in order if len(train[d])]
    if not parts:
        return []
    # each domain's rows in a random order, all domains in one sort (random keys within each domain's segment):
    # a permutation and three copies per domain cost ~0.15 ms each, most of DN's setup at 10,000 domains.
    # np.concatenate makes fresh arrays whatever the split's stride (a one-row field of a record array keeps the
    # record's stride, which torch.from_numpy refuses)
    sizes = np.array([len(s) for _, s in parts], dtype=np.int64)
    keys = torch.rand(int(sizes.sum()), generator=rng, dtype=torch.float64).numpy()
    idx = np.lexsort((keys, np.repeat(np.arange(len(parts)), sizes)))
    user = torch.from_numpy(np.concatenate([s.user for _, s in parts])[idx])
    item = torch.from_numpy(np.concatenate([s.item for _, s in parts])[idx])
    label = torch.from_numpy(np.concatenate([s.label for _, s in parts])[idx])
    domain = torch.repeat_interleave(torch.tensor([d for d, _ in parts]), torch.from_numpy(sizes))
    return [(user[a:a + batch_size], item[a:a + batch_size], domain[a:a + batch_size], label[a:a + batch_size])
            for a in range(0, user.shape[0], batch_size)]
