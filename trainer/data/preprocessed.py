"""The paper's preprocessed Taobao-10/20/30 and Amazon-6/13 folders, read as they are (no resampling).

Layout (what the authors' ``split.py`` writes)::

    <root>/domain_<k>/{train,val,test}.csv      uid,pid,domain,label (integer ids, label 0/1)
    <root>/domain_<k>/domain_property.json      domain_name, n_uid, n_pid, ctr_ratio, pid_range
    <root>/processed_data/{uid2id,pid2id}.json  raw id -> integer id ({"id": n, "raw_id2id": {...}} or flat)
    <root>/[processed_data/]{user,item}_emb.json optional, integer id -> "128 space-separated floats" (Taobao)

The embeddings, when present, become fixed pretrained vectors (the global feature store's).
"""

from __future__ import annotations

import csv
import json
import re
from pathlib import Path
from typing import Any

import numpy as np

from contracts.errors import DataError
from contracts.events import is_domain_id, slugify
from trainer.data.base import MultiDomainDataset, Split

HEADER = ["uid", "pid", "domain", "label"]
_DOMAIN_DIR = re.compile(r"^domain_(\d+)$")


def is_preprocessed(root: Path) -> bool:
    return root.is_dir() and any(_DOMAIN_DIR.match(p.name) for p in root.iterdir() if p.is_dir())


def _load_json(path: Path) -> Any:
    if not path.is_file():
        raise DataError(f"{path}: file not found; a preprocessed folder needs it (MAMDR's split.py layout)")
    try:
        with path.open(encoding="utf-8") as handle:
            return json.load(handle)
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise DataError(f"{path}: not valid JSON ({exc}); regenerate the file") from None


def _id_map(path: Path) -> list[str]:
    """External ids by integer id, from a uid2id/pid2id export."""
    raw = _load_json(path)
    if not isinstance(raw, dict):
        raise DataError(f"{path}: expected a JSON object raw id -> integer id")
    nested = isinstance(raw.get("raw_id2id"), dict)
    mapping: dict[str, Any] = raw["raw_id2id"] if nested else raw
    count = raw.get("id") if nested else None
    try:
        pairs = [(int(v), str(k)) for k, v in mapping.items()]
    except (TypeError, ValueError):
        raise DataError(f"{path}: every value must be an integer id") from None
    n = max([i + 1 for i, _ in pairs] + [int(count) if isinstance(count, int) else 0])
    ids = [str(i) for i in range(n)]
    for i, key in pairs:
        if i < 0:
            raise DataError(f"{path}: negative id {i} for {key!r}")
        ids[i] = key
    return ids


def _bad_row(path: Path) -> str:
    """One line naming the first malformed row of a split file."""
    with path.open(newline="", encoding="utf-8") as handle:
        for line, row in enumerate(csv.reader(handle), start=1):
            if line == 1:
                continue
            try:
                if len(row) != 4:
                    raise ValueError
                [float(x) for x in row]
            except ValueError:
                return f"{path}:{line}: malformed row {row!r}; expected integers uid,pid,domain,label"
    return f"{path}: unreadable rows; expected integers uid,pid,domain,label"


def _read_split(path: Path, k: int, n_users: int, n_items: int) -> Split:
    if not path.is_file():
        raise DataError(f"{path}: file not found; each domain_<k> folder needs train.csv, val.csv, test.csv")
    with path.open(encoding="utf-8") as handle:
        header = handle.readline().strip().split(",")
    if header != HEADER:
        raise DataError(f"{path}:1: header {header} is not {HEADER}")
    try:
        arr = np.loadtxt(path, delimiter=",", skiprows=1, dtype=np.float64, ndmin=2)
    except ValueError:
        raise DataError(_bad_row(path)) from None
    if arr.size == 0:
        arr = np.zeros((0, 4))
    if arr.shape[1] != 4:
        raise DataError(_bad_row(path))
    checks = [
        (arr != np.floor(arr)).any(axis=1), (arr[:, 0] < 0) | (arr[:, 0] >= n_users),
        (arr[:, 1] < 0) | (arr[:, 1] >= n_items), arr[:, 2] != k, (arr[:, 3] != 0) & (arr[:, 3] != 1),
    ]
    what = ["non-integer value", f"uid outside [0, {n_users}) of uid2id.json",
            f"pid outside [0, {n_items}) of pid2id.json", f"domain column is not {k}", "label is not 0 or 1"]
    for bad, reason in zip(checks, what, strict=True):
        if bad.any():
            row = int(np.flatnonzero(bad)[0])
            raise DataError(f"{path}:{row + 2}: {reason} in row {arr[row].tolist()}; fix the row")
    return Split(user=np.ascontiguousarray(arr[:, 0], dtype=np.int64),
                 item=np.ascontiguousarray(arr[:, 1], dtype=np.int64),
                 label=np.ascontiguousarray(arr[:, 3], dtype=np.float32))


