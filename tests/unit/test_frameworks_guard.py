"""``dn_guard``: DN's θS is kept only where it beats plain alternate training on validation."""

from __future__ import annotations

import pytest
import torch

from tests.support.frameworks_toy import toy_dataset, toy_model
from trainer.frameworks import FrameworkConfig, build_framework, fit


def _run(name: str, cfg: FrameworkConfig, reference=None):  # type: ignore[no-untyped-def]
    ds = toy_dataset(n_domains=3)
    torch.manual_seed(cfg.seed)
    return fit(build_framework(name, toy_model(ds, dropout=0.5), ds, cfg), reference=reference)


@pytest.mark.parametrize("beta", [0.05, 0.5])
def test_dn_keeps_the_better_of_negotiated_and_alternate_on_validation(beta: float) -> None:
    cfg = FrameworkConfig(epochs=3, patience=2, batch_size=32, seed=1, beta=beta)
    alternate = _run("alternate", cfg)
    plain_dn = _run("dn", cfg.with_(dn_guard=False))
    guarded = _run("dn", cfg)
    keep_dn = plain_dn.best_val_auc >= alternate.best_val_auc
    kept = plain_dn if keep_dn else alternate
    assert guarded.guard == ("dn" if keep_dn else "alternate")
    assert guarded.best_val_auc == kept.best_val_auc and guarded.test == kept.test
    assert len(guarded.epoch_times) == len(alternate.epoch_times) + len(plain_dn.epoch_times)  # both runs' cost
    assert guarded.val_history[-len(kept.val_history):] == kept.val_history  # the kept run is last
    # a finished Alternate run passed in gives the same result without running it again
    again = _run("dn", cfg, reference=alternate)
    assert again.test == guarded.test and again.guard == guarded.guard
    if beta == 0.05:  # three epochs at a twentieth of the step cannot catch up with Alternate
        assert guarded.guard == "alternate"


def test_mamdr_regularizes_from_the_kept_shared_model() -> None:
    """Staged MAMDR = the guarded DN run, then DR from its θS; resuming from that run gives the same."""
    cfg = FrameworkConfig(epochs=3, patience=1, batch_size=32, k=1, seed=2, beta=0.05)
    dn = _run("dn", cfg)
    assert dn.guard == "alternate"
    full = _run("mamdr", cfg)
    assert full.guard == "alternate" and "dr" in full.phases
    ds = toy_dataset(n_domains=3)
    torch.manual_seed(2)
    resumed = fit(build_framework("mamdr", toy_model(ds, dropout=0.5), ds, cfg), resume_shared=dn.state)
    assert resumed.test == full.test and resumed.val_history == full.val_history


def test_no_guard_without_negotiation() -> None:
    """β = 1 with interpolation is Alternate: nothing to guard, one run."""
    cfg = FrameworkConfig(epochs=2, patience=2, batch_size=32, beta=1.0)
    result = _run("dn", cfg)
    assert result.guard is None and len(result.epoch_times) == 2
