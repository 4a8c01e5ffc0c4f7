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
