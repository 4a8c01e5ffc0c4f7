"""Bounded embedding tables (issue 13.4): frequency filter, expiry with a free list, cold start.

The soak at the end runs many quick rounds of a tiny model over a stream whose ids are always new
(bench/soak_retention.py runs the same soak longer and prints the figures): with expiry and
retention on, table rows, feature-store keys, disk bytes, checkpoints and registry records must
stop growing.
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import pytest

from bench.soak_retention import soak
from contracts.artifacts import read_manifest
from trainer.service.buffers import DomainBuffers
from trainer.service.vocab import Vocab


def test_frequency_filter_gives_a_row_at_the_nth_sighting_and_stays_bounded() -> None:
    v = Vocab(min_count=3, filter_capacity=2)
    assert list(v.rows(["a", "a", "b"])) == [-1, -1, -1]
    assert list(v.rows(["a", "b", "a"])) == [0, -1, 0]  # a's 3rd sighting admits it
    assert list(v.rows(["b"], add=False)) == [-1]  # looking up is no sighting
    assert list(v.rows(["b"])) == [1]
    v.rows(["x", "y", "z"])  # capacity 2: x (least recently seen) is forgotten
    assert list(v.rows(["x", "x"])) == [-1, -1]  # counted from scratch again
    assert v.active == 2 and len(v) == 2


def test_expiry_frees_rows_and_new_ids_reuse_them() -> None:
    v = Vocab()
    v.rows(["a", "b", "c"], round_no=1, now=100.0)
    v.rows(["b"], round_no=2, now=200.0)
    assert list(v.expire(3, 300.0, rounds=2)) == [0, 2]  # a and c not seen in rounds 2-3
    assert v.ids == [None, "b", None] and v.active == 1 and len(v) == 3
    assert list(v.rows(["d", "e", "f"], round_no=3, now=900.0)) == [0, 2, 3]  # free rows first, lowest first
    ids, rows = v.live()
    assert ids == ["d", "b", "e", "f"] and list(rows) == [0, 1, 2, 3]
    assert list(v.expire(3, 300.0)) == []  # both off: nothing expires
    assert list(v.expire(4, 1000.0, seconds=500.0)) == [1]  # b last seen at 200
    # an endless stream of new ids: the table stays as large as the ids of the last rounds
    for r in range(5, 200):
        v.rows([f"n{r}-{k}" for k in range(10)], round_no=r)
        v.expire(r, 0.0, rounds=3)
    assert v.active == 30 and len(v) == 40  # 3 rounds kept + 1 arriving before its expiry


def test_vocab_state_survives_a_checkpoint() -> None:
    v = Vocab(min_count=2)
    v.rows(["a", "a", "b", "c", "c"], round_no=4, now=5.0)
    v.expire(9, 9.0, rounds=3)
    v.rows(["d", "d", "e"], round_no=9, now=9.0)
    assert v.ids == ["d", None]
    w = Vocab.restore(v.ids, v.state(), min_count=2)
    assert w.ids == v.ids and w.live()[0] == v.live()[0]
    assert list(w.rows(["e"])) == [1]  # e's pending count (1) was restored: this is its 2nd sighting
    assert list(w.expire(11, 11.0, rounds=3)) == []  # d's last round (9) was restored too
    assert list(w.expire(12, 12.0, rounds=3)) == [0, 1]


def test_buffers_forget_rows_of_expired_ids() -> None:
    buf = DomainBuffers(per_domain=100, reservoir=100, seed=0)
    buf.add(0, np.array([0, 1, 2, 3]), np.array([5, 6, 7, 8]), np.ones(4, dtype=np.float32))
    buf.retire(buf.take_fresh())
    buf.add(0, np.array([1, 4]), np.array([9, 9]), np.ones(2, dtype=np.float32))
    assert buf.forget(np.array([1]), np.array([7])) == 3
    assert sorted(buf.replay_rows(0)["user"].tolist()) == [0, 3]
    assert buf.fresh[0].rows["user"].tolist() == [4]


def test_min_count_scores_rare_ids_cold_and_keeps_them_out_of_the_feature_store(tmp_path: Path) -> None:
    from feature_store import open_store
    from tests.unit.test_trainer_retention import make_trainer, produce, rounds

    url = f"file://{tmp_path}/stream/clicks"
    produce(url, 0, 300, users=40, items=60)  # each user 7-8 times, each item 5 times
    produce(url, 300, 20, users=1000)  # and 20 users seen once (u300 ... u319)
    trainer = make_trainer(tmp_path, min_count=3, round_events=1000)
    assert rounds(trainer, 1) == ["v000001"]
    trainer.close()
    state = trainer.state
    assert state is not None
    assert state.users.active == 40 and all(f"u{n}" not in state.users for n in range(300, 320))
    store = open_store(f"file://{tmp_path}/fs")
    assert store.describe("v000001").counts == {"user": 40, "item": 60}
    _, missing = store.get_many("user", ["u300", "u1"], version="v000001")
    assert missing == [0]  # serving: a feature-store miss, scored with the manifest's cold vector
    cold = read_manifest(tmp_path / "artifacts" / "v000001").cold_start
    live_mean = state.model.user_embedding.weight.detach()[:40].mean(0).numpy()
    assert np.allclose(cold["user"], live_mean, atol=1e-6)  # the mean of the rows ids own
    # the trainer's prequential scoring of an id without a row uses the same vector as serving
    assert np.allclose(state.cold_start()["user"], cold["user"])
    assert state.predict("alpha", ["u300"], ["i1"]) == pytest.approx(state.predict("alpha", ["u-never"], ["i1"]))


@pytest.mark.timeout(900)
def test_soak_keeps_tables_feature_store_disk_and_registry_flat(tmp_path: Path) -> None:
    t0 = time.monotonic()
    figures = soak(tmp_path, rounds=60, events_per_round=200, new_ids_per_round=40, expire_rounds=2,
                   keep_versions=3)
    early, late = figures[11], figures[-1]
    for key in ("table_rows", "fs_keys", "checkpoints", "registry_records", "folders"):
        assert max(f[key] for f in figures[11:]) <= early[key] * 1.1 + 2, (key, [f[key] for f in figures])
    assert late["disk_bytes"] <= early["disk_bytes"] * 1.25, [f["disk_bytes"] for f in figures]
    assert late["ids_seen"] > 4 * early["ids_seen"]  # while the ids kept coming
    assert time.monotonic() - t0 < 850


def test_free_rows_and_last_seen_marks_survive_a_restart(tmp_path: Path) -> None:
    from tests.unit.test_trainer_retention import make_trainer, produce, rounds

    url = f"file://{tmp_path}/stream/clicks"
    n = produce(url, 0, 300, users=40)
    trainer = make_trainer(tmp_path, expire_rounds=1)
    rounds(trainer, 1)
    n = produce(url, n, 300, users=20)  # u20..u39 are not seen in round 2: expired
    rounds(trainer, 1)
    trainer.close()
    before = trainer.state
    assert before is not None and before.users.active == 20 and None in before.users.ids
    resumed = make_trainer(tmp_path, expire_rounds=1)
    resumed.start()
    after = resumed.state
    assert after is not None
    assert after.users.ids == before.users.ids and after.users.state() == before.users.state()
    produce(url, n, 300, users=60)  # 40 ids come back or arrive: 20 reuse the free rows first
    assert rounds(resumed, 1) == ["v000003"]
    resumed.close()
    assert len(after.users) == 60 and after.users.active == 60
    from feature_store import open_store

    assert open_store(f"file://{tmp_path}/fs").describe("v000002").counts["user"] == 20


def test_rows_given_since_the_publish_are_not_the_live_versions_even_when_reused() -> None:
    """``Vocab.as_published``: a row assigned after the last publish, new or taken from the free list after
    expiry, is -1 to scoring (the live version has no row for its id) until the next publish."""
    from trainer.service.vocab import Vocab

    v = Vocab()
    v.rows(["a", "b", "c"], round_no=1)
    v.clear_changes()  # published
    v.expire(round_no=5, now=0.0, rounds=3)  # all three freed
    v.rows(["a"], round_no=5)  # "b"'s old row 0 reused... for "a" again: a new assignment all the same
    v.rows(["d"], round_no=5)
    rows = v.rows(["a", "d"], add=False)
    assert rows.tolist() == [0, 1]
    assert v.as_published(np.array([0, 1, 2, -1])).tolist() == [-1, -1, 2, -1]
    assert v.published_rows().tolist() == []  # "c" lost its row: nothing the live version holds is left
    v.clear_changes()
    assert v.as_published(rows).tolist() == [0, 1]


def test_a_restored_vocabulary_with_free_rows_looks_up_every_row() -> None:
    """A restored vocabulary has no mask of new rows yet; the first id to take a free row must size it to the
    whole table (it was sized to that row only, and scoring a higher row raised IndexError)."""
    from trainer.service.vocab import Vocab

    ids: list[str | None] = [f"u{k}" for k in range(3000)]
    ids[3] = None  # freed by expiry before the checkpoint
    v = Vocab(ids)
    assert v.rows(["new"]).tolist() == [3]
    assert v.as_published(np.array([2999, 3, -1])).tolist() == [2999, -1, -1]
    assert len(v.published_rows()) == 2999 and 3 not in v.published_rows()
