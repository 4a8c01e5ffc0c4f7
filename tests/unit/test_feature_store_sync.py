"""A trained model's tables land in the store under external ids, as one published version."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from contracts.errors import DataError
from feature_store import open_store
from trainer.feature_sync import sync_embeddings
from trainer.models import build_model
from trainer.models.base import ModelConfig


def _model(n_users: int = 6, n_items: int = 9) -> torch.nn.Module:
    torch.manual_seed(0)
    return build_model("mlp", ModelConfig(n_users=n_users, n_items=n_items, n_domains=2, emb_dim=8,
                                          hidden=(8,), item_dim=4))


def test_sync_writes_rows_by_external_id_and_publishes() -> None:
    model = _model()
    store = open_store("memory://")
    users = [f"user-{i}" for i in range(6)]
    items = [f"item-{i}" for i in range(9)]
    info = sync_embeddings(model, users, items, store, "m1", keep_versions=1)
    assert store.current_version() == "m1"
    assert info.dims == {"user": 8, "item": 4} and info.counts == {"user": 6, "item": 9}
    got = store.lookup("user-3", ["item-8", "item-0", "unknown"])
    np.testing.assert_array_equal(got.user, model.user_embedding.weight[3].detach().numpy())
    np.testing.assert_array_equal(got.items[0], model.item_embedding.weight[8].detach().numpy())
    assert got.missing_items == [2]
    with torch.no_grad():
        model.user_embedding.weight.add_(1.0)
    sync_embeddings(model, users, items, store, "m2", keep_versions=1)
    assert store.versions() == ["m2"]
    np.testing.assert_array_equal(store.lookup("user-3", []).user,
                                  model.user_embedding.weight[3].detach().numpy())


def test_sync_refuses_more_ids_than_rows_and_nan() -> None:
    model = _model(n_users=2)
    store = open_store("memory://")
    with pytest.raises(DataError, match="2 rows but 3"):
        sync_embeddings(model, ["a", "b", "c"], ["x"], store, "m1")
    with torch.no_grad():
        model.item_embedding.weight[0, 0] = float("nan")
    with pytest.raises(DataError, match="NaN"):
        sync_embeddings(model, ["a", "b"], ["x"], store, "m2")
    assert store.current_version() is None
