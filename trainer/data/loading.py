"""Dispatch a dataset name or path to its reader; the raw sources share the one CTR benchmark builder."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from contracts.errors import ConfigError, DataError
from trainer.data.amazon import SUBDIR as AMAZON_SUBDIR
from trainer.data.amazon import SUFFIX, read_amazon
from trainer.data.base import MultiDomainDataset
from trainer.data.ctr_benchmark import BenchmarkTable, build_ctr_benchmark
from trainer.data.interactions import Interactions
from trainer.data.movielens import read_movielens
from trainer.data.preprocessed import is_preprocessed, load_preprocessed
from trainer.data.synthetic import make_synthetic

MOVIELENS_NAMES = {"ml-latest-small", "ml_latest_small", "movielens"}
AMAZON_NAMES = {"amazon", "amazon18", "amazon18-5core", "amazon18_5core_small"}
BUILD_OPTIONS = {"negatives", "ctr_range", "split", "click_threshold"}
SELECT_OPTIONS = {"domains", "max_domains"}
KNOWN = ["ml-latest-small", "amazon", "synthetic"]  # canonical names (aliases also work)


def _source_of(name_or_path: str | Path, data_dir: str | Path | None) -> tuple[str, Path | None]:
    """("movielens" | "amazon" | "preprocessed" | "synthetic", folder or None)."""
    name = str(name_or_path).strip()
    key = name.lower()
    if key in MOVIELENS_NAMES:
        # data_dir may be the folder itself or the shared data root; otherwise the shipped copy is used
        for folder in ([Path(data_dir), Path(data_dir) / "ml_latest_small"] if data_dir is not None else []):
            if (folder / "ratings.csv").is_file():
                return "movielens", folder
        return "movielens", None
    if key in AMAZON_NAMES:
        if data_dir is None:
            return "amazon", None
        root = Path(data_dir)
        nested = root / AMAZON_SUBDIR
        return "amazon", nested if not any(root.glob(f"*{SUFFIX}")) and nested.is_dir() else root
    if key == "synthetic":
        return "synthetic", None
    path = Path(name).expanduser()
    if path.is_dir():
        if is_preprocessed(path):
            return "preprocessed", path
        if any(path.glob(f"*{SUFFIX}")):
            return "amazon", path
        if (path / "ratings.csv").is_file() or (path / "movies.csv").is_file():
            return "movielens", path
        raise DataError(f"{path}: not a dataset folder; expected domain_<k>/ folders, *{SUFFIX} files "
                        "or MovieLens ratings.csv + movies.csv")
    if path.exists():
        raise DataError(f"{path}: is a file; pass the folder that holds the data set")
    if any(sep in name for sep in ("/", "\\")) or name.startswith((".", "~")):
        raise DataError(f"{path}: folder not found; check the path")
    raise ConfigError(f"unknown dataset {name!r}; use one of {KNOWN} or a path to a data folder")


def _check_options(options: dict[str, Any], allowed: set[str], what: str) -> None:
    unknown = sorted(set(options) - allowed)
    if unknown:
        raise ConfigError(f"unknown option(s) {unknown} for {what}; allowed: {sorted(allowed)}")


def read_interactions(name_or_path: str | Path, *, data_dir: str | Path | None = None,
                      **options: Any) -> Interactions:
    """The raw interactions of a MovieLens or Amazon source, after domain selection."""
    source, folder = _source_of(name_or_path, data_dir)
    if source == "movielens":
        _check_options(options, SELECT_OPTIONS | {"keep_no_genre"}, "MovieLens")
        inter = read_movielens(folder, keep_no_genre=bool(options.pop("keep_no_genre", False)))
    elif source == "amazon":
        _check_options(options, SELECT_OPTIONS, "Amazon")
        inter = read_amazon(folder)
    else:
        raise ConfigError(f"{name_or_path}: {source} data has no raw interactions (no timestamps to replay); "
                          "use ml-latest-small or amazon")
    wanted = options.get("domains")
    if isinstance(wanted, str):
        wanted = [w.strip() for w in wanted.split(",") if w.strip()]
    if wanted:
        inter = inter.select_domains(list(wanted))
    top = options.get("max_domains")
    if top is not None:
        if int(top) < 1:
            raise ConfigError(f"max_domains must be >= 1, got {top}")
        sizes = [(int((inter.domain == d).sum()), d) for d in range(len(inter.domains))]
        keep = sorted(sorted(sizes, key=lambda s: (-s[0], s[1]))[: int(top)], key=lambda s: s[1])
        inter = inter.select_domains([inter.domains[d] for _, d in keep])
    return inter


def build_benchmark_table(name_or_path: str | Path, *, seed: int = 0, data_dir: str | Path | None = None,
                          **options: Any) -> BenchmarkTable:
    """Every row of a raw source's CTR benchmark with its time and split (used by load and replay)."""
    build = {k: options.pop(k) for k in list(options) if k in BUILD_OPTIONS}
    inter = read_interactions(name_or_path, data_dir=data_dir, **options)
    return build_ctr_benchmark(inter, seed=seed, **build)


def load_dataset(name_or_path: str | Path, *, seed: int = 0, data_dir: str | Path | None = None,
                 **options: Any) -> MultiDomainDataset:
    """Load a benchmark by name or path (see the module docstring). Errors are one-line Data/ConfigErrors."""
    source, folder = _source_of(name_or_path, data_dir)
    if source == "preprocessed":
        _check_options(options, set(), "a preprocessed folder (it is read as written)")
        return load_preprocessed(folder or Path(str(name_or_path)))
    if source == "synthetic":
        try:
            return make_synthetic(seed=seed, **options)
        except TypeError as exc:
            raise ConfigError(f"bad option for synthetic data: {exc}") from None
    return build_benchmark_table(name_or_path, seed=seed, data_dir=data_dir, **options).to_dataset()
