"""DN's domain-conflict telemetry: the cosine of two domains' inner updates is negative when their targets
are opposite and positive when they agree; it reaches results.json and the heatmap."""

from __future__ import annotations

import numpy as np
import torch

from tests.support.frameworks_toy import toy_dataset, toy_model
from trainer.data.base import MultiDomainDataset, Split
from trainer.evaluation import domain_auc
from trainer.frameworks import DomainNegotiation, FrameworkConfig, build_framework, fit


def _two_domains(opposite: bool, rows: int = 256, seed: int = 0) -> MultiDomainDataset:
    rng = np.random.default_rng(seed)
    n_users, n_items = 20, 30
    taste = rng.normal(size=n_items)
    splits: list[dict[int, Split]] = [{}, {}, {}]
    for part, n in enumerate((rows, rows // 4, rows // 4)):
        user = rng.integers(0, n_users, n).astype(np.int64)
        item = rng.integers(0, n_items, n).astype(np.int64)
        label = (taste[item] > 0).astype(np.float32)
        for d in range(2):
            y = 1.0 - label if (opposite and d == 1) else label
            splits[part][d] = Split(user.copy(), item.copy(), y.astype(np.float32))
    return MultiDomainDataset(name="two", domains=["a", "b"], user_ids=[f"u{k}" for k in range(n_users)],
                              item_ids=[f"i{k}" for k in range(n_items)], train=splits[0], val=splits[1],
                              test=splits[2])


def _cosine(opposite: bool) -> float:
    ds = _two_domains(opposite)
    torch.manual_seed(0)
    fw = DomainNegotiation(toy_model(ds), ds, FrameworkConfig(inner="sgd", inner_lr=0.05, batch_size=64, beta=0.5))
    fw.train_epoch(0, torch.Generator().manual_seed(0))
    matrix = np.asarray(fw.conflict_matrix)
    assert matrix.shape == (2, 2) and np.allclose(np.diag(matrix), 1.0)
    assert abs(matrix[0, 1] - matrix[1, 0]) < 1e-12
    return float(matrix[0, 1])


def test_opposite_targets_give_a_negative_cosine() -> None:
    assert _cosine(opposite=True) < -0.2
    assert _cosine(opposite=False) > 0.2


def test_fit_records_one_matrix_per_dn_epoch() -> None:
    ds = _two_domains(opposite=True, rows=64)
    fw = DomainNegotiation(toy_model(ds), ds, FrameworkConfig(batch_size=64, beta=0.5, epochs=3, patience=5))
    result = fit(fw)
    assert len(result.conflict) == 3 and all(np.asarray(m).shape == (2, 2) for m in result.conflict)


def test_staged_dr_keeps_theta_i_only_where_it_helps_that_domain() -> None:
    """dr_select="domain": on validation every domain is at least as good as θS alone (graduation)."""
    ds = toy_dataset(n_domains=3, rows=96)
    torch.manual_seed(0)
    dr = build_framework("dr", toy_model(ds), ds, FrameworkConfig(batch_size=32, k=1, epochs=3, dr_epochs=3,
                                                                 patience=2))
    result = fit(dr)
    with_deltas = domain_auc(dr.score, ds.val)
    saved = dict(dr.params.deltas)
    dr.params.deltas.clear()
    shared_only = domain_auc(dr.score, ds.val)
    dr.params.deltas.update(saved)
    assert all(with_deltas[d] >= shared_only[d] - 1e-12 for d in with_deltas)
    assert result.kept_deltas == len(saved) and set(saved) <= {0, 1, 2}
