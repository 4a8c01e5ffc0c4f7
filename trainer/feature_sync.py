"""Push a trained model's global user/item embedding tables into the feature store as a version.

Row r of ``user_embedding`` belongs to ``dataset.user_ids[r]`` (same for items): the store is keyed by
those external ids, so serving can look vectors up by the ids requests carry. The version is
written beside the live one and only then published (one pointer switch), so serving never reads a
half-written table; old versions are collected afterwards, keeping ``keep_versions``.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

from contracts.errors import DataError
from feature_store.base import EmbeddingStore, Kind, VersionInfo
from feature_store.loaders import bulk_write
from trainer.data.base import MultiDomainDataset
from trainer.models.base import CTRModel


def table_rows(model: CTRModel, kind: Kind, n_ids: int, rows: np.ndarray | None = None) -> np.ndarray:
    """The first ``n_ids`` rows (or the given ``rows``) of a user or item table as float32 numpy (a copy)."""
    table: torch.nn.Embedding = model.user_embedding if kind == "user" else model.item_embedding
    weight = table.weight.detach()
    need = n_ids if rows is None or not len(rows) else int(rows.max()) + 1
    if weight.shape[0] < need:
        raise DataError(f"model {kind} table has {weight.shape[0]} rows but {need} {kind} rows were asked for")
    picked = weight[:n_ids] if rows is None else weight[torch.from_numpy(np.asarray(rows, dtype=np.int64))]
    return picked.to(device="cpu", dtype=torch.float32).numpy().copy()


def sync_embeddings(
    model: CTRModel,
    user_ids: Sequence[str],
    item_ids: Sequence[str],
    store: EmbeddingStore,
    version: str,
    publish: bool = True,
    keep_versions: int | None = None,
    progress: bool = False,
    user_rows: np.ndarray | None = None,
    item_rows: np.ndarray | None = None,
) -> VersionInfo:
    """Write both tables under ``version``; publish it and gc to ``keep_versions`` if asked.

    Row r belongs to ``user_ids[r]`` unless ``user_rows`` says which row each id owns (the
    continual trainer's tables have free rows once ids expire); the same for items.
    """
    users = table_rows(model, "user", len(user_ids), user_rows)
    items = table_rows(model, "item", len(item_ids), item_rows)
    store.declare(version, {"user": users.shape[1], "item": items.shape[1]})
    bulk_write(store, version, "user", list(map(str, user_ids)), users, progress=progress)
    bulk_write(store, version, "item", list(map(str, item_ids)), items, progress=progress)
    if publish:
        store.publish(version)
        if keep_versions is not None:
            store.gc(keep_versions)
    return store.describe(version)


def sync_from_dataset(
    model: CTRModel, dataset: MultiDomainDataset, store: EmbeddingStore, version: str, **kwargs: object
) -> VersionInfo:
    """``sync_embeddings`` with the dataset's global id vocabularies (row order = id order)."""
    return sync_embeddings(model, dataset.user_ids, dataset.item_ids, store, version, **kwargs)  # type: ignore[arg-type]
