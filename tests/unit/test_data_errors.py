"""Bad input (unknown names, missing files, malformed rows) gives one clear error line, never a traceback."""

from __future__ import annotations

import gzip
import json
import shutil
from pathlib import Path

import pytest

from contracts.errors import ConfigError, DataError, MamdrError
from trainer.data import load_dataset
from trainer.data.movielens import shipped_dir


def one_line(exc: pytest.ExceptionInfo[MamdrError]) -> str:
    message = exc.value.message
    assert "\n" not in message and message.strip() == message and len(message) < 400
    return message


def movielens_copy(tmp_path: Path) -> Path:
    folder = tmp_path / "ml"
    folder.mkdir()
    for name in ("movies.csv", "ratings.csv"):
        shutil.copyfile(shipped_dir() / name, folder / name)
    return folder


def test_unknown_name() -> None:
    with pytest.raises(ConfigError) as exc:
        load_dataset("movielens-1b")
    assert "unknown dataset 'movielens-1b'" in one_line(exc) and "ml-latest-small" in exc.value.message


def test_unknown_option() -> None:
    with pytest.raises(ConfigError) as exc:
        load_dataset("ml-latest-small", negative="sampled")
    assert "negative" in one_line(exc)
    with pytest.raises(ConfigError) as exc:
        load_dataset("ml-latest-small", negatives="random")
    assert "'sampled' or 'rating'" in one_line(exc)
    with pytest.raises(ConfigError) as exc:
        load_dataset("ml-latest-small", domains="crime,nope")
    assert "nope" in one_line(exc)


def test_missing_folder_and_missing_files(tmp_path: Path) -> None:
    with pytest.raises(DataError) as exc:
        load_dataset(str(tmp_path / "nowhere"))
    assert "folder not found" in one_line(exc)
    with pytest.raises(DataError) as exc:
        load_dataset("amazon", data_dir=tmp_path)
    assert "no *_5.json.gz files" in one_line(exc)
    folder = movielens_copy(tmp_path)
    (folder / "movies.csv").unlink()
    with pytest.raises(DataError) as exc:
        load_dataset(str(folder))
    assert f"{folder / 'movies.csv'}: file not found" in one_line(exc)
    (tmp_path / "pre" / "domain_0").mkdir(parents=True)
    with pytest.raises(DataError) as exc:
        load_dataset(str(tmp_path / "pre"))
    assert "uid2id.json: file not found" in one_line(exc)


def test_malformed_movielens_row_names_file_and_line(tmp_path: Path) -> None:
    folder = movielens_copy(tmp_path)
    lines = (folder / "ratings.csv").read_text().splitlines()
    lines[41] = "7,318,four,964982703"
    (folder / "ratings.csv").write_text("\n".join(lines) + "\n")
    with pytest.raises(DataError) as exc:
        load_dataset(str(folder))
    assert one_line(exc).startswith(f"{folder / 'ratings.csv'}:42: malformed row")


def test_malformed_amazon_line_names_file_and_line(tmp_path: Path) -> None:
    good = {"reviewerID": "A1", "asin": "B1", "overall": 5.0, "unixReviewTime": 1500000000}
    with gzip.open(tmp_path / "Toys_5.json.gz", "wt") as handle:
        handle.write(json.dumps(good) + "\n" + json.dumps({"asin": "B2"}) + "\n")
    with pytest.raises(DataError) as exc:
        load_dataset("amazon", data_dir=tmp_path)
    assert one_line(exc).startswith(f"{tmp_path / 'Toys_5.json.gz'}:2: malformed review")
    (tmp_path / "Toys_5.json.gz").write_bytes(b"not gzip")
    with pytest.raises(DataError) as exc:
        load_dataset("amazon", data_dir=tmp_path)
    assert "cannot read gzip" in one_line(exc)


def test_malformed_preprocessed_row_names_file_and_line(tmp_path: Path) -> None:
    from tests.unit.test_data_preprocessed import write_folder

    write_folder(tmp_path / "t", with_emb=False)
    path = tmp_path / "t" / "domain_0" / "train.csv"
    path.write_text(path.read_text().replace("0,0,0,0", "0,zero,0,0", 1))
    with pytest.raises(DataError) as exc:
        load_dataset(str(tmp_path / "t"))
    assert one_line(exc).startswith(f"{path}:2: malformed row")
