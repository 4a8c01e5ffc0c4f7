"""The worker-side embedding caches of the paper's Fig. 7, over the feature store.

Static cache: the user/item rows the round touches, fetched ONCE per outer step from the feature
store (the live version, the source of truth) into a compact table (row r of the cache = the r-th
touched global row). Dynamic cache: the same compact table after the inner loop updated it. The
write-back is the delta (dynamic − static) of the touched rows only, applied once by rank 0.
Rows the live version does not hold yet (ids first seen this round) come with the round plan from
rank 0, which assigned them.

``CacheCounters`` counts what moved, per round, so it can be logged, exported and asserted.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass, fields

import numpy as np
import torch

from contracts.errors import DataError
from feature_store.base import EmbeddingStore, Kind

FLOAT_BYTES = 4


@dataclass
class CacheCounters:
    """Bytes and rows moved in one round (per rank; ``total`` sums over ranks).

    fetched: feature store → static cache; from_plan: new rows and the round plan from rank 0;
    written: delta rows written back by rank 0; allreduce: bytes each rank put into all-reduces;
    uncached: what a cache-less worker would move (pull + push of every batch's rows and of dense θS at every
    inner step).
    """

    fetched_rows: int = 0
    fetched_bytes: int = 0
    from_plan_rows: int = 0
    plan_bytes: int = 0
    written_rows: int = 0
    written_bytes: int = 0
    exchange_bytes: int = 0
    uncached_bytes: int = 0

    def as_tensor(self) -> torch.Tensor:
        return torch.tensor([getattr(self, f.name) for f in fields(self)], dtype=torch.int64)

    @classmethod
    def from_tensor(cls, t: torch.Tensor) -> CacheCounters:
        return cls(*[int(v) for v in t.tolist()])

    def add(self, other: CacheCounters) -> CacheCounters:
        return CacheCounters(*[getattr(self, f.name) + getattr(other, f.name) for f in fields(self)])

    def to_json(self) -> dict[str, int]:
        return asdict(self)


class StaticCache:
    """The touched rows of one kind: global rows (sorted), their values at the start of the round."""

    def __init__(self, kind: Kind, rows: np.ndarray, values: torch.Tensor) -> None:
        self.kind = kind
        self.rows = rows  # int64 [n], sorted, unique
        self.values = values  # float32 [n, dim] (the static copy; never modified)

    @classmethod
    def fetch(cls, kind: Kind, rows: np.ndarray, ids: Sequence[str], n_published: int, new_values: torch.Tensor,
              store: EmbeddingStore | None, version: str | None, dim: int,
              counters: CacheCounters) -> StaticCache:
        """Rows < ``n_published`` come from the store's ``version`` (one ``get_many``); the others
        (ids new this round, in row order) from ``new_values``."""
        old = rows < n_published
        n_old = int(old.sum())
        if len(ids) != n_old:
            raise DataError(f"round plan: {len(ids)} {kind} ids for {n_old} published rows")
        values = torch.empty((len(rows), dim), dtype=torch.float32)
        if n_old:
            if store is None or version is None:
                raise DataError(f"round plan names {n_old} published {kind} rows but no feature-store version")
            got, missing = store.get_many(kind, list(ids), version=version)
            if missing:
                raise DataError(f"feature store version {version} lacks {len(missing)} {kind} ids the "
                                f"trainer published (e.g. {ids[missing[0]]!r}); was it garbage-collected?")
            values[torch.from_numpy(old)] = torch.from_numpy(np.ascontiguousarray(got, dtype=np.float32))
            counters.fetched_rows += n_old
            counters.fetched_bytes += n_old * dim * FLOAT_BYTES
        if len(rows) - n_old != new_values.shape[0]:
            raise DataError(f"round plan: {new_values.shape[0]} new {kind} rows for {len(rows) - n_old} needed")
        if len(rows) - n_old:
            values[torch.from_numpy(~old)] = new_values.to(torch.float32)
            counters.from_plan_rows += len(rows) - n_old
        return cls(kind, rows, values)

    def local(self, global_rows: np.ndarray) -> np.ndarray:
        """Global row indices → positions in the compact cache table."""
        return np.searchsorted(self.rows, global_rows).astype(np.int64)

    def delta(self, dynamic: torch.Tensor) -> torch.Tensor:
        """dynamic − static: what the write-back adds to the source of truth."""
        return dynamic.detach() - self.values
