"""Bulk loading of embeddings from files into a store, with a progress bar.

Formats:
- the paper's Taobao ``user_emb.json`` / ``item_emb.json``: a JSON object id -> "f1 f2 ... fD"
  (space-separated floats; a JSON list of numbers is accepted too);
- ``.npy`` [n, D] with an ids file (one id per line, or a JSON list);
- ``.npz`` holding ``ids`` and ``vectors`` (or ``embeddings``) arrays, or one array plus an ids file.
Arrays are opened with ``allow_pickle=False``: a data file can never run code.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from tqdm import tqdm

from contracts.errors import DataError
from feature_store.base import EmbeddingStore, Kind


def read_pretrained_json(path: Path, progress: bool = False) -> tuple[list[str], np.ndarray]:
    """Ids and float32 vectors [n, D] from a Taobao-style ``{id: "f1 f2 ..."}`` JSON file."""
    try:
        data = json.loads(Path(path).read_text())
    except FileNotFoundError:
        raise DataError(f"embedding file {path} does not exist") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise DataError(f"embedding file {path} is not valid JSON: {exc}") from None
    if not isinstance(data, dict) or not data:
        raise DataError(f"embedding file {path} must be a non-empty JSON object of id -> vector")
    ids = [str(k) for k in data]
    rows: list[np.ndarray] = []
    dim = -1
    for key, value in tqdm(data.items(), total=len(data), desc=f"parse {Path(path).name}",
                           unit="vec", disable=not progress):
        try:
            vec = np.array(value.split() if isinstance(value, str) else value, dtype=np.float32)
        except (ValueError, TypeError, AttributeError):
            raise DataError(f"{path}: vector for id {key!r} is not a list of numbers") from None
        if vec.ndim != 1 or (dim >= 0 and vec.shape[0] != dim):
            raise DataError(f"{path}: vector for id {key!r} has {vec.size} values, the first had {dim}")
        dim = vec.shape[0]
        rows.append(vec)
    return ids, np.stack(rows)


def _read_ids(path: Path) -> list[str]:
    try:
        text = Path(path).read_text()
    except FileNotFoundError:
        raise DataError(f"ids file {path} does not exist") from None
    if text.lstrip().startswith("["):
        try:
            return [str(x) for x in json.loads(text)]
        except json.JSONDecodeError as exc:
            raise DataError(f"ids file {path} is not a valid JSON list: {exc}") from None
    return [line.strip() for line in text.splitlines() if line.strip()]


def read_array(path: Path, ids_path: Path | None = None) -> tuple[list[str], np.ndarray]:
    """Ids and vectors from .npy (+ ids file) or .npz (``ids`` + ``vectors``/``embeddings``)."""
    path = Path(path)
    try:
        loaded = np.load(path, allow_pickle=False)
    except FileNotFoundError:
        raise DataError(f"embedding file {path} does not exist") from None
    except (ValueError, OSError) as exc:
        raise DataError(f"{path} is not a readable .npy/.npz array (no pickles allowed): {exc}") from None
    if hasattr(loaded, "files"):  # an NpzFile
        with loaded:
            names = set(loaded.files)
            key = next((k for k in ("vectors", "embeddings") if k in names), None)
            if key is None and len(names - {"ids"}) == 1:
                key = next(iter(names - {"ids"}))
            if key is None:
                raise DataError(f"{path} needs a 'vectors' or 'embeddings' array; found {sorted(names)}")
            vectors = loaded[key]
            ids = [str(x) for x in loaded["ids"]] if "ids" in names and ids_path is None else None
    else:
        vectors, ids = loaded, None
    if ids is None:
        if ids_path is None:
            raise DataError(f"{path} has no ids: pass an ids file (one id per line or a JSON list)")
        ids = _read_ids(ids_path)
    if vectors.ndim != 2 or vectors.shape[0] != len(ids):
        raise DataError(f"{path}: array shape {vectors.shape} does not match {len(ids)} ids")
    return ids, vectors


def read_embeddings(
    path: Path, ids_path: Path | None = None, progress: bool = False
) -> tuple[list[str], np.ndarray]:
    """Dispatch on the file suffix: .json, .npy, .npz."""
    suffix = Path(path).suffix.lower()
    if suffix == ".json":
        return read_pretrained_json(path, progress=progress)
    if suffix in {".npy", ".npz"}:
        return read_array(path, ids_path)
    raise DataError(f"{path}: unknown embedding file type {suffix!r}; use .json, .npy or .npz")


def bulk_write(
    store: EmbeddingStore, version: str, kind: Kind, ids: Sequence[str], vectors: np.ndarray,
    chunk: int = 20_000, progress: bool = False,
) -> int:
    """Declare the kind's dimension and write in chunks (bounded memory), with a progress bar."""
    if len(ids) != len(vectors):
        raise DataError(f"{len(ids)} {kind} ids but {len(vectors)} vectors")
    store.declare(version, {kind: int(vectors.shape[1])})
    written = 0
    with tqdm(total=len(ids), desc=f"write {kind}", unit="vec", disable=not progress) as bar:
        for start in range(0, len(ids), chunk):
            written += store.write(version, kind, ids[start : start + chunk], vectors[start : start + chunk])
            bar.update(min(chunk, len(ids) - start))
    return written
