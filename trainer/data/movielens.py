"""MovieLens ml-latest-small with genre domains.

Each movie goes to its *rarest* genre (fewest ratings over the whole data; ties by name), so items
are disjoint across domains while users are shared, like the paper's Taobao themes. Genres are listed
alphabetically in movies.csv, so "first genre" would be biased towards Action/Adventure.
"(no genres listed)" (47 ratings, 34 movies) is dropped by default: its val/test splits would hold a
handful of rows and give a meaningless AUC; ``keep_no_genre=True`` keeps it as domain "no-genres-listed".
"""

from __future__ import annotations

import csv
from importlib import resources
from pathlib import Path

import numpy as np

from contracts.errors import DataError
from contracts.events import slugify
from trainer.data.interactions import Interactions

NO_GENRE = "(no genres listed)"
RATINGS_HEADER = ["userId", "movieId", "rating", "timestamp"]
MOVIES_HEADER = ["movieId", "title", "genres"]


def shipped_dir() -> Path:
    """The copy of ml-latest-small that ships inside the package (ratings, movies, README)."""
    return Path(str(resources.files("trainer.datasets") / "ml_latest_small"))


def _open(path: Path, expected: list[str]) -> tuple[csv.reader, object]:
    if not path.is_file():
        raise DataError(f"{path}: file not found; ml-latest-small needs ratings.csv and movies.csv there")
    handle = path.open(newline="", encoding="utf-8")
    reader = csv.reader(handle)
    header = next(reader, None)
    if header != expected:
        handle.close()
        raise DataError(f"{path}:1: header {header} is not {expected}; use the GroupLens file unchanged")
    return reader, handle


def _read_movies(path: Path) -> dict[int, list[str]]:
    reader, handle = _open(path, MOVIES_HEADER)
    genres: dict[int, list[str]] = {}
    with handle:  # type: ignore[attr-defined]
        for line, row in enumerate(reader, start=2):
            try:
                if len(row) != 3:
                    raise ValueError
                genres[int(row[0])] = [g for g in row[2].split("|") if g]
            except ValueError:
                raise DataError(f"{path}:{line}: malformed row {row!r}; expected movieId,title,genres"
                                ) from None
    return genres


def _read_ratings(path: Path) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    reader, handle = _open(path, RATINGS_HEADER)
    users: list[int] = []
    movies: list[int] = []
    ratings: list[float] = []
    stamps: list[float] = []
    with handle:  # type: ignore[attr-defined]
        for line, row in enumerate(reader, start=2):
            try:
                if len(row) != 4:
                    raise ValueError
                u, m, r, t = int(row[0]), int(row[1]), float(row[2]), float(row[3])
                if not (0.0 <= r <= 5.0) or t < 0:
                    raise ValueError
            except ValueError:
                raise DataError(
                    f"{path}:{line}: malformed row {row!r}; expected userId,movieId,rating(0-5),timestamp"
                ) from None
            users.append(u)
            movies.append(m)
            ratings.append(r)
            stamps.append(t)
    if not users:
        raise DataError(f"{path}: no ratings; use the GroupLens ratings.csv")
    return (np.asarray(users, dtype=np.int64), np.asarray(movies, dtype=np.int64),
            np.asarray(ratings, dtype=np.float32), np.asarray(stamps, dtype=np.float64))


def read_movielens(directory: Path | None = None, *, keep_no_genre: bool = False) -> Interactions:
    """Parse ratings.csv and movies.csv into genre-domain interactions."""
    directory = shipped_dir() if directory is None else Path(directory)
    genres = _read_movies(directory / "movies.csv")
    user_raw, movie_raw, rating, ts = _read_ratings(directory / "ratings.csv")

    movies, item = np.unique(movie_raw, return_inverse=True)
    unknown = [int(m) for m in movies if int(m) not in genres]
    if unknown:
        raise DataError(f"{directory / 'ratings.csv'}: movieId {unknown[0]} is not in movies.csv; "
                        "use matching files")
    movie_genres = [genres[int(m)] or [NO_GENRE] for m in movies]

    # Ratings per genre over the whole data (a rating counts for every genre of its movie).
    per_movie = np.bincount(item, minlength=movies.shape[0])
    counts: dict[str, int] = {}
    for n, gs in zip(per_movie.tolist(), movie_genres, strict=True):
        for g in gs:
            counts[g] = counts.get(g, 0) + n
    rarest = [min(gs, key=lambda g: (counts[g], g)) for gs in movie_genres]

    sizes: dict[str, int] = {}
    for n, g in zip(per_movie.tolist(), rarest, strict=True):
        sizes[g] = sizes.get(g, 0) + n
    names = sorted(sizes, key=lambda g: (-sizes[g], g))  # largest domain first
    if not keep_no_genre and NO_GENRE in names:
        names.remove(NO_GENRE)
    index = {g: k for k, g in enumerate(names)}
    item_domain = np.array([index.get(g, -1) for g in rarest], dtype=np.int64)
    domain = item_domain[item]
    keep = domain >= 0

    users, user = np.unique(user_raw[keep], return_inverse=True)
    kept_items, item_kept = np.unique(item[keep], return_inverse=True)
    return Interactions(
        name="ml-latest-small",
        domains=[slugify(g) for g in names],
        domain_names=names,
        user_ids=[str(u) for u in users.tolist()],
        item_ids=[str(m) for m in movies[kept_items].tolist()],
        user=user.astype(np.int64),
        item=item_kept.astype(np.int64),
        domain=domain[keep],
        ts=ts[keep],
        rating=rating[keep],
    )
