"""MAMDR at its defaults against Alternate on the synthetic conflict benchmark (make_conflict, c = 0.75).

Seeded and small enough for a busy 2-core box. It asserts that MAMDR's paired margin over Alternate is
positive on every seed and larger than its spread over seeds, and that the same assertion fails for MAMDR
with its two mechanisms switched off (β = 1 and no DR is DN(β=1), i.e. Alternate training): the test can
tell the method from its baseline.
"""

from __future__ import annotations

import numpy as np
import torch

from trainer.data.synthetic import make_conflict
from trainer.frameworks import FrameworkConfig, build_framework, fit
from trainer.models import ModelConfig, build_model

SEEDS = (0, 1)


def _test_auc(name: str, seed: int, **overrides) -> float:  # type: ignore[no-untyped-def]
    ds = make_conflict(n_domains=4, n_users=100, n_items=50, rows_per_domain=1500, conflict=0.75, seed=seed)
    torch.manual_seed(seed)
    model = build_model("mlp", ModelConfig(n_users=ds.n_users, n_items=ds.n_items, n_domains=ds.n_domains,
                                           emb_dim=8, hidden=(16, 8), dropout=0.0))
    cfg = FrameworkConfig(seed=seed, batch_size=256, **overrides)  # otherwise the defaults
    return fit(build_framework(name, model, ds, cfg)).test_auc


def _wins(margins: list[float]) -> bool:
    arr = np.asarray(margins)
    return bool(arr.min() > 0 and arr.mean() > arr.std(ddof=1))


def test_mamdr_defaults_beat_alternate_and_the_test_notices_when_dn_and_dr_are_off() -> None:
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        alternate = [_test_auc("alternate", s) for s in SEEDS]
        mamdr = [_test_auc("mamdr", s) for s in SEEDS]
        switched_off = [_test_auc("dn", s, beta=1.0) for s in SEEDS]  # MAMDR without DN (β = 1) and DR
    finally:
        torch.set_num_threads(threads)
    margins = [m - a for m, a in zip(mamdr, alternate, strict=True)]
    assert _wins(margins), f"MAMDR − Alternate per seed: {margins}"
    assert min(margins) > 0.01
    off = [m - a for m, a in zip(switched_off, alternate, strict=True)]
    assert not _wins(off), f"DN/DR switched off still 'wins': {off}"
