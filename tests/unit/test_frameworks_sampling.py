"""Domain sampling of the step baselines (WL, PCGrad, MAML, MLDG): ``proportional`` sees every row of every
domain once per epoch with a share of each step ∝ the domain's rows; ``balanced`` takes ⌈batch/n⌉ rows of
every domain per step, repeating a small domain many times per epoch."""

from __future__ import annotations

import math
from collections import Counter

import numpy as np
import pytest
import torch

from contracts.errors import ConfigError
from tests.support.frameworks_toy import toy_dataset, toy_model
from trainer.data.base import MultiDomainDataset, Split
from trainer.frameworks import FrameworkConfig, build_framework
from trainer.frameworks.multitask import StepFramework, proportional_slots
from trainer.research.report import sampling_line

SIZES = (10, 1000)
BATCH = 64


def _sized(sizes: tuple[int, ...] = SIZES) -> MultiDomainDataset:
    """One user id per row (a row is known by its user), so a test can count how often each row was drawn."""
    splits: dict[int, Split] = {}
    first = 0
    for d, n in enumerate(sizes):
        user = np.arange(first, first + n, dtype=np.int64)
        label = (np.arange(n) % 2).astype(np.float32)
        splits[d] = Split(user, np.zeros(n, dtype=np.int64), label)
        first += n
    return MultiDomainDataset(name="sized", domains=[f"d{d}" for d in range(len(sizes))],
                              user_ids=[f"u{u}" for u in range(first)], item_ids=["i0"],
                              train=splits, val=splits, test=splits)


def _framework(sampling: str, name: str = "weighted_loss", sizes: tuple[int, ...] = SIZES) -> StepFramework:
    ds = _sized(sizes)
    torch.manual_seed(0)
    fw = build_framework(name, toy_model(ds), ds, FrameworkConfig(batch_size=BATCH, domain_sampling=sampling))
    assert isinstance(fw, StepFramework)
    return fw


def _epoch(fw: StepFramework, rng: torch.Generator) -> list[dict[int, list[int]]]:
    """Per step: domain → the rows (user ids) it brought."""
    sampler = fw.sampler(rng)
    return [{d: sampler.batch(step, d)[0].tolist() for d in sampler.domains(step)} for step in range(sampler.steps)]


def test_proportional_sees_every_row_once_per_epoch_with_shares_in_proportion() -> None:
    fw = _framework("proportional")
    rng = torch.Generator().manual_seed(0)
    steps = math.ceil(sum(SIZES) / BATCH)
    orders = []
    for _ in range(2):
        epoch = _epoch(fw, rng)
        assert len(epoch) == steps  # as many optimizer steps as Alternate
        seen = {d: Counter(u for step in epoch for u in step.get(d, [])) for d in range(len(SIZES))}
        first = 0
        for d, n in enumerate(SIZES):
            assert seen[d] == Counter(range(first, first + n)), d  # every row exactly once
            first += n
        big = [len(step[1]) for step in epoch]
        assert min(big) >= SIZES[1] // steps and max(big) <= -(-SIZES[1] // steps)  # an even share per step
        small = [k for k, step in enumerate(epoch) if 0 in step]
        assert len(small) == SIZES[0] and all(len(epoch[k][0]) == 1 for k in small)
        assert small[-1] - small[0] >= steps // 2  # spread over the epoch, not all at its start
        orders.append([u for step in epoch for u in step[1]])
    assert orders[0] != orders[1]  # a fresh shuffle each epoch


def test_balanced_keeps_a_fixed_share_and_repeats_the_small_domain() -> None:
    fw = _framework("balanced")
    epoch = _epoch(fw, torch.Generator().manual_seed(0))
    share = math.ceil(BATCH / len(SIZES))
    assert len(epoch) == math.ceil(sum(SIZES) / BATCH)
    assert all(set(step) == {0, 1} and len(step[1]) == share and len(step[0]) == SIZES[0] for step in epoch)
    small = Counter(u for step in epoch for u in step[0])
    assert small == Counter({u: len(epoch) for u in range(SIZES[0])})  # 16 passes over the small domain
    assert len({u for step in epoch for u in step[1]}) == share * len(epoch) < SIZES[1]  # big one: not all


def test_balanced_draws_what_the_per_domain_streams_always_drew() -> None:
    """The sampler is the old streams, asked in the same order: a seed gives the same run as before."""
    fw = _framework("balanced")
    got = _epoch(fw, torch.Generator().manual_seed(3))
    streams = fw.streams(torch.Generator().manual_seed(3))
    want = [{d: next(streams[d])[0].tolist() for d in fw.domains} for _ in range(fw.steps_per_epoch())]
    assert got == want


def test_maml_brings_at_least_two_rows_of_a_domain_to_a_step() -> None:
    fw = _framework("proportional", name="maml", sizes=(9, 1000))
    epoch = _epoch(fw, torch.Generator().manual_seed(0))
    small = [len(step[0]) for step in epoch if 0 in step]
    assert sum(small) == 9 and min(small) >= 2 and len(small) == 4


def test_proportional_slots_cover_the_rows_once() -> None:
    for rows, cycle, minimum in ((10, 16, 1), (1000, 16, 1), (9, 16, 2), (1, 5, 2), (16, 16, 1), (0, 4, 1)):
        slots = proportional_slots(rows, cycle, minimum)
        covered = [i for start, stop in slots.values() for i in range(start, stop)]
        assert sorted(covered) == list(range(rows)) and all(0 <= k < cycle for k in slots), (rows, cycle)


@pytest.mark.parametrize("name", ["weighted_loss", "pcgrad", "maml", "mldg"])
def test_every_step_baseline_trains_deterministically_under_proportional_sampling(name: str) -> None:
    ds = toy_dataset(n_domains=3, rows=120)
    small = ds.train[2]
    ds.train[2] = Split(small.user[:7], small.item[:7], small.label[:7])  # fewer rows than steps

    def run() -> list[torch.Tensor]:
        torch.manual_seed(0)
        fw = build_framework(name, toy_model(ds), ds, FrameworkConfig(batch_size=32, domain_sampling="proportional"))
        rng = torch.Generator().manual_seed(1)
        for epoch in range(2):
            fw.train_epoch(epoch, rng)
        return [p.detach().clone() for p in fw.model.parameters()]

    first, second = run(), run()
    assert all(torch.isfinite(p).all() for p in first)
    assert all(torch.equal(a, b) for a, b in zip(first, second, strict=True))


def test_an_unknown_sampling_is_refused() -> None:
    with pytest.raises(ConfigError, match="domain_sampling 'uniform'"):
        FrameworkConfig(domain_sampling="uniform")


def test_the_table_names_the_sampling_of_the_step_baselines() -> None:
    methods = {"alternate": {"domain_sampling": None}, "pcgrad": {"domain_sampling": "proportional"},
               "maml": {"domain_sampling": "proportional"}}
    line = sampling_line(methods)
    assert line.startswith("domain sampling: proportional for pcgrad, maml") and "alternate" not in line
    assert sampling_line({"alternate": {"domain_sampling": None}}) == ""
