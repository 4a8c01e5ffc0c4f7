"""The same seed and the same stream give the same model, however polls cut the stream."""

from __future__ import annotations

import torch

from trainer.models import ModelConfig
from trainer.service.state import ModelState

CONFIG = ModelConfig(n_users=4, n_items=4, n_domains=0, emb_dim=8, hidden=(8,))


def _ids(prefix: str, n: int) -> list[str]:
    return [f"{prefix}{k}" for k in range(n)]


def _grown(seed: int, chunks: list[int]) -> ModelState:
    state = ModelState("mlp", CONFIG, seed=seed)
    start = 0
    for size in chunks:
        state.ensure(_ids("u", start + size)[start:], _ids("i", start + size)[start:], ["d0"])
        start += size
    return state


def _weights(state: ModelState) -> dict[str, torch.Tensor]:
    return {k: v.clone() for k, v in state.model.state_dict().items()}


def test_same_seed_same_weights_whatever_the_poll_boundaries() -> None:
    one_poll = _weights(_grown(7, [37]))
    three_polls = _weights(_grown(7, [5, 19, 13]))
    assert one_poll.keys() == three_polls.keys()
    for name, tensor in one_poll.items():
        assert torch.equal(tensor, three_polls[name]), name
    assert one_poll["user_embedding.weight"].shape[0] == 64  # 4 doubled until 37 ids fit


def test_another_seed_another_model() -> None:
    a, b = _weights(_grown(7, [37])), _weights(_grown(8, [37]))
    assert not torch.equal(a["user_embedding.weight"], b["user_embedding.weight"])


def test_global_generator_does_not_change_the_model() -> None:
    torch.manual_seed(1)
    a = _weights(_grown(7, [10]))
    torch.manual_seed(2)
    b = _weights(_grown(7, [10]))
    for name, tensor in a.items():
        assert torch.equal(tensor, b[name]), name


def test_the_trainer_learns_and_scores_the_same_whatever_the_poll_sizes(tmp_path) -> None:
    """End to end: the same stream polled 7 or 1,000 events at a time gives the same weights, the same θi and
    the same prequential figures. Ids get their rows in stream order (not grouped by domain within a poll),
    and a poll is scored as the live version scores it: an id whose row is newer than the version gets the
    version's cold-start vector, however many polls of the round came before."""
    from tests.unit.test_trainer_retention import make_trainer, produce, rounds

    results = []
    for poll in (7, 1000):
        tmp = tmp_path / f"poll{poll}"
        produce(f"file://{tmp}/stream/clicks", 0, 900, users=500, items=300)
        trainer = make_trainer(tmp, extra={"stream.max_poll_records": poll}, graduation_min_clicks=20)
        assert len(rounds(trainer, 3)) == 3
        state = trainer.state
        assert state is not None
        results.append((_weights(state), {s: state.params.delta(s) for s in state.slots().values()
                                          if state.params.has_delta(s)},
                        trainer.prequential.cumulative(), set(trainer.graduation.graduated)))
        trainer.close()
    (w7, d7, p7, g7), (w1000, d1000, p1000, g1000) = results
    for name, tensor in w7.items():
        assert torch.equal(tensor, w1000[name]), name
    assert d7.keys() == d1000.keys() and d7
    for slot, delta in d7.items():
        for name, tensor in delta.items():
            assert torch.equal(tensor, d1000[slot][name]), (slot, name)
    assert g7 == g1000 and p7.keys() == p1000.keys() and p7
    for domain, figs in p7.items():  # the log loss is a running sum: summed per poll, it differs in the last bits
        assert figs["auc"] == p1000[domain]["auc"] and figs["n"] == p1000[domain]["n"], domain
        assert abs(figs["logloss"] - p1000[domain]["logloss"]) < 1e-6, domain