def _vectors(root: Path, name: str, n: int) -> np.ndarray | None:
    path = next((p for p in (root / name, root / "processed_data" / name) if p.is_file()), None)
    if path is None:
        return None
    raw = _load_json(path)
    if not isinstance(raw, dict):
        raise DataError(f"{path}: expected a JSON object id -> vector")
    out: np.ndarray | None = None
    for key, value in raw.items():
        try:
            i = int(key)
            vec = np.asarray(value.split() if isinstance(value, str) else value, dtype=np.float32)
        except (TypeError, ValueError):
            raise DataError(f"{path}: entry {key!r} is not id -> space-separated floats") from None
        if not 0 <= i < n:
            raise DataError(f"{path}: id {i} is outside [0, {n}) of the id map")
        if out is None:
            out = np.full((n, vec.shape[0]), np.nan, dtype=np.float32)
        if vec.ndim != 1 or vec.shape[0] != out.shape[1]:
            raise DataError(f"{path}: entry {key!r} has {vec.size} values, expected {out.shape[1]}")
        out[i] = vec
    if out is None:
        raise DataError(f"{path}: no vectors")
    missing = np.flatnonzero(np.isnan(out).any(axis=1))
    if missing.size:
        raise DataError(f"{path}: no vector for id {int(missing[0])} ({missing.size} missing); add them")
    return out


def load_preprocessed(root: str | Path) -> MultiDomainDataset:
    """Read a preprocessed folder exactly as written (the authors' negatives, split and ctr ratios)."""
    root = Path(root)
    if not root.is_dir():
        raise DataError(f"{root}: folder not found")
    found = sorted(((int(m.group(1)), p) for p in root.iterdir()
                    if p.is_dir() and (m := _DOMAIN_DIR.match(p.name))), key=lambda kp: kp[0])
    if not found:
        raise DataError(f"{root}: no domain_<k> folders; expected the layout MAMDR's split.py writes")
    user_ids = _id_map(root / "processed_data" / "uid2id.json")
    item_ids = _id_map(root / "processed_data" / "pid2id.json")
    domains: list[str] = []
    names: list[str] = []
    ratios: dict[int, float] = {}
    splits: list[dict[int, Split]] = [{}, {}, {}]
    for d, (k, folder) in enumerate(found):
        prop = _load_json(folder / "domain_property.json")
        if not isinstance(prop, dict):
            raise DataError(f"{folder / 'domain_property.json'}: expected a JSON object")
        name = str(prop.get("domain_name", f"domain_{k}"))
        slug = slugify(name) if name else f"domain-{k}"
        if slug in domains or not is_domain_id(slug):
            slug = f"domain-{k}"
        domains.append(slug)
        names.append(name)
        try:
            ratios[d] = float(prop.get("ctr_ratio", float("nan")))
        except (TypeError, ValueError):
            raise DataError(f"{folder / 'domain_property.json'}: ctr_ratio must be a number") from None
        for s, part in enumerate(("train", "val", "test")):
            splits[s][d] = _read_split(folder / f"{part}.csv", k, len(user_ids), len(item_ids))
    return MultiDomainDataset(
        name=root.name,
        domains=domains,
        user_ids=user_ids,
        item_ids=item_ids,
        train=splits[0],
        val=splits[1],
        test=splits[2],
        ctr_ratio=ratios,
        user_vectors=_vectors(root, "user_emb.json", len(user_ids)),
        item_vectors=_vectors(root, "item_emb.json", len(item_ids)),
        info={"domain_names": names, "source": str(root), "negatives": "preprocessed"},
    )
