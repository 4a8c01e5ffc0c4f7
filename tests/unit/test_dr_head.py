"""Domain Regularization over a linear head (``trainer.specific=head``): the body's features once per drawn row,
then logistic-regression steps, which must be Algorithm 2 exactly; models whose logit is not a sum of head terms
fall back to the whole-model path; a round's DR reads at most K batches per domain. (Against
``DomainRegularization.regularize`` per target: ``tests/unit/test_trainer_scale.py``.)"""

from __future__ import annotations

import logging

import numpy as np
import pytest
import torch

from trainer.data.base import Split
from trainer.frameworks.dr_batched import BatchedDR, Batches
from trainer.models import MODELS, ModelConfig
from trainer.service.state import ModelState

SEQUENCES = {0: [1, 2, 0], 1: [3, 0, 1], 2: [0, 1, 2], 3: [2, 1, 3]}
SIZES = {0: 96, 1: 40, 2: 20, 3: 10}  # batches of 16 and K = 3: 3, 3, 2 and 1 steps; 0-2 are sampled


@pytest.fixture(autouse=True)
def one_thread():  # type: ignore[no-untyped-def]
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def _state(name: str, seed: int = 3, dropout: float = 0.0) -> ModelState:
    state = ModelState(name, ModelConfig(n_users=0, n_items=0, n_domains=0, emb_dim=8, hidden=(16, 8),
                                         dropout=dropout),
                       specific="head", seed=seed)
    state.ensure([f"u{k}" for k in range(30)], [f"i{k}" for k in range(30)], [f"d{k}" for k in range(4)])
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():  # fresh heads start at 0 and fresh rows alike: make every logit term matter
        for p in state.model.parameters():
            p.add_(0.3 * torch.randn(p.shape, generator=gen))
    return state


def _splits(seed: int = 0) -> dict[int, Split]:
    rng = np.random.default_rng(seed)
    return {d: Split(user=rng.integers(0, 30, n), item=rng.integers(0, 30, n),
                     label=rng.integers(0, 2, n).astype(np.float32)) for d, n in SIZES.items()}


def _run(state: ModelState, whole_model: bool, optimizer: str = "sgd", gamma: float = 0.5, precision: str = "fp32"
         ) -> tuple[dict[int, dict[str, torch.Tensor]], BatchedDR]:
    init = {t: {n: v.clone() for n, v in state.params.delta(t).items()} for t in range(4)}
    dr = BatchedDR(state.params, lr=0.5 if optimizer == "sgd" else 0.05, gamma=gamma, batch_size=16, max_steps=3,
                   optimizer=optimizer, precision=precision)  # type: ignore[arg-type]
    if whole_model:
        dr.head = None
    dr.run([0, 1, 2, 3], SEQUENCES, _splits(), seed=7)
    out = {t: {n: v.clone() for n, v in state.params.delta(t).items()} for t in range(4)}
    for t in range(4):
        state.params.set_delta(t, init[t])
    return out, dr


LINEAR_HEADS = ["autoint", "deepfm", "mlp", "neurfm", "wdl"]


def test_the_zoo_models_with_a_linear_head() -> None:
    """The models whose HEAD is plain one-output layers take the head path; STAR's head is per-domain rows."""
    taken = {name for name in sorted(MODELS) if MODELS[name].HEAD
             and BatchedDR(_state(name).params, lr=0.1, gamma=1.0, batch_size=16, max_steps=1).head is not None}
    assert taken == set(LINEAR_HEADS)


@pytest.mark.parametrize("optimizer", ["sgd", "adam"])
@pytest.mark.parametrize("name", LINEAR_HEADS)
def test_head_path_equals_the_whole_model_path(name: str, optimizer: str) -> None:
    """Same draws, same θi: the head path is the same arithmetic on features computed once (dropout 0, so
    train and eval mode agree)."""
    state = _state(name)
    fast, dr = _run(state, whole_model=False, optimizer=optimizer)
    assert dr.head is not None
    slow, _ = _run(state, whole_model=True, optimizer=optimizer)
    for t in range(4):
        for n, value in slow[t].items():
            assert torch.allclose(fast[t][n], value, atol=2e-5, rtol=1e-4), (name, t, n)
        assert max(float(v.abs().max()) for v in fast[t].values()) > 1e-3, t  # θi moved


@pytest.mark.parametrize("name", LINEAR_HEADS)
def test_with_dropout_the_head_path_trains_on_masked_features(name: str) -> None:
    """Dropout on: the affine check (eval mode) still passes, the masks come from torch's seed, and θi's steps
    see masked features (they differ from the same run with every dropout at p = 0)."""
    state = _state(name, dropout=0.5)
    torch.manual_seed(11)
    masked, dr = _run(state, whole_model=False)
    assert dr.head is not None
    torch.manual_seed(11)
    again, _ = _run(state, whole_model=False)
    for module in state.model.modules():
        if isinstance(module, torch.nn.Dropout):
            module.p = 0.0
    plain, _ = _run(state, whole_model=False)
    assert all(torch.equal(masked[t][n], again[t][n]) for t in range(4) for n in plain[t])
    assert any(not torch.allclose(masked[t][n], plain[t][n]) for t in range(4) for n in plain[t])


