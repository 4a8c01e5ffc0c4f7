"""Convergence-aware stopping through fit's real loop, with a scripted validation curve.

The rule under test: no configuration stops a run while the mean validation AUC is still improving by
more than the tolerance (``min_delta``) within its patience, measured in Alternate-equivalent progress
(DN at β waits patience/β epochs); only a budget the user set is a hard stop, and a run stopped by any
budget while still improving is flagged ``capped``.
"""

from __future__ import annotations

import importlib
import math

import pytest

from tests.support.frameworks_toy import toy_dataset, toy_model
from trainer.frameworks import FrameworkConfig, build_framework, fit
from trainer.frameworks.config import SAFETY_EPOCHS


def _run(monkeypatch: pytest.MonkeyPatch, curve: list[float], name: str = "dn", **cfg):  # type: ignore[no-untyped-def]
    """fit() with training stubbed out and the validation AUC of epoch e = curve[e] (last value repeats).

    The loop scores the validation splits once per epoch and takes the AUCs from those scores (``aucs_of``,
    whose scores also feed the loss curves), the test AUC from ``domain_auc``: both are scripted."""
    ds = toy_dataset(n_domains=2, rows=32)
    # dn_guard off: the guard trains its own DN and Alternate instances, which the stub below does not reach
    fw = build_framework(name, toy_model(ds), ds, FrameworkConfig(batch_size=32, k=1, **{"dn_guard": False, **cfg}))
    seen = {"n": 0}

    def scripted(splits, scores):  # type: ignore[no-untyped-def]
        assert splits is ds.val
        value = curve[min(seen["n"], len(curve) - 1)]
        seen["n"] += 1
        return {d: value for d in splits}

    loop = importlib.import_module("trainer.frameworks.fit")
    monkeypatch.setattr(loop, "aucs_of", scripted)
    monkeypatch.setattr(loop, "domain_auc", lambda scorer, splits, batch_size=0: {d: 0.5 for d in splits})
    fw.train_epoch = lambda epoch, rng: None  # type: ignore[method-assign]
    return fit(fw)


def _staircase(step: float, every: int, rises: int, tail: int = 80) -> list[float]:
    """Flat for ``every - 1`` epochs, then up by ``step``; ``rises`` times; then a slow decline."""
    curve, value = [], 0.6
    for _ in range(rises):
        curve += [value] * (every - 1)
        value += step
        curve.append(value)
    return curve + [value - 1e-4 * (k + 1) for k in range(tail)]


CONFIGS = [
    ("alternate", {}),
    ("dn", {"beta": 1.0}),
    ("dn", {"beta": 0.5}),
    ("dn", {"beta": 0.1}),
    ("dn", {"beta": 0.1, "beta_schedule": "anneal"}),
    ("dn", {"beta": 0.3, "patience": 1}),
    ("dn", {"beta": 0.5, "patience": 5, "min_delta": 1e-3}),
    ("alternate", {"patience": 4, "min_delta": 5e-4}),
]


@pytest.mark.parametrize(("name", "extra"), CONFIGS)
def test_no_stop_while_improving_beyond_tolerance(monkeypatch: pytest.MonkeyPatch, name: str, extra: dict) -> None:
    cfg = FrameworkConfig(**extra)
    beta = min(cfg.beta_at(e) for e in range(200)) if name == "dn" else 1.0
    allowed_gap = math.ceil(cfg.patience / beta - 1e-9)  # patience in Alternate-equivalent progress
    rises = 6
    curve = _staircase(step=cfg.min_delta + 1e-3, every=allowed_gap, rises=rises)
    result = _run(monkeypatch, curve, name, **extra)
    last_rise = rises * allowed_gap  # epochs run up to and including the last improvement
    assert result.epochs >= last_rise, f"stopped at {result.epochs} while still improving (last rise {last_rise})"
    assert result.best_epoch == last_rise - 1
    assert not result.capped  # it stopped by patience after converging, not by a budget


def test_patience_one_epoch_short_of_the_gap_stops(monkeypatch: pytest.MonkeyPatch) -> None:
    """The same staircase with rises further apart than the patience: stopping there is right."""
    curve = _staircase(step=1e-3, every=5, rises=3)
    result = _run(monkeypatch, curve, "alternate", patience=3)
    assert result.epochs == 4 and result.best_epoch == 0  # epoch 0, then 3 epochs without a rise


def test_dn_at_small_beta_crosses_a_plateau_that_patience_three_would_stop(monkeypatch: pytest.MonkeyPatch) -> None:
    """The pitfall docs/benchmarks.md describes: a DN plateau of 25 epochs, then the jump."""
    curve = [0.80 + 1e-5 * min(k, 1) for k in range(26)] + [0.85, 0.86, 0.865] + [0.86] * 60
    result = _run(monkeypatch, curve, "dn", beta=0.1, patience=3)
    assert result.best_val_auc == pytest.approx(0.865)
    per_epoch = _run(monkeypatch, curve, "dn", beta=0.1, patience=3, patience_unit="epoch")
    assert per_epoch.best_val_auc < 0.81  # plain epochs: stopped on the plateau


def test_no_silent_cap_by_default(monkeypatch: pytest.MonkeyPatch) -> None:
    assert FrameworkConfig().epochs is None
    rising = [0.6 + 1e-4 * k for k in range(SAFETY_EPOCHS + 5)]
    result = _run(monkeypatch, rising, "alternate")
    assert result.epochs == SAFETY_EPOCHS and result.capped == ["alternate"]  # said loudly, not silently


def test_a_user_budget_is_a_hard_stop_and_is_flagged(monkeypatch: pytest.MonkeyPatch) -> None:
    rising = [0.6 + 1e-3 * k for k in range(100)]
    result = _run(monkeypatch, rising, "dn", beta=0.5, epochs=7)
    assert result.epochs == 7 and result.capped == ["dn"]
    converged = _run(monkeypatch, [0.6, 0.7, 0.65, 0.64, 0.63, 0.62, 0.61, 0.6], "alternate", epochs=7)
    assert converged.epochs == 5 and not converged.capped  # stopped by patience inside the budget
