"""The file:// backend across processes, file loaders (Taobao json, npy, npz) and the CLI."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest

from contracts.errors import DataError
from feature_store import open_store
from feature_store.loaders import bulk_write, read_embeddings, read_pretrained_json
from mamdr.cli import main

REPO = Path(__file__).resolve().parents[2]


def test_file_store_shared_with_another_process(tmp_path: Path) -> None:
    url = f"file://{tmp_path / 'fs'}"
    reader = open_store(url)
    assert reader.current_version() is None
    script = textwrap.dedent(f"""
        import numpy as np
        from feature_store import open_store
        s = open_store({url!r})
        s.declare("p1", {{"user": 3, "item": 3}})
        s.write("p1", "user", ["u"], np.array([[1.0, 2.0, 3.0]]))
        s.write("p1", "item", ["a", "b"], np.array([[4.0, 5.0, 6.0], [7.0, 8.0, 9.0]]))
        s.publish("p1")
    """)
    subprocess.run([sys.executable, "-c", script], check=True, cwd=REPO, timeout=60)
    got = reader.lookup("u", ["b", "c"])  # same reader object, opened before the other process wrote
    assert got.version == "p1" and got.missing_items == [1]
    np.testing.assert_array_equal(got.user, [1, 2, 3])
    np.testing.assert_array_equal(got.items[0], [7, 8, 9])
    reader.close()


def test_processes_opening_a_new_file_store_at_once_all_open_it(tmp_path: Path) -> None:
    """The trainer's ranks (and serving) may open a new file store in the same instant: SQLite refuses the
    losers of the switch to WAL at once ("database is locked") instead of waiting, so opening retries."""
    start = time.time() + 3.0  # every process imports first, then all open the k-th new store together
    script = textwrap.dedent(f"""
        import time
        from feature_store import open_store
        for k in range(10):
            time.sleep(max(0.0, {start!r} + 0.2 * k - time.time()))
            open_store(f"file://{tmp_path}/fs{{k}}").close()
    """)
    procs = [subprocess.Popen([sys.executable, "-c", script], cwd=REPO, stderr=subprocess.PIPE) for _ in range(8)]
    errors = [p.communicate(timeout=60)[1].decode() for p in procs]
    assert [p.returncode for p in procs] == [0] * 8, [e[-300:] for e in errors if e]


def _taobao_json(path: Path, n: int, dim: int, seed: int) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    vecs = {str(1000 + i): rng.standard_normal(dim).astype(np.float32) for i in range(n)}
    path.write_text(json.dumps({k: " ".join(repr(float(x)) for x in v) for k, v in vecs.items()}))
    return vecs


def test_pretrained_json(tmp_path: Path) -> None:
    vecs = _taobao_json(tmp_path / "user_emb.json", 20, 128, 0)
    ids, arr = read_pretrained_json(tmp_path / "user_emb.json")
    assert ids == list(vecs) and arr.shape == (20, 128) and arr.dtype == np.float32
    np.testing.assert_array_equal(arr[3], vecs[ids[3]])
    (tmp_path / "ragged.json").write_text(json.dumps({"a": "1 2 3", "b": "1 2"}))
    with pytest.raises(DataError, match="'b' has 2 values"):
        read_pretrained_json(tmp_path / "ragged.json")
    (tmp_path / "text.json").write_text(json.dumps({"a": "1 x 3"}))
    with pytest.raises(DataError, match="not a list of numbers"):
        read_pretrained_json(tmp_path / "text.json")
    (tmp_path / "broken.json").write_text("{")
    with pytest.raises(DataError, match="not valid JSON"):
        read_pretrained_json(tmp_path / "broken.json")


def test_npy_and_npz(tmp_path: Path) -> None:
    arr = np.arange(12, dtype=np.float32).reshape(4, 3)
    np.save(tmp_path / "v.npy", arr)
    (tmp_path / "ids.txt").write_text("a\nb\nc\nd\n")
    ids, got = read_embeddings(tmp_path / "v.npy", tmp_path / "ids.txt")
    assert ids == ["a", "b", "c", "d"]
    np.testing.assert_array_equal(got, arr)
    with pytest.raises(DataError, match="ids file"):
        read_embeddings(tmp_path / "v.npy")
    (tmp_path / "few.txt").write_text('["a", "b"]')
    with pytest.raises(DataError, match="does not match 2 ids"):
        read_embeddings(tmp_path / "v.npy", tmp_path / "few.txt")
    np.savez(tmp_path / "v.npz", ids=np.array(["w", "x", "y", "z"]), vectors=arr)
    ids, got = read_embeddings(tmp_path / "v.npz")
    assert ids == ["w", "x", "y", "z"]
    np.save(tmp_path / "obj.npy", np.array([{"a": 1}], dtype=object))
    with pytest.raises(DataError, match="pickle"):
        read_embeddings(tmp_path / "obj.npy", tmp_path / "ids.txt")
    with pytest.raises(DataError, match="unknown embedding file"):
        read_embeddings(tmp_path / "ids.txt")


def test_bulk_write_chunks(tmp_path: Path) -> None:
    store = open_store("memory://")
    ids = [str(i) for i in range(25)]
    assert bulk_write(store, "b1", "item", ids, np.ones((25, 4)), chunk=7) == 25
    assert store.describe("b1").counts["item"] == 25 and store.dims("b1") == {"item": 4}


def test_cli_load_info_gc(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    users = _taobao_json(tmp_path / "user_emb.json", 5, 16, 1)
    _taobao_json(tmp_path / "item_emb.json", 7, 16, 2)
    url = f"file://{tmp_path / 'fs'}"
    for version in ("a1", "a2", "a3"):
        assert main(["features", "load", "--feature-store", url, "--user", str(tmp_path / "user_emb.json"),
                     "--item", str(tmp_path / "item_emb.json"), "--version", version, "--no-progress"]) == 0
    assert main(["features", "publish", "--url", url, "a1"]) == 0  # the old spelling still works, with a warning
    assert "--url is deprecated" in capsys.readouterr().err
    capsys.readouterr()
    assert main(["features", "info", "--feature-store", url, "--output", "json"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["current"] == "a1" and info["healthy"]
    assert [v["counts"] for v in info["versions"]] == [{"user": 5, "item": 7}] * 3
    assert main(["features", "gc", "--feature-store", url, "--keep", "1"]) == 0
    assert "a2" in capsys.readouterr().out
    store = open_store(url)
    assert store.versions() == ["a1", "a3"]
    np.testing.assert_array_equal(store.lookup("1000", []).user, users["1000"])
    assert main(["features", "publish", "--feature-store", url, "zz"]) == 3  # not found: one line, no traceback
    assert "does not exist" in capsys.readouterr().err
    assert main(["features", "load", "--feature-store", url]) == 2