def test_a_logit_that_is_not_a_sum_of_head_terms_runs_the_whole_model(caplog: pytest.LogCaptureFixture) -> None:
    state = _state("mlp")
    plain = state.model.score
    state.model.score = lambda u, i, d: torch.tanh(plain(u, i, d))  # type: ignore[method-assign]
    with caplog.at_level(logging.WARNING, logger="trainer.frameworks.dr_batched"):
        checked, dr = _run(state, whole_model=False)
    assert dr.head is None and "not affine" in caplog.text
    slow, _ = _run(state, whole_model=True)
    for t in range(4):
        for n, value in slow[t].items():
            assert torch.equal(checked[t][n], value), (t, n)


def test_a_group_reads_at_most_k_batches_per_domain_cut_from_passes() -> None:
    """Each domain's batches are drawn once per group, as passes over permutations: no row twice in a pass."""
    rng = np.random.default_rng(0)
    splits = {d: Split(user=1000 * d + np.arange(n), item=rng.integers(0, 30, n),
                       label=rng.integers(0, 2, n).astype(np.float32)) for d, n in SIZES.items()}
    batches = Batches.draw(sorted(splits), splits, 16, lambda s: min(3, -(-len(s) // 16)), np.random.default_rng(0))
    assert batches.steps == {0: 3, 1: 3, 2: 2, 3: 1}
    users = {d: [batches.user[batches.slot[(d, q)], :batches.sizes[batches.slot[(d, q)]]]
                 for q in range(batches.steps[d])] for d in splits}
    assert [len(u) for u in users[0]] == [16, 16, 16] and [len(u) for u in users[1]] == [16, 16, 8]
    for d, parts in users.items():
        seen = np.concatenate(parts)
        assert len(np.unique(seen)) == len(seen), d  # disjoint: one pass is at least K batches here
        assert set(seen.tolist()) <= set(splits[d].user.tolist())
    assert all(set(np.concatenate(users[d]).tolist()) == set(splits[d].user.tolist()) for d in (1, 2, 3))  # a pass
    for (d, _q), k in batches.slot.items():
        n = int(batches.sizes[k])
        rows = batches.flat[k, :n]
        assert np.array_equal(batches.flat_domain[rows], np.full(n, d))
        assert np.array_equal(batches.user[k, :n], batches.flat_user[rows])
        assert float(batches.weight[k, :n].sum()) == n and float(batches.weight[k, n:].sum()) == 0.0
    assert float(batches.weight[batches.idle].sum()) == 0.0
    assert len(batches.flat_user) == 48 + 40 + 20 + 10


def test_head_inputs_in_chunks_equal_one_chunk(monkeypatch: pytest.MonkeyPatch) -> None:
    import trainer.frameworks.dr_batched as dr_batched

    state = _state("mlp")
    whole, _ = _run(state, whole_model=False)
    monkeypatch.setattr(dr_batched, "FEATURE_CHUNK", 7)
    chunked, _ = _run(state, whole_model=False)
    for t in range(4):
        for n, value in whole[t].items():
            assert torch.allclose(chunked[t][n], value, atol=1e-6), (t, n)


def test_a_head_layer_run_per_field_runs_the_whole_model() -> None:
    """Affine in θi but not one [rows, in] input per forward: the head path cannot take it; no crash."""
    state = _state("mlp")
    model = state.model

    def per_field(u: torch.Tensor, i: torch.Tensor, d: torch.Tensor) -> torch.Tensor:
        x = model.tower(torch.cat([u, i, model.domain_embedding(d)], dim=-1))
        return model.out(torch.stack([x, 0.5 * x], dim=1)).sum(dim=(1, 2))

    model.score = per_field  # type: ignore[method-assign]
    checked, dr = _run(state, whole_model=False)
    assert dr.head is None
    slow, _ = _run(state, whole_model=True)
    assert all(torch.equal(checked[t][n], slow[t][n]) for t in range(4) for n in slow[t])


def test_bf16_head_inputs_take_close_steps() -> None:
    state = _state("mlp")
    full, _ = _run(state, whole_model=False)
    half, dr = _run(state, whole_model=False, precision="bf16")
    assert dr.head is not None
    assert any(not torch.equal(half[t][n], full[t][n]) for t in range(4) for n in full[t])
    for t in range(4):  # bfloat16 keeps ~3 significant digits of each input: the steps agree to a few per cent
        for n, value in full[t].items():
            assert float((half[t][n] - value).norm()) <= 0.1 * float(value.norm()) + 1e-5, (t, n)


def test_eval_mode_gives_each_module_back_its_own_mode() -> None:
    """``run`` trains with batch-statistics layers in eval; computing the head inputs must not undo that."""
    from trainer.frameworks.dr_batched import _eval_mode

    model = torch.nn.Sequential(torch.nn.Linear(2, 2), torch.nn.BatchNorm1d(2)).train()
    model[1].eval()
    with _eval_mode(model):
        assert not any(m.training for m in model.modules())
    assert model.training and model[0].training and not model[1].training
