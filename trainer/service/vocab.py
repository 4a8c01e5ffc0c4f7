"""External id ↔ table row, growing as a stream brings new users, items and domains.

Rows are assigned in arrival order and never reused, so a row index is stable for the life of a
model lineage; the vocabulary is saved with every version (plain JSON, never pickled).
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from pathlib import Path

import numpy as np


class Vocab:
    def __init__(self, ids: Iterable[str] = ()) -> None:
        self._ids: list[str] = []
        self._index: dict[str, int] = {}
        for i in ids:
            self.add(i)

    def __len__(self) -> int:
        return len(self._ids)

    def __contains__(self, key: str) -> bool:
        return key in self._index

    def add(self, key: str) -> int:
        row = self._index.get(key)
        if row is None:
            row = self._index[key] = len(self._ids)
            self._ids.append(key)
        return row

    def rows(self, keys: Sequence[str], add: bool = True) -> np.ndarray:
        """Row of each key (new keys appended when ``add``; else -1)."""
        if add:
            return np.fromiter((self.add(k) for k in keys), dtype=np.int64, count=len(keys))
        return np.fromiter((self._index.get(k, -1) for k in keys), dtype=np.int64, count=len(keys))

    def get(self, key: str) -> int | None:
        return self._index.get(key)

    @property
    def ids(self) -> list[str]:
        return list(self._ids)

    def save(self, path: Path) -> None:
        path.write_text(json.dumps(self._ids))

    @classmethod
    def load(cls, path: Path) -> Vocab:
        return cls(json.loads(path.read_text()))
