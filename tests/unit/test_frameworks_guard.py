"""``dn_guard``: DN's θS is kept only where it beats plain alternate training on validation."""

from __future__ import annotations

import copy

import pytest
import torch

from tests.support.frameworks_toy import toy_dataset, toy_model
from trainer.frameworks import FrameworkConfig, build_framework, fit


def _run(name: str, cfg: FrameworkConfig, reference=None, keep: list | None = None):  # type: ignore[no-untyped-def]
    ds = toy_dataset(n_domains=3)
    torch.manual_seed(cfg.seed)
    fw = build_framework(name, toy_model(ds, dropout=0.5), ds, cfg)
    if keep is not None:
        keep.append(fw)
    return fit(fw, reference=reference)


@pytest.mark.parametrize("beta", [0.05, 0.5])
def test_dn_keeps_the_better_of_negotiated_and_alternate_on_validation(beta: float) -> None:
    cfg = FrameworkConfig(epochs=3, patience=2, batch_size=32, seed=1, beta=beta, finetune=True, finetune_epochs=1)
    alternate = _run("alternate", cfg)
    plain_dn = _run("dn", cfg.with_(dn_guard=False))
    guarded = _run("dn", cfg)
    keep_dn = plain_dn.best_val_auc > alternate.best_val_auc  # a tie keeps the simpler rule's θS
    kept, other = (plain_dn, alternate) if keep_dn else (alternate, plain_dn)
    assert guarded.guard == ("dn" if keep_dn else "alternate")
    assert guarded.best_val_auc == kept.best_val_auc and guarded.test == kept.test
    assert guarded.best_epoch == len(other.epoch_times) + kept.best_epoch  # the kept run is counted last
    assert len(guarded.epoch_times) == len(alternate.epoch_times) + len(plain_dn.epoch_times)  # both runs' cost
    assert guarded.val_history[-len(kept.val_history):] == kept.val_history
    # a finished Alternate run passed in gives the same result (finetune included) without running it again
    again = _run("dn", cfg, reference=alternate)
    assert again.test == guarded.test and again.test_finetuned == guarded.test_finetuned
    assert again.guard == guarded.guard
    if beta == 0.05:  # three epochs at a twentieth of the step cannot catch up with Alternate
        assert guarded.guard == "alternate"


def test_dn_is_kept_when_it_wins_on_validation() -> None:
    """The other branch, forced: against an Alternate reference that never scored, DN's own run is the result."""
    cfg = FrameworkConfig(epochs=3, patience=2, batch_size=32, seed=1, beta=0.5)
    alternate = _run("alternate", cfg)
    beaten = copy.deepcopy(alternate)
    beaten.state.stopper.best = -float("inf")
    plain_dn = _run("dn", cfg.with_(dn_guard=False))
    guarded = _run("dn", cfg, reference=beaten)
    assert guarded.guard == "dn" and guarded.test == plain_dn.test
    assert guarded.best_epoch == len(alternate.epoch_times) + plain_dn.best_epoch
    with pytest.raises(ValueError, match="Alternate run"):
        _run("dn", cfg, reference=plain_dn)


def test_mamdr_regularizes_from_the_kept_shared_model() -> None:
    """Staged MAMDR = the guarded DN run, then DR from its θS: here Alternate's, which DR leaves unchanged."""
    cfg = FrameworkConfig(epochs=3, patience=1, batch_size=32, k=1, seed=2, beta=0.05)
    frameworks: list = []
    alternate = _run("alternate", cfg, keep=frameworks)
    dn = _run("dn", cfg)
    assert dn.guard == "alternate"
    full = _run("mamdr", cfg, keep=frameworks)
    assert full.guard == "alternate"
    assert full.val_history[:len(dn.val_history)] == dn.val_history
    assert full.phases[len(dn.epoch_times)] == "dr" and set(full.phases[len(dn.epoch_times):]) == {"dr"}
    alt_fw, mamdr_fw = frameworks
    for name, weight in alt_fw.model.state_dict().items():  # θS after DR = Alternate's best θS
        assert torch.equal(weight, mamdr_fw.model.state_dict()[name]), name
    assert alternate.best_val_auc == dn.best_val_auc


def test_no_guard_without_negotiation() -> None:
    """β = 1 with interpolation is Alternate: nothing to guard, one run."""
    cfg = FrameworkConfig(epochs=2, patience=2, batch_size=32, beta=1.0)
    result = _run("dn", cfg)
    assert result.guard is None and len(result.epoch_times) == 2
