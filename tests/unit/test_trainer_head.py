"""θi's scope in the continual trainer: the model's head by default, kept by its lineage across restarts."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest
import torch

from contracts.errors import ConfigError
from tests.unit.test_trainer_retention import make_trainer, produce, rounds


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
    assert any("keeps θi over 'head'" in r.getMessage() for r in caplog.records)
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
