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

Cross-request batches (:meth:`Composer.logits_many`): ``feed`` scores up to ``max_group`` requests, each
with its own domain's weights, in ONE onnxruntime run over a *grouped* graph that holds one copy of the
head per request (:func:`grouped_model`): copy k reads ``user_emb__k``, ``item_emb__k`` and its own
overridable tensors ``<name>__k``, shares every other initializer and writes ``logit__k``. Each copy
computes exactly what the one-request graph computes on the same rows (same ops, same shapes), so a
batched score equals the one-by-one score bit for bit; what a batch saves is the per-run overhead and,
upstream, the per-request feature-store round trips. ``session`` runs one session per request.
"""

from __future__ import annotations

import threading
from abc import ABC, abstractmethod
from collections import OrderedDict
from collections.abc import Sequence
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

    def logits_many(self, jobs: Sequence[tuple[str, np.ndarray, np.ndarray]]) -> list[np.ndarray]:
        """Logits of several (domain, users, items) requests; the base runs them one by one."""
        return [self.logits(domain, user, items) for domain, user, items in jobs]

    def warm_groups(self, max_group: int) -> None:  # noqa: B027 - optional hook
        """Prepare whatever batches of up to ``max_group`` requests need (off the event loop)."""


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
        self._overridable = version.delta_names
        # θS values of the overridable tensors: what a grouped copy is fed for a domain whose delta lacks one
        self._defaults = {n: np.ascontiguousarray(version.shared[n], dtype=np.float32) for n in self._overridable}
        self._groups: dict[int, tuple[ort.InferenceSession, list[str]]] = {}
        self._group_lock = threading.Lock()

    def _build(self, domain: str) -> dict[str, np.ndarray]:
        return self.composed(domain)

    def _weights(self, domain: str) -> dict[str, np.ndarray]:
        return self._entry(domain) if domain in self.version.manifest.deltas else self._empty

    def logits(self, domain: str, user: np.ndarray, items: np.ndarray) -> np.ndarray:
        feeds = {USER_INPUT: user, ITEM_INPUT: items}
        feeds.update(self._weights(domain))
        return self.session.run([self.output], feeds)[0]

    def _grouped(self, copies: int) -> tuple[ort.InferenceSession, list[str]]:
        found = self._groups.get(copies)
        if found is not None:
            return found
        with self._group_lock:
            found = self._groups.get(copies)
            if found is None:
                model = grouped_model(onnx.load_model_from_string(self.version.shared_bytes), copies,
                                      set(self._overridable), self.output)
                session = ort.InferenceSession(model.SerializeToString(), session_options(self.threads),
                                               providers=["CPUExecutionProvider"])
                found = self._groups[copies] = (session, [f"{self.output}__{k}" for k in range(copies)])
        return found

    def warm_groups(self, max_group: int) -> None:
        for copies in range(2, max_group + 1):
            self._grouped(copies)

    def logits_many(self, jobs: Sequence[tuple[str, np.ndarray, np.ndarray]]) -> list[np.ndarray]:
        if len(jobs) == 1:
            return [self.logits(*jobs[0])]
        session, outputs = self._grouped(len(jobs))
        feeds: dict[str, np.ndarray] = {}
        for k, (domain, user, items) in enumerate(jobs):
            feeds[f"{USER_INPUT}__{k}"] = user
            feeds[f"{ITEM_INPUT}__{k}"] = items
            weights = self._weights(domain)
            for name, default in self._defaults.items():
                feeds[f"{name}__{k}"] = weights.get(name, default)
        return list(session.run(outputs, feeds))


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


def _renamed(value: onnx.ValueInfoProto, name: str, k: int) -> onnx.ValueInfoProto:
    """A copy of an input/output declaration under ``name`` whose symbolic dims are the copy's own (onnxruntime
    holds every dim named ``n`` to one size per run, and each copy has its own row count)."""
    copy = onnx.ValueInfoProto()
    copy.CopyFrom(value)
    copy.name = name
    for dim in copy.type.tensor_type.shape.dim:
        if dim.HasField("dim_param"):
            dim.dim_param = f"{dim.dim_param}__{k}"
    return copy


def grouped_model(model: onnx.ModelProto, copies: int, own: set[str], output: str) -> onnx.ModelProto:
    """``copies`` independent copies of a single-output graph in one model (see the module docstring).

    Inputs and the initializers in ``own`` become per-copy inputs ``<name>__k`` (always fed); every
    other initializer is shared by the copies. Graphs with subgraphs (If, Loop) are refused.
    """
    graph = model.graph
    if any(a.type in (onnx.AttributeProto.GRAPH, onnx.AttributeProto.GRAPHS) for n in graph.node for a in n.attribute):
        raise ConfigError("a graph with subgraphs cannot be grouped; use serving.max_batch = 1")
    shared_inits = [i for i in graph.initializer if i.name not in own]
    kept = {i.name for i in shared_inits}
    inits = {i.name: i for i in graph.initializer}
    per_copy_inputs = [i for i in graph.input if i.name not in kept]
    nodes, inputs, outputs = [], [], []
    for k in range(copies):
        def ren(name: str, k: int = k) -> str:
            return name if (not name or name in kept) else f"{name}__{k}"

        for node in graph.node:
            copy = onnx.NodeProto()
            copy.CopyFrom(node)
            copy.input[:] = [ren(x) for x in node.input]
            copy.output[:] = [ren(x) for x in node.output]
            copy.name = f"{node.name}__{k}" if node.name else ""
            nodes.append(copy)
        for vi in per_copy_inputs:
            inputs.append(_renamed(vi, ren(vi.name), k))
        for name in sorted(own - {vi.name for vi in per_copy_inputs}):
            init = inits[name]
            inputs.append(helper.make_tensor_value_info(ren(name), init.data_type, list(init.dims)))
        outputs.append(_renamed(next(o for o in graph.output if o.name == output), ren(output), k))
    grouped = helper.make_graph(nodes, f"{graph.name}-x{copies}", inputs, outputs, initializer=shared_inits)
    result = helper.make_model(grouped, opset_imports=list(model.opset_import), producer_name="mamdr-serving")
    result.ir_version = model.ir_version
    return result


COMPOSERS: dict[str, type[Composer]] = {c.name: c for c in (FeedComposer, SessionComposer)}


def build_composer(strategy: str, version: LoadedVersion, cache_size: int, threads: int) -> Composer:
    if strategy not in COMPOSERS:
        raise ConfigError(f"unknown composition strategy {strategy!r}; use one of {', '.join(COMPOSERS)}")
    return COMPOSERS[strategy](version, cache_size, threads)
