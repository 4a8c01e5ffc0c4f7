"""External id ↔ table row, growing as a stream brings new users, items and domains; bounded on request.

By default rows are assigned in arrival order and never reused, so a row index is stable for the life
of a model lineage. Two options bound the user and item tables on an endless stream of new ids
(Monolith's frequency filter and expirable embeddings; ``TrainerSettings.min_count``,
``expire_rounds``, ``expire_seconds``):

- frequency filter (``min_count`` > 1): an id gets its own row only at its ``min_count``-th
  sighting. Until then ``rows()`` gives -1: the id is scored with the cold-start vector (the mean of
  the live rows, ``Manifest.cold_start``) and its events do not train an embedding. Ids below the
  threshold are counted in a bounded map (``filter_capacity`` ids; the least recently seen forgotten).
- expiry: ``expire()`` frees the rows of ids not seen for ``rounds`` rounds or ``seconds`` seconds;
  freed rows go to a free list and are reused (lowest first) before the table grows, so the table
  (and the feature-store version written from it) stays as large as the ids seen recently.

The vocabulary is saved with every version (plain JSON, never pickled): ``ids`` with ``null`` for
free rows, plus the last-seen marks and the filter's counts. An incremental version saves only the
rows that changed since the last publish (``changes``: rows assigned, freed or seen; ids that lost
their row), so a version costs what the round touched, not the vocabulary.
"""

from __future__ import annotations

import heapq
import json
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np


