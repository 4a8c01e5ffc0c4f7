"""A continual-trainer round at scale: every fresh click is trained on, overload is counted or held back,
and DN's outer step / DR leave untouched table rows bit-identical without full-table copies."""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from contracts.events import ClickEvent
from contracts.settings import load_settings
from domain_registry import open_registry
from feature_store import open_store
from stream import open_stream
from tests.support.frameworks_toy import toy_dataset
from trainer.data.base import Split
from trainer.frameworks import MAMDR, DomainNegotiation, DomainRegularization, FrameworkConfig
from trainer.frameworks.dr_batched import BatchedDR
from trainer.frameworks.sparse import RowWiseAdagrad
from trainer.models import ModelConfig, build_model
from trainer.service.buffers import DomainBuffers, round_batches
from trainer.service.loop import ContinualTrainer

DOMAINS = ("a", "b", "c")


def _trainer(tmp: Path, **knobs: object) -> tuple[ContinualTrainer, str]:
    url = f"file://{tmp}/stream/clicks"
    settings = load_settings(**{"home": str(tmp), "artifacts_url": f"file://{tmp}/artifacts", "stream.url": url,
                                "stream.create_topics": True,
                                "stream.group": "scale", "stream.partitions": 1, "stream.fsync": False,
                                "trainer.round_seconds": 3600.0, "trainer.batch_size": 64,
                                "trainer.inner_batches": 2, **{f"trainer.{k}": v for k, v in knobs.items()}})
    registry = open_registry(f"sqlite://{tmp}/registry.db")
    for d in DOMAINS:
        registry.create_domain(d)
    trainer = ContinualTrainer(settings, stream=open_stream(url, settings.stream), store=open_store("memory://s"),
                               registry=registry, artifacts=tmp / "artifacts", model="mlp",
                               model_config={"emb_dim": 8, "hidden": (16, 8)})
    return trainer, url


def _produce(url: str, start: int, n: int) -> None:
    stream = open_stream(url, load_settings(**{"stream.partitions": 1, "stream.create_topics": True}).stream)
    with stream.producer() as p:
        for k in range(start, start + n):
            p.send(json.dumps(ClickEvent(event_id=f"e{k}", ts=time.time(), domain=DOMAINS[k % 3],
                                         user_id=f"u{k}", item_id=f"i{k % 40}", clicked=k % 2).model_dump()).encode())
        p.flush()
    stream.close()


