"""The benchmark as a time-ordered click stream for the replay."""

from __future__ import annotations

import itertools
from pathlib import Path

import pytest

from contracts.errors import ConfigError
from contracts.events import ClickEvent
from trainer.data import benchmark_events, load_dataset


@pytest.fixture(scope="module")
def events() -> list[dict]:
    return list(benchmark_events("ml-latest-small", seed=0, domains="film-noir,western,action"))


def test_events_are_valid_click_events_in_time_order(events: list[dict]) -> None:
    stream = benchmark_events("ml-latest-small", seed=0, domains="film-noir,western,action")
    assert stream.domains == ["film-noir", "western", "action"]  # in the order asked for
    assert len(stream) == len(events)
    parsed = [ClickEvent.model_validate(e) for e in events]
    assert all(a.ts <= b.ts for a, b in itertools.pairwise(parsed))
    assert {e.domain for e in parsed} == set(stream.domains)
    assert len({e.event_id for e in parsed}) == len(parsed)
    # the whole benchmark: exactly the rows load_dataset gives for the same seed and options
    ds = load_dataset("ml-latest-small", seed=0, domains="film-noir,western,action")
    rows = sum(len(s) for part in (ds.train, ds.val, ds.test) for s in part.values())
    assert rows == len(events)
    assert sum(e["clicked"] for e in events) == int(sum(s.label.sum() for part in (ds.train, ds.val, ds.test)
                                                        for s in part.values()))


def test_negatives_take_the_time_of_a_positive_of_the_same_user_and_domain(events: list[dict]) -> None:
    clicks = {(e["domain"], e["user_id"], e["ts"]) for e in events if e["clicked"] == 1}
    negatives = [e for e in events if e["clicked"] == 0]
    assert negatives and all((e["domain"], e["user_id"], e["ts"]) in clicks for e in negatives)
    clicked_items = {(e["user_id"], e["item_id"]) for e in events if e["clicked"] == 1}
    assert not any((e["user_id"], e["item_id"]) in clicked_items for e in negatives)


def test_event_ids_are_deterministic(events: list[dict]) -> None:
    again = list(benchmark_events("ml-latest-small", seed=0, domains="film-noir,western,action"))
    assert again == events
    other = list(benchmark_events("ml-latest-small", seed=1, domains="film-noir,western,action"))
    assert other[0]["event_id"] != events[0]["event_id"]


def test_with_split_marks_held_out_rows() -> None:
    stream = benchmark_events("ml-latest-small", seed=0, domains="film-noir", with_split=True)
    splits = [e["features"]["split"] for e in stream]
    assert {s: splits.count(s) / len(splits) for s in ("train", "val", "test")} == pytest.approx(
        {"train": 0.6, "val": 0.2, "test": 0.2}, abs=0.03)


def test_amazon_replays_in_time_order(shared_data: Path) -> None:
    stream = benchmark_events("amazon", data_dir=shared_data, seed=0)
    assert len(stream.domains) == 5
    ts = [e["ts"] for e in stream]
    assert ts == sorted(ts) and len(ts) == len(stream)


def test_preprocessed_folders_cannot_be_replayed(tmp_path: Path) -> None:
    (tmp_path / "domain_0").mkdir()
    with pytest.raises(ConfigError, match="no timestamps"):
        benchmark_events(str(tmp_path))
