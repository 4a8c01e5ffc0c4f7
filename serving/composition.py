"""Θi = θS + θi on onnxruntime: two interchangeable strategies, measured in bench/bench_serving.py.

- ``feed``: ONE session over the shared graph in which every tensor some delta overrides is also a
  graph input whose initializer is its default. A domain's composed arrays (θS + θi, only the
  tensors its delta holds) are fed with each run. Per domain held: the composed arrays only.
- ``session``: one InferenceSession per domain, built from the shared graph with its initializers
  overridden by the composed arrays (``SessionOptions.add_initializer``). Per domain held: a whole
  session (graph, kernels, prepacked weights) plus the arrays.

Both keep at most ``cache_size`` domains in an LRU; a miss reads the delta file (checksum verified),
composes and caches it. Domains without a delta are served by θS (no cache entry needed). The
figures and the choice are in the README ("Serving").
"""

from __future__ import annotations

import threading
from abc import ABC, abstractmethod
from collections import OrderedDict
from typing import Any, ClassVar

import numpy as np
import onnx
import onnxruntime as ort
from onnx import helper

from contracts.artifacts import LoadedVersion
from contracts.errors import ConfigError

USER_INPUT, ITEM_INPUT = "user_emb", "item_emb"


def session_options(threads: int) -> ort.SessionOptions:
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads
    opts.inter_op_num_threads = 1
    opts.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    opts.log_severity_level = 3
    return opts


class Composer(ABC):
    """Scores a domain's batch with Θ_domain. Thread-safe; the LRU is guarded by one lock."""

    name: ClassVar[str]

    def __init__(self, version: LoadedVersion, cache_size: int = 256, threads: int = 1) -> None:
        if cache_size < 1:
            raise ConfigError("serving.session_cache_size must be at least 1")
        self.version = version
        self.cache_size = cache_size
        self.threads = threads
        self.output = version.manifest.contract.output
        self._lru: OrderedDict[str, Any] = OrderedDict()
        self._lock = threading.Lock()
        self.misses = 0

    def composed(self, domain: str) -> dict[str, np.ndarray]:
        """θS + θi for the tensors the domain's delta holds (read and verified from disk)."""
        delta = self.version.read_delta(domain)
        shared = self.version.shared
        return {n: np.ascontiguousarray(shared[n] + d, dtype=np.float32) for n, d in delta.items()}

    def _entry(self, domain: str) -> Any:
        with self._lock:
            entry = self._lru.get(domain)
            if entry is not None:
                self._lru.move_to_end(domain)
                return entry
        entry = self._build(domain)  # outside the lock: a slow build never blocks hits
        with self._lock:
            self.misses += 1
            self._lru[domain] = entry
            self._lru.move_to_end(domain)
            while len(self._lru) > self.cache_size:
                self._lru.popitem(last=False)
        return entry

    def held(self) -> int:
        return len(self._lru)

    def warm(self, domain: str) -> None:
        if domain in self.version.manifest.deltas:
            self._entry(domain)

    @abstractmethod
    def _build(self, domain: str) -> Any: ...

    @abstractmethod
    def logits(self, domain: str, user: np.ndarray, items: np.ndarray) -> np.ndarray:
        """Logits [N] for user vectors [N, Du] and item vectors [N, Di] (float32, C-contiguous)."""


class FeedComposer(Composer):
    name = "feed"

    def __init__(self, version: LoadedVersion, cache_size: int = 256, threads: int = 1) -> None:
        super().__init__(version, cache_size, threads)
        model = onnx.load_model_from_string(version.shared_bytes)
        inits = {i.name: i for i in model.graph.initializer}
        present = {i.name for i in model.graph.input}
        for name in version.delta_names:
            if name not in present:  # an input with an initializer of the same name = overridable default
                init = inits[name]
                model.graph.input.append(helper.make_tensor_value_info(name, init.data_type, list(init.dims)))
        self.session = ort.InferenceSession(
            model.SerializeToString(), session_options(threads), providers=["CPUExecutionProvider"]
        )
        self._empty: dict[str, np.ndarray] = {}

    def _build(self, domain: str) -> dict[str, np.ndarray]:
        return self.composed(domain)

    def logits(self, domain: str, user: np.ndarray, items: np.ndarray) -> np.ndarray:
        weights = self._entry(domain) if domain in self.version.manifest.deltas else self._empty
        feeds = {USER_INPUT: user, ITEM_INPUT: items}
        feeds.update(weights)
        return self.session.run([self.output], feeds)[0]


class SessionComposer(Composer):
    name = "session"

    def __init__(self, version: LoadedVersion, cache_size: int = 256, threads: int = 1) -> None:
        super().__init__(version, cache_size, threads)
        self.base = ort.InferenceSession(
            version.shared_bytes, session_options(threads), providers=["CPUExecutionProvider"]
        )

    def _build(self, domain: str) -> tuple[ort.InferenceSession, list[ort.OrtValue]]:
        opts = session_options(self.threads)
        keep = []
        for name, array in self.composed(domain).items():
            value = ort.OrtValue.ortvalue_from_numpy(array)
            opts.add_initializer(name, value)
            keep.append(value)  # the session reads these buffers: they must outlive it
        # onnxruntime (1.32) constant-folds with the model's own initializer values, ignoring
        # add_initializer overrides (a Gather on a per-domain table came out as θS): no folding here.
        session = ort.InferenceSession(self.version.shared_bytes, opts, providers=["CPUExecutionProvider"],
                                       disabled_optimizers=["ConstantFolding"])
        return session, keep

    def logits(self, domain: str, user: np.ndarray, items: np.ndarray) -> np.ndarray:
        session = self._entry(domain)[0] if domain in self.version.manifest.deltas else self.base
        return session.run([self.output], {USER_INPUT: user, ITEM_INPUT: items})[0]


COMPOSERS: dict[str, type[Composer]] = {c.name: c for c in (FeedComposer, SessionComposer)}


def build_composer(strategy: str, version: LoadedVersion, cache_size: int, threads: int) -> Composer:
    if strategy not in COMPOSERS:
        raise ConfigError(f"unknown composition strategy {strategy!r}; use one of {', '.join(COMPOSERS)}")
    return COMPOSERS[strategy](version, cache_size, threads)