def test_round_batches_cover_every_row_once_in_the_chained_order() -> None:
    from trainer.data.base import Split

    rng = np.random.default_rng(0)
    train = {d: Split(user=np.arange(d * 1000, d * 1000 + n), item=rng.integers(0, 9, n),
                      label=np.zeros(n, dtype=np.float32)) for d, n in ((0, 5), (1, 300), (2, 1), (3, 70))}
    batches = round_batches(train, [2, 0, 3, 1], 64, torch.Generator().manual_seed(0))
    users = torch.cat([b[0] for b in batches])
    assert sorted(users.tolist()) == sorted(np.concatenate([s.user for s in train.values()]).tolist())
    assert len(batches) == -(-376 // 64)  # ⌈rows / batch⌉ steps, not K per domain
    domains = torch.cat([b[2] for b in batches]).tolist()
    assert [d for k, d in enumerate(domains) if k == 0 or domains[k - 1] != d] == [2, 0, 3, 1]
    assert all((users // 1000 == torch.cat([b[2] for b in batches])).tolist())


def test_every_fresh_click_of_a_round_is_trained_on(tmp_path: Path) -> None:
    """Count the (user, item) pairs DN's optimizer saw: every fresh click of each round, replay on top."""
    torch.manual_seed(0)
    trainer, url = _trainer(tmp_path, round_events=900, replay_ratio=0.5, min_batches=1)
    trainer.start()
    seen: list[torch.Tensor] = []
    for r in range(2):
        _produce(url, r * 900, 900)
        fw = trainer.framework
        assert fw is not None
        original = type(fw).negotiate

        def spy(self, rounds, beta=None, _orig=original):  # type: ignore[no-untyped-def]
            rounds = [(d, list(b)) for d, b in rounds]
            seen.append(torch.cat([b[0] for _, bs in rounds for b in bs]))
            return _orig(self, rounds, beta)

        type(fw).negotiate = spy  # type: ignore[method-assign]
        try:
            reports = trainer.run(max_rounds=1, idle_exit_s=1.0)
        finally:
            type(fw).negotiate = original  # type: ignore[method-assign]
        assert reports and reports[0].valid == 900 and reports[0].sampled_out == 0
        state = trainer.state
        assert state is not None
        fresh_rows = set(state.users.rows([f"u{k}" for k in range(r * 900, (r + 1) * 900)], add=False).tolist())
        trained = seen[-1].tolist()
        assert fresh_rows <= set(trained), len(fresh_rows - set(trained))
        replay = len(trained) - 900
        assert replay == (0 if r == 0 else 450), replay  # round 2 mixes in replay_ratio × fresh old rows
        assert reports[0].trained_rows == len(trained)
    trainer.close()


def test_sample_policy_counts_what_it_drops_and_backpressure_polls_only_a_round(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    trainer, url = _trainer(tmp_path / "s", round_events=300, overload_policy="sample", max_lag_events=100)
    _produce(url, 0, 1200)
    trainer.start()
    first = trainer.run(max_rounds=1, idle_exit_s=2.0)[0]
    assert first.valid == 300 and first.lag == 900 and first.sampled_out == 0
    assert trainer.round_budget() == 800  # the next round brings the lag back to max_lag_events
    with caplog.at_level("WARNING", logger="mamdr.trainer"):
        second = trainer.run(max_rounds=1, idle_exit_s=2.0)[0]
    assert second.valid == 800 and second.sampled_out == 500  # trained on a sample of round_events
    assert trainer.metrics.events_dropped._value.get() == 500  # type: ignore[attr-defined]
    assert second.lag == 100
    assert any("sampled out" in r.message for r in caplog.records)
    assert any("consumer lag" in r.message for r in caplog.records)
    trainer.close()

    back, url = _trainer(tmp_path / "b", round_events=300, overload_policy="backpressure", max_lag_events=100)
    _produce(url, 0, 1200)
    back.start()
    reports = back.run(max_rounds=2, idle_exit_s=2.0)
    assert [r.valid for r in reports] == [300, 300] and [r.sampled_out for r in reports] == [0, 0]
    assert [r.lag for r in reports] == [900, 600]  # not polled: the lag waits in the log, reported
    assert back.metrics.consumer_lag._value.get() == 600  # type: ignore[attr-defined]
    assert back.round_budget() == 300
    back.close()


def test_vectorised_reservoir_keeps_a_uniform_sample() -> None:
    buf = DomainBuffers(per_domain=1000, reservoir=500, seed=3)
    n = 20_000
    for start in range(0, n, 4000):
        buf.retire({0: np.rec.fromarrays([np.arange(start, start + 4000), np.zeros(4000, dtype=np.int64),
                                          np.zeros(4000, dtype=np.float32)], names="user,item,label")
                    .astype(buf.replay_rows(0).dtype)})
    kept = buf.replay_rows(0)["user"]
    assert len(kept) == 500 and len(set(kept.tolist())) == 500
    assert abs(kept.mean() - n / 2) < 0.1 * n  # not the first or the last rows
    assert ((kept < 4000).sum() > 50) and ((kept >= 16000).sum() > 50)
    sample, dropped = buf.sample_fresh({0: buf.replay_rows(0), 1: buf.replay_rows(0)[:100]}, 300)
    assert dropped == 300 and sum(len(v) for v in sample.values()) == 300


def _big_model(n_rows: int) -> torch.nn.Module:
    torch.manual_seed(0)
    return build_model("mlp", ModelConfig(n_users=n_rows, n_items=n_rows, n_domains=3, emb_dim=8, hidden=(16, 8),
                                          dropout=0.0))


@pytest.mark.parametrize("table_optimizer", ["sparse_adam", "rowwise_adagrad"])
def test_outer_step_and_dr_leave_untouched_rows_bit_identical(table_optimizer: str) -> None:
    ds = toy_dataset(n_domains=3, n_users=24, n_items=30)
    model = _big_model(200_000)  # the toy's ids are rows 0..29 of 200k-row tables
    fw = MAMDR(model, ds, FrameworkConfig(batch_size=16, beta=0.3, seed=0, table_optimizer=table_optimizer,
                                          inner_steps=2, dr_steps=2, specific="default"))
    rng = torch.Generator().manual_seed(0)
    # optimizer state is allocated once per lineage (SparseAdam's at its first step), not per round
    fw.update(fw.inner_optimizer(), fw.domain_batches(0, rng, 1))
    tables = {n: p.detach().clone() for n, p in model.named_parameters() if n in fw.table_params()}
    assert set(tables) == {"user_embedding.weight", "item_embedding.weight"}
    big = tables["user_embedding.weight"].numel()
    # no buffer of the outer step is table-sized: only dense parameters are snapshotted in full
    assert all(t.numel() < big for t in fw.outer.start)
    batches = [(d, list(fw.domain_batches(d, rng, 2))) for d in range(3)]
    touched = {"user_embedding.weight": torch.unique(torch.cat([b[0] for _, bs in batches for b in bs])),
               "item_embedding.weight": torch.unique(torch.cat([b[1] for _, bs in batches for b in bs]))}
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU], profile_memory=True) as prof:
        fw.negotiate(batches)
        for target in range(3):
            fw.dr_round(target, rng)
    largest = max((e.cpu_memory_usage for e in prof.events() if e.cpu_memory_usage > 0), default=0)
    assert largest < big * 4 // 2, (largest, big * 4)  # no allocation of a table copy
    for name, before in tables.items():
        after = dict(model.named_parameters())[name].detach()
        mask = torch.ones(after.shape[0], dtype=torch.bool)
        mask[touched[name]] = False
        assert torch.equal(after[mask], before[mask]), name  # untouched rows: bit-identical
        assert not torch.equal(after[touched[name]], before[touched[name]]), name  # touched rows learned


def test_dn_with_beta_one_is_alternate_with_row_sparse_tables() -> None:
    from trainer.frameworks import Alternate

    def train(cls: type) -> torch.Tensor:
        ds = toy_dataset()
        torch.manual_seed(3)
        model = build_model("mlp", ModelConfig(n_users=ds.n_users, n_items=ds.n_items, n_domains=ds.n_domains,
                                               emb_dim=8, hidden=(16, 8), dropout=0.5))
        fw = cls(model, ds, FrameworkConfig(batch_size=16, beta=1.0, seed=3, table_optimizer="sparse_adam",
                                            specific="default"))
        rng = torch.Generator().manual_seed(3)
        torch.manual_seed(4)
        for epoch in range(2):
            fw.train_epoch(epoch, rng)
        return torch.cat([p.detach().reshape(-1) for p in fw.model.parameters()])

    assert torch.allclose(train(DomainNegotiation), train(Alternate), atol=1e-6, rtol=0)


@pytest.mark.parametrize("specific", ["default", "head"])
@pytest.mark.parametrize("gamma", [0.5, 1.0])
@pytest.mark.parametrize("optimizer", ["adam", "sgd"])
def test_batched_dr_is_algorithm_2_per_target(optimizer: str, gamma: float, specific: str) -> None:
    """All targets at once = ``regularize`` per target with a fresh Adam (or plain SGD) each (full-split
    batches), over every parameter (vmapped whole-model steps) and over the head (steps on the head's inputs).
    γ = 1 steps θi in place while every target takes the pair (the first two here), and copies θ̃ for the pair
    only target 1 takes."""

    ds = toy_dataset(n_domains=4)
    torch.manual_seed(1)
    model = build_model("mlp", ModelConfig(n_users=ds.n_users, n_items=ds.n_items, n_domains=4, emb_dim=8,
                                           hidden=(16, 8), dropout=0.0))
    lr = 0.01 if optimizer == "adam" else 5.0  # SGD: the toy gradients are small
    fw = DomainRegularization(model, ds, FrameworkConfig(inner=optimizer, inner_lr=lr, gamma=gamma, l2=1e-3,
                                                         batch_size=10_000, delta_init="random", seed=1,
                                                         specific=specific))
    init = {t: {n: v.clone() for n, v in fw.params.delta(t).items()} for t in range(4)}
    sequences = {0: [2, 0], 1: [0, 3, 1]}  # unequal: target 0 sits out the last pair (masked steps)

    def full(d: int) -> list:  # type: ignore[type-arg]
        s = ds.train[d]
        return [(torch.from_numpy(s.user), torch.from_numpy(s.item), torch.full((len(s),), d),
                 torch.from_numpy(s.label))]

    for t, seq in sequences.items():
        fw._dr_opt = None
        fw.regularize(t, [(full(j), full(t)) for j in seq])
    expected = {t: {n: v.clone() for n, v in fw.params.delta(t).items()} for t in sequences}
    for t in range(4):
        fw.params.set_delta(t, init[t])
    dr = BatchedDR(fw.params, lr=lr, gamma=gamma, batch_size=10_000, max_steps=1, l2=1e-3, optimizer=optimizer)
    dr.run([0, 1], sequences, ds.train)
    assert (dr.head is not None) == (specific == "head")
    for t in sequences:
        for n, value in expected[t].items():
            assert torch.allclose(fw.params.delta(t)[n], value, atol=1e-6), (t, n)
            assert (value - init[t][n]).abs().max() > 1e-3, (t, n)


@pytest.mark.parametrize("optimizer", ["adam", "sgd"])
def test_batched_dr_in_place_steps_equal_the_copying_path(optimizer: str) -> None:
    """γ = 1 steps θi in place; the copying path (eq. 5's copy, eq. 8's blend) gives the same θi, also when
    targets of unequal size sit out some steps of a pair (the masked updates). γ = 1 − 1e-9 takes the copying
    path, and eq. 8's weight rounds to 1 in float32."""
    ds = toy_dataset(n_domains=4)
    torch.manual_seed(1)
    model = build_model("mlp", ModelConfig(n_users=ds.n_users, n_items=ds.n_items, n_domains=4, emb_dim=8,
                                           hidden=(16, 8), dropout=0.0))
    fw = DomainRegularization(model, ds, FrameworkConfig(inner=optimizer, inner_lr=0.01, gamma=1.0,
                                                         delta_init="random", seed=1, specific="default"))
    init = {t: {n: v.clone() for n, v in fw.params.delta(t).items()} for t in range(4)}
    sizes = {0: 96, 1: 40, 2: 20, 3: 10}  # with batches of 8 and K = 4: 4, 4, 3 and 2 steps (masked updates)
    splits = {d: Split(user=ds.train[d].user[:n], item=ds.train[d].item[:n], label=ds.train[d].label[:n])
              for d, n in sizes.items()}
    batch = 8
    sequences = {0: [1, 2, 0], 1: [3, 0, 1], 2: [0, 1, 2], 3: [2, 1, 3]}
    results = []
    for gamma in (1.0, 1.0 - 1e-9):
        for t in range(4):
            fw.params.set_delta(t, init[t])
        BatchedDR(fw.params, lr=0.01 if optimizer == "adam" else 5.0, gamma=gamma, batch_size=batch, max_steps=4,
                  optimizer=optimizer).run(
            [0, 1, 2, 3], sequences, splits, seed=3)
        results.append({t: {n: v.clone() for n, v in fw.params.delta(t).items()} for t in range(4)})
    assert len({min(4, -(-n // batch)) for n in sizes.values()}) > 1, sizes  # unequal step counts
    for t in range(4):
        for n, value in results[0][t].items():
            assert torch.allclose(value, results[1][t][n], atol=1e-6), (t, n)
        assert max(float((v - init[t][n]).abs().max()) for n, v in results[0][t].items()) > 1e-3, t  # θi moved


def test_rowwise_adagrad_keeps_state_when_the_table_grows() -> None:
    table = torch.nn.Embedding(10, 4, sparse=True)
    opt = RowWiseAdagrad(table.parameters(), lr=0.1)
    table(torch.tensor([1, 2])).sum().backward()
    opt.step()
    acc = opt.state[table.weight]["sum"].clone()
    table.weight.data = torch.cat([table.weight.detach(), torch.zeros(10, 4)])
    table.weight.grad = None
    table(torch.tensor([15])).sum().backward()
    opt.step()
    state = opt.state[table.weight]["sum"]
    assert state.shape == (20,) and torch.equal(state[:10], acc) and state[15] > 0


def test_a_domain_with_a_single_fresh_click_trains() -> None:
    """A one-row field of a record array keeps the record's stride (numpy calls it contiguous); the round's
    batches are built from copies, so torch accepts them (the quickstart's onboarded domain hit this)."""
    from trainer.data.base import Split
    from trainer.service.buffers import round_batches

    rows = np.zeros(1, dtype=[("user", np.int64), ("item", np.int64), ("label", np.float32)])
    split = Split(user=rows["user"], item=rows["item"], label=rows["label"])  # strided one-row views
    batches = round_batches({0: split}, [0], 16, torch.Generator().manual_seed(0))
    assert len(batches) == 1 and batches[0][0].tolist() == [0]


@pytest.mark.parametrize(("knobs", "expected"), [({}, ("sgd", 0.3)),
                                                 ({"dr_optimizer": "adam", "lr": 2e-3}, ("adam", 2e-3)),
                                                 ({"dr_optimizer": "adam", "dr_lr": 0.01}, ("adam", 0.01))])
def test_a_round_steps_theta_i_with_the_configured_dr_optimizer(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                                knobs: dict, expected: tuple) -> None:
    """``trainer.dr_optimizer``/``dr_lr`` reach the round's DR (SGD at 0.3 unless told otherwise)."""
    import trainer.service.loop as loop

    used: list[tuple[str, float]] = []

    class Recording(loop.BatchedDR):  # type: ignore[name-defined,misc]
        def __init__(self, *args, **kwargs) -> None:  # type: ignore[no-untyped-def]
            super().__init__(*args, **kwargs)
            used.append((self.optimizer, self.lr))

    monkeypatch.setattr(loop, "BatchedDR", Recording)
    trainer, url = _trainer(tmp_path, round_events=300, **knobs)
    trainer.start()
    _produce(url, 0, 300)
    assert trainer.run(max_rounds=1, idle_exit_s=1.0)
    trainer.close()
    assert used == [expected]
