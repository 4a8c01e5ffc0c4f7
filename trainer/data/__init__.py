"""Benchmark data sets: MovieLens, Amazon 5-core, the paper's preprocessed folders, synthetic.

``load_dataset(name_or_path)`` is the one entry point:

- ``"ml-latest-small"``: the copy shipped in ``trainer/datasets/ml_latest_small`` (genre domains);
- ``"amazon"``: Amazon 2018 5-core ``*_5.json.gz`` files in ``data_dir``
  (default ``$MAMDR_SHARED_DATA/amazon18_5core_small``);
- ``"synthetic"``: ``make_synthetic(**options)``;
- a path: a preprocessed Taobao/Amazon folder (``domain_<k>/...``), a folder of ``*_5.json.gz`` files, or a
  MovieLens folder (``ratings.csv`` + ``movies.csv``).

Raw sources go through the one CTR benchmark builder (``ctr_benchmark``); options: ``negatives``
("sampled" | "rating"), ``ctr_range``, ``split``, ``click_threshold``, ``domains`` (subset of domain ids),
``max_domains`` (the N largest), and for MovieLens ``keep_no_genre``.
"""

from __future__ import annotations

from trainer.data.base import MultiDomainDataset, Split
from trainer.data.ctr_benchmark import BenchmarkTable, build_ctr_benchmark
from trainer.data.events import BenchmarkEvents, benchmark_events
from trainer.data.interactions import Interactions
from trainer.data.loading import build_benchmark_table, load_dataset, read_interactions
from trainer.data.synthetic import make_synthetic

__all__ = [
    "BenchmarkEvents",
    "BenchmarkTable",
    "Interactions",
    "MultiDomainDataset",
    "Split",
    "benchmark_events",
    "build_benchmark_table",
    "build_ctr_benchmark",
    "load_dataset",
    "make_synthetic",
    "read_interactions",
]
