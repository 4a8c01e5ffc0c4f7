"""Per-domain graduation: θi is served only while it beats θS on the domain's recent prequential clicks."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from contracts.errors import ConfigError
from tests.support.tiny_model import cached_tiny
from trainer.export.view import build_view_module, domain_view_arrays
from trainer.service.graduation import Graduation


def test_a_delta_graduates_only_when_it_beats_the_shared_model_on_recent_clicks() -> None:
    rng = np.random.default_rng(0)
    g = Graduation(window=1000, min_clicks=100)
    y = (rng.random(600) < 0.4).astype(np.float32)
    good = np.clip(0.5 * y + 0.5 * rng.random(600), 0, 1)  # informative
    noise = rng.random(600)  # uninformative
    served = g.observe("helps", y, p_shared=noise, p_specific=good)
    assert np.array_equal(served, noise)  # not graduated yet: served by θS
    g.observe("hurts", y, p_shared=good, p_specific=noise)
    g.observe("tiny", y[:50], p_shared=noise[:50], p_specific=good[:50])
    report = g.decide()
    assert g.graduated == {"helps"}
    assert report["helps"]["auc_specific"] > report["helps"]["auc_shared"]
    assert report["tiny"] == {"graduated": False, "clicks": 50.0}  # too little evidence: no decision
    served = g.observe("helps", y[:10], p_shared=noise[:10], p_specific=good[:10])
    assert np.array_equal(served, good[:10])  # graduated: served by Θi
    g.observe("helps", y, p_shared=good, p_specific=noise)  # the delta went bad: it loses its place
    g.decide()
    assert "helps" not in g.graduated


def _sigmoid(x: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-x))


@pytest.mark.parametrize("metric", ["auc", "logloss"])
def test_a_delta_that_wins_by_less_than_the_noise_does_not_graduate(metric: str) -> None:
    """graduation_se: the same small gain graduates on many clicks, not on few."""
    rng = np.random.default_rng(1)
    y = (rng.random(4000) < 0.4).astype(np.float32)
    common = 2.0 * rng.standard_normal(4000)  # what both models see; each adds its own noise
    shared = _sigmoid(1.2 * y - 0.9 + common + rng.standard_normal(4000))
    specific = _sigmoid(1.4 * y - 1.0 + common + rng.standard_normal(4000))  # better, by a little
    key = "auc" if metric == "auc" else "logloss"
    better = (lambda r: r["auc_specific"] > r["auc_shared"]) if metric == "auc" else (
        lambda r: r["logloss_specific"] < r["logloss_shared"])
    for clicks, graduates in ((300, False), (4000, True)):
        g = Graduation(window=5000, min_clicks=100, se=1.0, metric=metric)
        g.observe("d", y[:clicks], p_shared=shared[:clicks], p_specific=specific[:clicks])
        report = g.decide()
        assert better(report["d"]), (key, report["d"])
        assert ("d" in g.graduated) == graduates, report["d"]
    loose = Graduation(window=5000, min_clicks=100, metric=metric)
    loose.observe("d", y[:300], p_shared=shared[:300], p_specific=specific[:300])
    loose.decide()
    assert loose.graduated == {"d"}  # the default, se = 0: any improvement graduates


def test_an_over_confident_delta_does_not_graduate_by_default() -> None:
    """What the streaming trainer's θi did when fit on a domain's history: a little better at ranking, logits
    spread far wider. The window's AUC sees only the ranking and serves it; the log loss (the default metric)
    weighs the over-confidence against the ranking and keeps θS."""
    rng = np.random.default_rng(2)
    y = (rng.random(3000) < 0.3).astype(np.float32)
    common = rng.standard_normal(3000)
    shared = _sigmoid(-1.0 + 1.0 * (y - 0.3) + common)
    sharp = _sigmoid(2.5 * (-1.0 + 1.1 * (y - 0.3) + common))
    by_auc, by_loss = Graduation(min_clicks=100, metric="auc"), Graduation(min_clicks=100)
    for g in (by_auc, by_loss):
        g.observe("d", y, p_shared=shared, p_specific=sharp)
        report = g.decide()["d"]
    assert report["auc_specific"] > report["auc_shared"]
    assert report["logloss_specific"] > report["logloss_shared"]
    assert by_auc.graduated == {"d"} and by_loss.graduated == set()
    with pytest.raises(ConfigError, match="logloss"):
        Graduation(metric="brier")


def test_a_domain_without_its_delta_is_exported_as_the_shared_model_with_its_own_rows() -> None:
    tiny = cached_tiny("mlp", steps=8, delta_steps=4, n_domains=4)
    params, slot = tiny.params, tiny.domains["dom-2"]
    assert params.has_delta(slot)
    model = params.model
    users, items = torch.arange(5), torch.arange(5)
    u, i = model.user_embedding.weight[users].detach(), model.item_embedding.weight[items].detach()
    with torch.no_grad():
        shared_only = build_view_module(model, domain_view_arrays(params, slot, with_delta=False))(u, i)
        full = build_view_module(model, domain_view_arrays(params, slot))(u, i)
        want_shared = model.score(u, i, torch.full((5,), slot))  # θS with the domain's own rows, no θi
        want_full = params.forward_domain(slot, users, items, torch.full((5,), slot))
    torch.testing.assert_close(shared_only, want_shared, atol=1e-5, rtol=0)
    torch.testing.assert_close(full, want_full, atol=1e-5, rtol=0)
    assert not torch.allclose(shared_only, full)


def test_the_trainer_serves_a_delta_only_once_it_graduated(tmp_path) -> None:
    """Through the continual trainer: versions name the graduated domains and the framework; a domain that has
    not graduated is exported without θi (serving scores it as the trainer's θS), one that has, with it."""
    from contracts.artifacts import load_version
    from tests.unit.test_trainer_retention import make_trainer, produce, rounds

    url = f"file://{tmp_path}/stream/clicks"
    produce(url, 0, 1200)
    trainer = make_trainer(tmp_path, graduation_min_clicks=50, round_events=300)
    versions = rounds(trainer, 4)
    trainer.close()
    assert len(versions) == 4
    last = load_version(tmp_path / "artifacts" / versions[-1])
    metrics = last.manifest.metrics
    assert metrics["framework"] == "mamdr" and metrics["graduated_domains"] == len(metrics["graduated"])
    graduated = set(metrics["graduated"])
    assert graduated == trainer.graduation.graduated
    state = trainer.state
    for domain in ("alpha", "beta", "gamma"):
        slot = state.domains.get(domain)
        delta = last.manifest.deltas[domain]
        if domain in graduated:
            assert state.params.has_delta(slot) and delta.tensors  # its θi is in the delta file
        else:
            view = domain_view_arrays(state.params, slot, with_delta=False)
            # the exported delta is θS's own domain rows only: no tensor that θi alone touches
            assert all(name in state.model.domain_indexed for name in (t.name for t in delta.tensors)), domain
            assert view  # and θS with its own rows is what it is served with


def test_alternate_is_plain_online_training(tmp_path) -> None:
    from tests.unit.test_trainer_retention import make_trainer, produce, rounds

    url = f"file://{tmp_path}/stream/clicks"
    produce(url, 0, 600)
    trainer = make_trainer(tmp_path, framework="alternate")
    rounds(trainer, 2)
    trainer.close()
    assert trainer.framework.config.beta == 1.0  # DN with β = 1 is alternate training (tested in theory)
    params = trainer.state.params
    assert not any(params.has_delta(s) and any(float(t.abs().sum()) for t in params.delta(s).values())
                   for s in trainer.state.slots().values())  # no θi was trained
    assert trainer.graduation.graduated == set()
