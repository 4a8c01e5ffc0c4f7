"""Model agnosticism: θi = 0 serves θS, domains are isolated, every model × framework trains on
mixed-domain batches, and the same seed gives the same AUC table."""

from __future__ import annotations

import pytest
import torch

from tests.support.frameworks_toy import toy_dataset, toy_model
from trainer.evaluation import domain_auc
from trainer.frameworks import FRAMEWORKS, FrameworkConfig, build_framework, fit
from trainer.models import MODELS
from trainer.params import DomainParameters


@pytest.fixture(autouse=True)
def _one_thread():  # type: ignore[no-untyped-def]
    before = torch.get_num_threads()
    torch.set_num_threads(1)  # the CPU is shared; tiny models gain nothing from threads
    yield
    torch.set_num_threads(before)


def _mixed_batch(ds):  # type: ignore[no-untyped-def]
    g = torch.Generator().manual_seed(0)
    n = 40
    return (torch.randint(0, ds.n_users, (n,), generator=g), torch.randint(0, ds.n_items, (n,), generator=g),
            torch.randint(0, ds.n_domains, (n,), generator=g))


@pytest.mark.parametrize("model_name", sorted(MODELS))
def test_zero_deltas_serve_the_shared_model(model_name: str) -> None:
    ds = toy_dataset(n_domains=3)
    torch.manual_seed(0)
    model = toy_model(ds, model_name).eval()
    params = DomainParameters(model)
    for d in range(ds.n_domains):
        params.delta(d)  # explicit zero θi for every domain
    user, item, domain = _mixed_batch(ds)
    with torch.no_grad():
        assert torch.allclose(params.forward_grouped(user, item, domain), model(user, item, domain), atol=1e-6)


def test_adding_a_domain_changes_no_other_domain() -> None:
    ds = toy_dataset(n_domains=4)
    torch.manual_seed(0)
    fw = build_framework("mamdr", toy_model(ds), ds, FrameworkConfig(batch_size=32, k=1, epochs=1))
    rng = torch.Generator().manual_seed(0)
    fw.train_epoch(0, rng)
    fw.params.deltas.pop(3)  # domain 3 is "new": served by θS until trained
    user, item, domain = _mixed_batch(ds)
    before = fw.score(user, item, domain).clone()
    new = domain == 3
    with torch.no_grad():
        assert torch.allclose(before[new], fw.model.eval()(user[new], item[new], domain[new]), atol=1e-6)
    fw.dr_round(3, rng)  # onboard it with a DR round on the fixed θS
    after = fw.score(user, item, domain)
    assert torch.equal(after[~new], before[~new])
    assert not torch.allclose(after[new], before[new])


def _auc_table(model_name: str, framework: str) -> tuple[dict[int, float], torch.Tensor]:
    ds = toy_dataset(n_domains=3, rows=48)
    torch.manual_seed(5)
    cfg = FrameworkConfig(epochs=1, batch_size=32, k=1, seed=5, schedule="interleaved", finetune=framework == "mamdr",
                          finetune_epochs=1, dn_guard=False)  # one run of one epoch (the guard adds Alternate's)
    fw = build_framework(framework, toy_model(ds, model_name, dropout=0.5), ds, cfg)
    result = fit(fw)
    assert result.epochs == 1 and len(result.test) == 3
    scores = fw.score(*_mixed_batch(ds))  # one mixed-domain batch, each sample its own domain
    assert scores.shape == (40,) and torch.isfinite(scores).all()
    table = domain_auc(fw.score, ds.test)
    return table, scores


@pytest.mark.parametrize("framework", sorted(FRAMEWORKS))
@pytest.mark.parametrize("model_name", sorted(MODELS))
def test_every_model_trains_under_every_framework_reproducibly(model_name: str, framework: str) -> None:
    first, s1 = _auc_table(model_name, framework)
    if model_name == "mlp" or framework == "mamdr":  # the rerun costs time: one row and one column
        second, s2 = _auc_table(model_name, framework)
        assert first == second
        assert torch.equal(s1, s2)


def test_joint_training_sees_mixed_domain_batches() -> None:
    ds = toy_dataset(n_domains=3)
    fw = build_framework("joint", toy_model(ds), ds, FrameworkConfig(batch_size=32))
    batch = next(fw.mixed_batches(torch.Generator().manual_seed(0)))
    assert batch[2].unique().numel() > 1


def test_staged_schedule_moves_to_dr_after_shared_converges() -> None:
    ds = toy_dataset(n_domains=3)
    torch.manual_seed(0)
    fw = build_framework("mamdr", toy_model(ds), ds,
                         FrameworkConfig(epochs=6, patience=1, batch_size=32, k=1, schedule="staged"))
    result = fit(fw)
    first = result.phases.index("dr")
    assert first > 0 and set(result.phases[:first]) <= {"alternate", "dn"}  # θS (dn_guard: both runs) first
    assert set(result.phases[first:]) == {"dr"}, result.phases


@pytest.mark.parametrize(("first", "second"), [("alternate", "dr"), ("dn", "mamdr")])
def test_staged_run_resumed_from_its_first_stage_equals_a_full_run(first: str, second: str) -> None:
    ds = toy_dataset(n_domains=3)
    cfg = FrameworkConfig(epochs=3, patience=1, batch_size=32, k=1, schedule="staged", seed=2)

    def run(name: str, resume=None):  # type: ignore[no-untyped-def]
        torch.manual_seed(2)
        return fit(build_framework(name, toy_model(ds, dropout=0.5), ds, cfg), resume_shared=resume)

    full = run(second)
    resumed = run(second, run(first).state)
    assert "dr" in full.phases
    assert resumed.test == full.test and resumed.val_history == full.val_history