class Vocab:
    def __init__(self, ids: Iterable[str | None] = (), *, min_count: int = 1,
                 filter_capacity: int = 1_000_000) -> None:
        self.min_count = max(1, int(min_count))
        self.filter_capacity = max(1, int(filter_capacity))
        self._ids: list[str | None] = []
        self._index: dict[str, int] = {}
        self._free: list[int] = []  # heap of free rows
        self._last_round: list[int] = []  # per row: the round the id was last seen in
        self._last_time: list[float] = []  # per row: wall clock of that sighting
        # ids below min_count -> (sightings, last round seen); insertion order = least recently seen first
        self._pending: dict[str, tuple[int, int]] = {}
        self._round = 0
        self._now = 0.0
        self._dirty: set[int] = set()  # rows assigned, freed or seen since ``clear_changes``
        self._gone: set[str] = set()  # ids that lost their row since then
        self._unpublished: set[int] = set()  # rows assigned since then: the live version has no row for their ids
        self._new_mask = np.zeros(0, dtype=bool)  # row -> in ``_unpublished`` (vectorised lookups)
        for i in ids:  # row r of the table belongs to ids[r] (None: a free row)
            row = self._append(i)
            if i is None:
                heapq.heappush(self._free, row)
            else:
                self._index[i] = row

    def __len__(self) -> int:
        """Rows in use or free (the high-water mark: the table needs at least this many rows)."""
        return len(self._ids)

    def __contains__(self, key: str) -> bool:
        return key in self._index

    @property
    def active(self) -> int:
        """Ids that own a row."""
        return len(self._index)

    def _append(self, key: str | None) -> int:
        self._ids.append(key)
        self._last_round.append(self._round)
        self._last_time.append(self._now)
        return len(self._ids) - 1

    def _assign(self, key: str) -> int:
        if self._free:
            row = heapq.heappop(self._free)
            self._ids[row] = key
            self._last_round[row], self._last_time[row] = self._round, self._now
        else:
            row = self._append(key)
        self._index[key] = row
        self._dirty.add(row)
        self._unpublished.add(row)
        if len(self._new_mask) < len(self._ids):  # covers every row (a restored vocabulary starts without a mask)
            size = max(len(self._ids), 2 * len(self._new_mask), 1024)
            self._new_mask = np.concatenate([self._new_mask, np.zeros(size - len(self._new_mask), dtype=bool)])
        self._new_mask[row] = True
        self._gone.discard(key)
        return row

    def add(self, key: str) -> int:
        """Row of ``key`` after one more sighting (-1 while the frequency filter still holds it back)."""
        row = self._index.get(key)
        if row is not None:
            self._last_round[row], self._last_time[row] = self._round, self._now
            self._dirty.add(row)
            return row
        if self.min_count > 1:
            count = self._pending.pop(key, (0, 0))[0] + 1
            if count < self.min_count:
                self._pending[key] = (count, self._round)  # re-inserted: most recently seen last
                if len(self._pending) > self.filter_capacity:
                    del self._pending[next(iter(self._pending))]
                return -1
        return self._assign(key)

    def rows(self, keys: Sequence[str], add: bool = True, round_no: int | None = None,
             now: float | None = None) -> np.ndarray:
        """Row of each key (-1: no row). ``add`` counts a sighting of each key, assigning rows as due.

        ``round_no``/``now`` stamp the sightings (for ``expire``); they default to the last stamp.
        """
        if add:
            if round_no is not None:
                self._round = round_no
            if now is not None:
                self._now = now
            return np.fromiter((self.add(k) for k in keys), dtype=np.int64, count=len(keys))
        return np.fromiter((self._index.get(k, -1) for k in keys), dtype=np.int64, count=len(keys))

    def get(self, key: str) -> int | None:
        return self._index.get(key)

    def expire(self, round_no: int, now: float, rounds: int = 0, seconds: float = 0.0) -> np.ndarray:
        """Free the rows of ids not seen in the last ``rounds`` rounds or ``seconds`` seconds (0: off).

        Returns the freed rows; the caller re-initialises them and forgets training rows that use them.
        """
        if not rounds and not seconds:
            return np.empty(0, dtype=np.int64)
        freed = []
        for key, row in list(self._index.items()):
            stale = (rounds and round_no - self._last_round[row] >= rounds) or (
                seconds and now - self._last_time[row] >= seconds)
            if stale:
                del self._index[key]
                self._ids[row] = None
                heapq.heappush(self._free, row)
                freed.append(row)
                self._dirty.add(row)
                self._gone.add(key)
        if rounds and self._pending:  # counts of held-back ids age out the same way
            self._pending = {k: v for k, v in self._pending.items() if round_no - v[1] < rounds}
        return np.array(sorted(freed), dtype=np.int64)

    def live(self) -> tuple[list[str], np.ndarray]:
        """Ids that own a row and their rows, in row order."""
        pairs = sorted((row, key) for key, row in self._index.items())
        return [k for _, k in pairs], np.fromiter((r for r, _ in pairs), dtype=np.int64, count=len(pairs))

    def changes(self) -> tuple[np.ndarray, list[str]]:
        """Rows assigned, freed or seen since ``clear_changes`` (sorted) and ids that lost their row
        and own none now: what an incremental version writes and forgets."""
        rows = np.fromiter(sorted(self._dirty), dtype=np.int64, count=len(self._dirty))
        return rows, sorted(k for k in self._gone if k not in self._index)

    def clear_changes(self) -> None:
        """After a publish: the next version's changes start here."""
        self._dirty.clear()
        self._gone.clear()
        self._new_mask[list(self._unpublished)] = False
        self._unpublished.clear()

    def is_published(self, row: int) -> bool:
        """Whether the live version holds ``row`` (it was assigned before the last publish)."""
        return row not in self._unpublished

    def as_published(self, rows: np.ndarray) -> np.ndarray:
        """``rows`` with those assigned since the last publish as -1: how the live version sees their ids
        (without a row, so with its cold-start vector), whichever poll of the round gave them their row.
        O(rows) with a mask over the table's rows (set in ``_assign``, cleared at the publish)."""
        if not self._unpublished:
            return rows
        new = self._new_mask[np.maximum(rows, 0)] & (rows >= 0)
        return np.where(new, -1, rows)

    def published_rows(self) -> np.ndarray:
        """Rows ids owned at the last publish (and still own): what the live version's cold-start vector
        averages."""
        rows = self.live()[1]
        return rows[~self._new_mask[rows]] if self._unpublished else rows

    def marks(self, rows: np.ndarray) -> tuple[list[str | None], list[int], list[float]]:
        """Id, last round and last time of each of ``rows`` (an incremental checkpoint's rows)."""
        return ([self._ids[r] for r in rows], [self._last_round[r] for r in rows],
                [self._last_time[r] for r in rows])

    def small_state(self) -> dict[str, Any]:
        """``state()`` without the per-row lists (saved by an incremental checkpoint)."""
        return {"pending": [[k, c, r] for k, (c, r) in self._pending.items()], "round": self._round, "now": self._now}

    @property
    def ids(self) -> list[str | None]:
        """Id of each row (None for a free row)."""
        return list(self._ids)

    # -- persistence --------------------------------------------------------------------------
    def state(self) -> dict[str, Any]:
        """Everything but ``ids`` (saved separately, as before) that a restart needs."""
        return {"last_round": self._last_round, "last_time": self._last_time,
                "pending": [[k, c, r] for k, (c, r) in self._pending.items()], "round": self._round, "now": self._now}

    @classmethod
    def restore(cls, ids: Iterable[str | None], state: dict[str, Any] | None, *, min_count: int = 1,
                filter_capacity: int = 1_000_000) -> Vocab:
        vocab = cls(ids, min_count=min_count, filter_capacity=filter_capacity)
        if state:
            n = len(vocab._ids)
            vocab._last_round = [int(x) for x in state.get("last_round", [0] * n)][:n]
            vocab._last_time = [float(x) for x in state.get("last_time", [0.0] * n)][:n]
            vocab._pending = {str(k): (int(c), int(r)) for k, c, r in state.get("pending", [])}
            vocab._round, vocab._now = int(state.get("round", 0)), float(state.get("now", 0.0))
        return vocab

    def save(self, path: Path) -> None:
        path.write_text(json.dumps(self._ids))

    @classmethod
    def load(cls, path: Path) -> Vocab:
        return cls(json.loads(path.read_text()))
