"""Per-epoch validation curves (issue 14): one entry per epoch run, made from that epoch's own validation
scores (no second scoring pass), per domain up to a cap and the mean always."""

from __future__ import annotations

import importlib

import numpy as np
import pytest
import torch

import trainer.frameworks.curves as curves_mod
from tests.support.frameworks_toy import toy_dataset, toy_model
from trainer.evaluation import auc, log_losses
from trainer.frameworks import FrameworkConfig, build_framework, fit
from trainer.frameworks.curves import ValCurves, mean_log_loss

fit_mod = importlib.import_module("trainer.frameworks.fit")  # the package's `fit` is the function


def _spy_scores(monkeypatch: pytest.MonkeyPatch) -> list[dict[int, np.ndarray]]:
    """Every validation scoring the epoch loop makes, in order."""
    seen: list[dict[int, np.ndarray]] = []
    real = fit_mod.domain_scores

    def spy(*args, **kwargs):  # type: ignore[no-untyped-def]
        out = real(*args, **kwargs)
        seen.append({d: s.copy() for d, s in out.items()})
        return out

    monkeypatch.setattr(fit_mod, "domain_scores", spy)
    return seen


@pytest.mark.parametrize("name", ["alternate", "weighted_loss", "pcgrad", "maml", "mldg"])
def test_each_epoch_records_the_log_loss_and_auc_of_its_own_validation_scores(
        name: str, monkeypatch: pytest.MonkeyPatch) -> None:
    ds = toy_dataset(n_domains=3)
    seen = _spy_scores(monkeypatch)
    torch.manual_seed(0)
    cfg = FrameworkConfig(epochs=3, patience=10, batch_size=32, seed=0)
    result = fit(build_framework(name, toy_model(ds), ds, cfg))
    curves = result.val_curves
    assert result.epochs == 3 and len(seen) == 3  # one scoring pass per epoch, shared with the AUC
    assert len(curves.mean_loss) == len(result.val_history) == 3
    assert sorted(curves.loss) == sorted(curves.auc) == [0, 1, 2]
    for epoch, scores in enumerate(seen):
        losses = []
        for d, logits in scores.items():
            label = ds.val[d].label
            expected = float(log_losses(label, torch.sigmoid(torch.from_numpy(logits)).numpy()).mean())
            assert curves.loss[d][epoch] == pytest.approx(expected, rel=1e-5), (d, epoch)
            assert curves.auc[d][epoch] == auc(label, logits)
            losses.append(expected)
        assert curves.mean_loss[epoch] == pytest.approx(np.mean(losses), rel=1e-5)
        assert result.val_history[epoch] == pytest.approx(np.mean([curves.auc[d][epoch] for d in scores]))


def test_per_domain_curves_are_capped_but_the_mean_covers_every_domain(monkeypatch: pytest.MonkeyPatch) -> None:
    ds = toy_dataset(n_domains=3)
    seen = _spy_scores(monkeypatch)
    monkeypatch.setattr(curves_mod, "CURVE_DOMAINS", 2)
    torch.manual_seed(0)
    result = fit(build_framework("alternate", toy_model(ds), ds, FrameworkConfig(epochs=2, patience=5, batch_size=32)))
    curves = result.val_curves
    assert sorted(curves.loss) == sorted(curves.auc) == [0, 1] and curves.n_domains == 3
    assert all(len(v) == 2 for v in curves.loss.values())
    every = [mean_log_loss(ds.val[d].label, s) for d, s in seen[-1].items()]
    assert len(every) == 3 and curves.mean_loss[-1] == pytest.approx(np.mean(every))


def test_guarded_and_staged_runs_list_every_epoch_they_count() -> None:
    """A guarded DN run's val_history holds both runs' epochs, a staged DR's both phases': so do the curves."""
    ds = toy_dataset(n_domains=3)
    for name, cfg in [("dn", FrameworkConfig(epochs=2, patience=5, batch_size=32, beta=0.5)),
                      ("dr", FrameworkConfig(epochs=2, patience=5, batch_size=32, k=1, schedule="staged"))]:
        torch.manual_seed(0)
        result = fit(build_framework(name, toy_model(ds), ds, cfg))
        n = len(result.val_history)
        assert n == 4, name
        assert len(result.val_curves.mean_loss) == n and all(len(v) == n for v in result.val_curves.loss.values())
        assert result.val_curves.auc[0][-1] == result.val_curves.auc[0][-1]  # recorded, not NaN padding


def test_mean_log_loss_and_concat() -> None:
    labels = np.array([1.0, 0.0])
    assert mean_log_loss(labels, np.array([0.0, 0.0])) == pytest.approx(np.log(2))
    assert mean_log_loss(labels, np.array([1000.0, -1000.0])) == pytest.approx(1e-7, rel=1e-3)  # clipped, finite
    assert np.isnan(mean_log_loss(np.zeros(0), np.zeros(0)))
    a = ValCurves(loss={0: [1.0]}, auc={0: [0.5]}, mean_loss=[1.0], n_domains=1)
    b = ValCurves(loss={0: [2.0], 1: [3.0]}, auc={0: [0.6], 1: [0.7]}, mean_loss=[2.5], n_domains=2)
    both = a.concat(b)
    assert both.loss[0] == [1.0, 2.0] and both.mean_loss == [1.0, 2.5]
    assert np.isnan(both.loss[1][0]) and both.loss[1][1] == 3.0 and both.n_domains == 2
