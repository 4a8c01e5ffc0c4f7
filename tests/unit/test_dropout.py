"""The zoo's dropout: the mask law of ``nn.Dropout`` (keep with 1 − p, scale by its inverse), seeded by torch's
generator, differentiable, usable under ``vmap(randomness="different")``, the identity in eval mode."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn
from torch.func import vmap

from trainer.models import MODELS, ModelConfig, build_model
from trainer.models.dropout import LANES, Dropout

N = 1 << 20


@pytest.mark.parametrize("p", [0.1, 0.25, 0.5, 0.9])
def test_keeps_each_element_with_one_minus_p_and_preserves_the_mean(p: float) -> None:
    torch.manual_seed(0)
    out = Dropout(p).train()(torch.ones(N))
    kept = out != 0
    q = round(p * LANES) / LANES  # the rounded p the mask uses (within 2^-17 of p)
    assert abs(q - p) <= 0.5 / LANES
    # six standard deviations of a binomial count: a wrong law fails, chance does not
    assert abs(kept.float().mean().item() - (1 - q)) < 6 * math.sqrt(q * (1 - q) / N)
    assert torch.allclose(out[kept], torch.full((int(kept.sum()),), 1 / (1 - q)))
    assert abs(out.mean().item() - 1.0) < 6 * math.sqrt(q / (1 - q) / N)


def test_mask_has_no_pattern_across_lanes_or_neighbours() -> None:
    """Each element has its own draw: the four lanes of a word and neighbouring elements are independent."""
    torch.manual_seed(1)
    kept = (Dropout(0.5).train()(torch.ones(N)) != 0).float()
    for lane in range(4):
        assert abs(kept[lane::4].mean().item() - 0.5) < 6 * math.sqrt(0.25 / (N // 4))
    both = (kept[:-1] * kept[1:]).mean().item()  # P(keep, keep) of neighbours = 1/4 when independent
    assert abs(both - 0.25) < 6 * math.sqrt(0.25 * 0.75 / N)


def test_edges_and_eval_mode() -> None:
    x = torch.randn(7, 5)
    assert Dropout(0.5).eval()(x) is x  # exported graphs see no dropout
    assert Dropout(0.0).train()(x) is x
    assert torch.equal(Dropout(1.0).train()(x), torch.zeros_like(x))
    with pytest.raises(ValueError):
        Dropout(1.5)
    assert Dropout(0.3).state_dict() == {}


def test_same_seed_same_mask_and_the_gradient_is_the_mask() -> None:
    x = torch.randn(64, 33, requires_grad=True)
    torch.manual_seed(5)
    a = Dropout(0.3).train()(x)
    torch.manual_seed(5)
    b = Dropout(0.3).train()(x)
    torch.manual_seed(6)
    c = Dropout(0.3).train()(x)
    assert torch.equal(a, b) and not torch.equal(a, c)
    a.sum().backward()
    assert x.grad is not None
    assert torch.allclose(x.grad, (a / x).detach())  # d out / d x = mask × scale


def test_each_vmapped_sample_draws_its_own_mask() -> None:
    torch.manual_seed(2)
    out = vmap(Dropout(0.5).train(), randomness="different")(torch.ones(8, 4096))
    masks = {tuple((row != 0).tolist()) for row in out}
    assert len(masks) == 8


@pytest.mark.parametrize("name", sorted(MODELS))
def test_every_zoo_model_uses_it(name: str) -> None:
    model = build_model(name, ModelConfig(n_users=5, n_items=5, n_domains=2, emb_dim=8, hidden=(8,), dropout=0.5))
    drops = [m for m in model.modules() if isinstance(m, nn.Dropout)]
    assert all(isinstance(m, Dropout) for m in drops), [type(m).__name__ for m in drops]
