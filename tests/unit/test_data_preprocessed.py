"""The loader for the paper's preprocessed Taobao/Amazon folders, on a small folder written here."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from contracts.errors import DataError
from trainer.data import load_dataset

N_USERS, N_ITEMS, DIM = 6, 8, 128


def write_folder(root: Path, *, with_emb: bool = True, nested_ids: bool = True) -> dict[str, np.ndarray]:
    """Two themes in the layout MAMDR's split.py writes; returns the embedding tables written."""
    rng = np.random.default_rng(7)
    (root / "processed_data").mkdir(parents=True)
    uid2id = {f"user{u * 11}": u for u in range(N_USERS)}
    pid2id = {f"item{i * 13}": i for i in range(N_ITEMS)}
    (root / "processed_data" / "uid2id.json").write_text(
        json.dumps({"id": N_USERS, "raw_id2id": uid2id} if nested_ids else uid2id))
    (root / "processed_data" / "pid2id.json").write_text(json.dumps(pid2id))
    for k, (name, ratio) in enumerate((("theme_3", 0.25), ("theme_9", 0.4))):
        folder = root / f"domain_{k}"
        folder.mkdir()
        (folder / "domain_property.json").write_text(json.dumps(
            {"domain_name": name, "n_uid": N_USERS, "n_pid": 4, "ctr_ratio": ratio,
             "pid_range": list(range(4 * k, 4 * k + 4))}))
        for part, n in (("train", 9), ("val", 3), ("test", 3)):
            rows = ["uid,pid,domain,label"]
            rows += [f"{(j + k) % N_USERS},{4 * k + j % 4},{k},{(j + k) % 2}" for j in range(n)]
            (folder / f"{part}.csv").write_text("\n".join(rows) + "\n")
    emb = {"user": rng.standard_normal((N_USERS, DIM)).astype(np.float32),
           "item": rng.standard_normal((N_ITEMS, DIM)).astype(np.float32)}
    if with_emb:
        (root / "user_emb.json").write_text(json.dumps(
            {str(u): " ".join(repr(float(x)) for x in emb["user"][u]) for u in range(N_USERS)}))
        (root / "processed_data" / "item_emb.json").write_text(json.dumps(
            {str(i): " ".join(repr(float(x)) for x in emb["item"][i]) for i in range(N_ITEMS)}))
    return emb


def test_preprocessed_folder_with_pretrained_vectors(tmp_path: Path) -> None:
    emb = write_folder(tmp_path / "Taobao-2")
    ds = load_dataset(str(tmp_path / "Taobao-2"))
    assert ds.name == "Taobao-2"
    assert ds.domains == ["theme_3", "theme_9"]
    assert ds.user_ids == [f"user{u * 11}" for u in range(N_USERS)]
    assert ds.item_ids == [f"item{i * 13}" for i in range(N_ITEMS)]
    assert ds.ctr_ratio == {0: 0.25, 1: 0.4}
    assert [len(ds.train[d]) for d in (0, 1)] == [9, 9] and len(ds.test[1]) == 3
    np.testing.assert_array_equal(ds.train[1].item, [4 + j % 4 for j in range(9)])
    np.testing.assert_array_equal(ds.val[0].label, [0, 1, 0])
    assert ds.user_vectors is not None and ds.item_vectors is not None
    assert ds.user_vectors.shape == (N_USERS, DIM) and ds.item_vectors.shape == (N_ITEMS, DIM)
    np.testing.assert_allclose(ds.user_vectors, emb["user"])
    np.testing.assert_allclose(ds.item_vectors, emb["item"])


def test_preprocessed_folder_without_vectors_and_flat_id_map(tmp_path: Path) -> None:
    write_folder(tmp_path / "amz", with_emb=False, nested_ids=False)
    ds = load_dataset(tmp_path / "amz")
    assert ds.user_vectors is None and ds.item_vectors is None and ds.n_users == N_USERS


def test_preprocessed_row_outside_the_id_map_is_named(tmp_path: Path) -> None:
    write_folder(tmp_path / "t")
    path = tmp_path / "t" / "domain_1" / "val.csv"
    path.write_text(path.read_text() + f"{N_USERS + 5},4,1,0\n")
    with pytest.raises(DataError) as err:
        load_dataset(str(tmp_path / "t"))
    assert f"{path}:5:" in err.value.message and "uid2id.json" in err.value.message


def test_preprocessed_vector_of_wrong_length_is_named(tmp_path: Path) -> None:
    write_folder(tmp_path / "t")
    path = tmp_path / "t" / "user_emb.json"
    data = json.loads(path.read_text())
    data["2"] = "0.5 0.25"
    path.write_text(json.dumps(data))
    with pytest.raises(DataError, match="entry '2' has 2 values, expected 128"):
        load_dataset(str(tmp_path / "t"))
