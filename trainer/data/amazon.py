"""Amazon Review Data (2018) 5-core category files: one ``<Category>_5.json.gz`` per domain.

Every review is an observed interaction (a click). The files are research-only and never ship with the
project: the folder comes from ``data_dir`` or ``$MAMDR_SHARED_DATA/amazon18_5core_small``.
"""

from __future__ import annotations

import gzip
import json
import os
import zlib
from pathlib import Path

import numpy as np

from contracts.errors import ConfigError, DataError
from contracts.events import slugify
from trainer.data.interactions import Interactions, encode

SUFFIX = "_5.json.gz"
SUBDIR = "amazon18_5core_small"
FIELDS = ("reviewerID", "asin", "overall", "unixReviewTime")


def default_dir() -> Path:
    """``$MAMDR_SHARED_DATA/amazon18_5core_small`` (or ``$MAMDR_DATA_DIR/...``)."""
    for var in ("MAMDR_SHARED_DATA", "MAMDR_DATA_DIR"):
        root = os.environ.get(var)
        if root:
            return Path(root) / SUBDIR
    raise ConfigError("no Amazon data folder: pass data_dir=... or set MAMDR_SHARED_DATA to the data root")


def category_files(directory: Path) -> list[Path]:
    if not directory.is_dir():
        raise DataError(f"{directory}: folder not found; point data_dir at Amazon *{SUFFIX} files")
    files = sorted(directory.glob(f"*{SUFFIX}"))
    if not files:
        raise DataError(f"{directory}: no *{SUFFIX} files; download Amazon 2018 5-core category files there")
    return files


def _read_file(path: Path) -> tuple[list[str], list[str], list[float], list[float]]:
    users: list[str] = []
    items: list[str] = []
    ratings: list[float] = []
    stamps: list[float] = []
    try:
        with gzip.open(path, "rt", encoding="utf-8") as handle:
            for line_no, line in enumerate(handle, start=1):
                if not line.strip():
                    continue
                try:
                    rec = json.loads(line)
                    u, i, r, t = (rec[f] for f in FIELDS)
                    if not isinstance(u, str) or not isinstance(i, str) or not u or not i:
                        raise ValueError
                    r, t = float(r), float(t)
                except (ValueError, KeyError, TypeError):
                    raise DataError(
                        f"{path}:{line_no}: malformed review; each line must be a JSON object with "
                        f"{', '.join(FIELDS)}"
                    ) from None
                users.append(u)
                items.append(i)
                ratings.append(r)
                stamps.append(t)
    except (OSError, EOFError, zlib.error) as exc:
        raise DataError(f"{path}: cannot read gzip ({exc}); re-download the file") from None
    return users, items, ratings, stamps


def read_amazon(directory: Path | None = None) -> Interactions:
    """Parse every category file in the folder; the category (file name) is the domain."""
    directory = default_dir() if directory is None else Path(directory)
    names: list[str] = []
    users: list[str] = []
    items: list[str] = []
    ratings: list[float] = []
    stamps: list[float] = []
    domain: list[np.ndarray] = []
    for k, path in enumerate(category_files(directory)):
        names.append(path.name[: -len(SUFFIX)])
        u, i, r, t = _read_file(path)
        if not u:
            raise DataError(f"{path}: no reviews; remove the empty file")
        users += u
        items += i
        ratings += r
        stamps += t
        domain.append(np.full(len(u), k, dtype=np.int64))
    user_ids, user = encode(users)
    item_ids, item = encode(items)
    return Interactions(
        name="amazon",
        domains=[slugify(n) for n in names],
        domain_names=names,
        user_ids=user_ids,
        item_ids=item_ids,
        user=user,
        item=item,
        domain=np.concatenate(domain),
        ts=np.asarray(stamps, dtype=np.float64),
        rating=np.asarray(ratings, dtype=np.float32),
    )
