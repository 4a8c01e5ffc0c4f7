"""θi's scope in the continual trainer: the model's head by default, kept by its lineage across restarts."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pytest
import torch

from contracts.artifacts import load_version
from contracts.errors import ConfigError
from serving.composition import build_composer
from tests.unit.test_trainer_retention import make_trainer, produce, rounds
from trainer.export import export_version
from trainer.models import MODELS, ModelConfig
from trainer.service.state import ModelState

DOMS = ["d0", "d1", "d2"]


def _trained(trainer) -> dict[str, float]:  # type: ignore[no-untyped-def]
    params = trainer.state.params
    return {n: sum(float(params.delta(s)[n].abs().sum()) for s in params.domains()) for n in params.specific_names}


def test_theta_i_covers_the_head_by_default_and_a_lineage_keeps_its_scope(tmp_path: Path, caplog) -> None:
    url = f"file://{tmp_path}/stream/clicks"
    n = produce(url, 0, 900)
    trainer = make_trainer(tmp_path)
    versions = rounds(trainer, 3)
    trainer.close()
    assert trainer.state.params.specific_names == ["out.weight", "out.bias"]
    assert all(v > 0 for v in _trained(trainer).values())  # DR trained the head of the domains it saw
    thetas = {s: trainer.state.params.delta(s)["out.weight"].clone() for s in trainer.state.params.domains()}
    # restarted with another scope: the lineage keeps the one its checkpoints hold, and says so
    produce(url, n, 300)
    resumed = make_trainer(tmp_path, specific="default")
    with caplog.at_level(logging.WARNING, logger="mamdr.trainer"):
        resumed.start()
    assert resumed.live_version == versions[-1]
    assert resumed.state.params.specific_names == ["out.weight", "out.bias"]
    assert any("keeps θi over out.weight, out.bias" in r.getMessage() for r in caplog.records)
    for slot, theta in thetas.items():  # θi restored as published
        assert torch.equal(resumed.state.params.delta(slot)["out.weight"], theta), slot
    resumed.close()
    # a new lineage takes the setting: every parameter but the user/item tables
    fresh = make_trainer(tmp_path, new_lineage=True, specific="default")
    fresh.start()
    names = fresh.state.params.specific_names
    assert "out.weight" in names and "tower.0.weight" in names and "user_embedding.weight" not in names
    fresh.close()


def test_a_scope_that_names_no_parameter_is_refused_at_start(tmp_path: Path) -> None:
    trainer = make_trainer(tmp_path, specific="towr.*")
    with pytest.raises(ConfigError, match="matches no trainable parameter"):
        trainer.start()
    trainer.close()
    produce(f"file://{tmp_path}/stream/clicks", 0, 300)  # and on a resumed lineage too, not only a new one
    rounds(make_trainer(tmp_path), 1)
    resumed = make_trainer(tmp_path, specific="towr.*")
    with pytest.raises(ConfigError, match="matches no trainable parameter"):
        resumed.start()
    resumed.close()


def test_the_same_scope_spelt_otherwise_resumes_quietly_and_a_changed_head_keeps_the_lineage(
        tmp_path: Path, caplog, monkeypatch) -> None:
    """Checkpoints hold the names θi covers, not the alias: "out.*" is "head" for the MLP (no warning), and a
    later release that changes the MLP's HEAD neither breaks nor silently rescopes a lineage."""
    from trainer.models.mlp import MLP

    produce(f"file://{tmp_path}/stream/clicks", 0, 600)
    first = make_trainer(tmp_path)
    rounds(first, 2)
    first.close()
    with caplog.at_level(logging.WARNING, logger="mamdr.trainer"):
        same = make_trainer(tmp_path, specific="out.*")
        same.start()
        same.close()
    assert not [r for r in caplog.records if "ignored" in r.getMessage()]
    monkeypatch.setattr(MLP, "HEAD", ("out.weight",))
    later = make_trainer(tmp_path)
    later.start()
    assert later.state.params.specific_names == ["out.weight", "out.bias"]
    later.close()


@pytest.mark.parametrize("name", sorted(MODELS))
def test_serving_scores_a_head_delta_as_the_trainer_does(name: str, tmp_path: Path) -> None:
    """Every zoo model: θi over the head, exported and composed by serving (``feed``), gives the trainer's Θi
    scores (``predict_rows``); a domain without θi gets θS's."""
    torch.set_num_threads(1)
    cfg = ModelConfig(n_users=16, n_items=16, n_domains=0, emb_dim=8, hidden=(16, 8), dropout=0.0)
    state = ModelState(name, cfg, specific="head", seed=3)
    state.ensure([f"u{k}" for k in range(20)], [f"i{k}" for k in range(20)], DOMS)
    gen = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for p in state.model.parameters():
            p.add_(0.3 * torch.randn(p.shape, generator=gen))
    for vocab in (state.users, state.items, state.domains):
        vocab.clear_changes()
    for slot in (0, 2):  # d1 has no θi
        state.params.set_delta(slot, {n: 0.5 * torch.randn(t.shape, generator=gen)
                                      for n, t in state.params.delta(slot).items()})
    export_version(state.params, state.slots(), tmp_path, "v1", cold_start=state.cold_start())
    composer = build_composer("feed", load_version(tmp_path / "v1"), cache_size=2, threads=1)
    rng = np.random.default_rng(0)
    slots, urows, irows = rng.integers(0, 3, 60), rng.integers(0, 20, 60), rng.integers(0, 20, 60)
    p_shared, p_specific = state.predict_rows(slots, urows, irows)
    uw, iw = state.model.user_embedding.weight.detach().numpy(), state.model.item_embedding.weight.detach().numpy()
    for slot, domain in enumerate(DOMS):
        rows = np.flatnonzero(slots == slot)
        logits = composer.logits(domain, np.ascontiguousarray(uw[urows[rows]]), np.ascontiguousarray(iw[irows[rows]]))
        np.testing.assert_allclose(1 / (1 + np.exp(-logits)), p_specific[rows], atol=2e-5, err_msg=f"{name}/{domain}")
        assert (slot == 1) == np.allclose(p_shared[rows], p_specific[rows], atol=1e-6), (name, domain)


@pytest.mark.parametrize("specific", ["head", "default"])
def test_dr_runs_on_a_model_that_normalises_by_the_batch(specific: str) -> None:
    """STAR's partitioned norm groups a batch by domain in training, which a vmapped DR step cannot do: DR
    normalises with θS's running statistics and leaves them as they were."""
    from trainer.data.base import Split
    from trainer.frameworks.dr_batched import BatchedDR

    torch.set_num_threads(1)
    state = ModelState("star", ModelConfig(n_users=16, n_items=16, n_domains=0, emb_dim=8, hidden=(16, 8)),
                       specific=specific, seed=3)
    state.ensure([f"u{k}" for k in range(20)], [f"i{k}" for k in range(20)], DOMS)
    buffers = {n: b.clone() for n, b in state.model.named_buffers()}
    rng = np.random.default_rng(0)
    splits = {d: Split(user=rng.integers(0, 20, 30), item=rng.integers(0, 20, 30),
                       label=rng.integers(0, 2, 30).astype(np.float32)) for d in range(3)}
    BatchedDR(state.params, lr=0.1, gamma=1.0, batch_size=64, max_steps=2, optimizer="sgd").run(
        [0, 2], {0: [1, 0], 2: [0, 2]}, splits)
    assert all(float(t.abs().sum()) > 0 for t in state.params.delta(0).values())
    for n, b in state.model.named_buffers():
        assert torch.equal(b, buffers[n]), n
    assert state.model.training  # the model's own mode is restored
