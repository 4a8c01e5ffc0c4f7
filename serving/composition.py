"""Θi = θS + θi on onnxruntime: two interchangeable strategies, measured in bench/bench_serving.py.

- ``feed``: ONE session over the shared graph extended so that every tensor some delta overrides, ``W``, is
  read as ``W + Cast(W__delta)``: ``W`` stays θS (an initializer) and ``W__delta`` is a graph input. A
  domain's θi is fed with each run **in the dtype it was published in** (float16 by default: the trainer's
  ``trainer.delta_dtype``), so the LRU holds the deltas as stored, half the bytes of float32, and the graph
  casts and adds them (in float32, the same sum the composer used to do in numpy, so scores are unchanged
  for a given delta). Per domain held: its delta arrays only (tensors its delta lacks are fed one shared
  zero array). Domains without a delta run the plain shared graph (``base``).
- ``session``: one InferenceSession per domain, built from the shared graph with its initializers
  overridden by the composed float32 arrays (``SessionOptions.add_initializer``). Per domain held: a whole
  session (graph, kernels, prepacked weights) plus the composed arrays.

Both keep at most ``cache_size`` domains in an LRU; a miss reads the delta file (checksum verified) and
caches it (``session``: composes and builds). The figures and the choice are in docs/serving.md.

Cross-request batches (:meth:`Composer.logits_many`): ``feed`` scores up to ``max_group`` requests, each
with its own domain's weights, in ONE onnxruntime run over a *grouped* graph that holds one copy of the
head per request (:func:`grouped_model`): copy k reads ``user_emb__k``, ``item_emb__k`` and its own
delta inputs ``<name>__delta__k``, shares every θS initializer and writes ``logit__k``. Each copy
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
from serving.factoring import factor_first_layer

USER_INPUT, ITEM_INPUT = "user_emb", "item_emb"
DELTA_SUFFIX = "__delta"
_ONNX_DTYPE = {"float16": onnx.TensorProto.FLOAT16, "float32": onnx.TensorProto.FLOAT}


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
        """θS + θi in float32 for the tensors the domain's delta holds (read and verified from disk)."""
        delta = self.version.read_delta(domain)
        shared = self.version.shared
        return {n: np.ascontiguousarray(shared[n] + d.astype(np.float32), dtype=np.float32)
                for n, d in delta.items()}

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
        """Logits [N] for user vectors [N, Du], or [1, Du] for one user on every row, and item vectors [N, Di]
        (float32, C-contiguous)."""

    def logits_many(self, jobs: Sequence[tuple[str, np.ndarray, np.ndarray]]) -> list[np.ndarray]:
        """Logits of several (domain, users, items) requests; the base runs them one by one."""
        return [self.logits(domain, user, items) for domain, user, items in jobs]

    def warm_groups(self, max_group: int) -> None:  # noqa: B027 - optional hook
        """Prepare whatever batches of up to ``max_group`` requests need (off the event loop)."""


class FeedComposer(Composer):
    name = "feed"

    def __init__(self, version: LoadedVersion, cache_size: int = 256, threads: int = 1) -> None:
        super().__init__(version, cache_size, threads)
        self._overridable = version.delta_names
        self.delta_dtype = version.delta_dtype
        shared = onnx.load_model_from_string(version.shared_bytes)
        # graphs by "one user per run": the general graph (user_emb [N, Du]) and, where the first layer factors
        # (serving/factoring.py), the one a request's single user takes (user_emb [1, Du], ~half the FLOPs)
        factored = factor_first_layer(shared, self._overridable)
        bases = {False: version.shared_bytes} | ({True: factored.SerializeToString()} if factored else {})
        self._model_bytes = {one: with_delta_inputs(onnx.load_model_from_string(b), self._overridable,
                                                    self.delta_dtype).SerializeToString() for one, b in bases.items()}
        # sessions are built on first use: scoring only ever takes the one-user graph when there is one
        self._sessions: dict[bool | None, ort.InferenceSession] = {}
        self.factored = factored is not None
        # what a tensor missing from a domain's delta is fed: one zero array per tensor, shared by every domain
        self._zeros = {n: np.zeros(version.shared[n].shape, dtype=self.delta_dtype) for n in self._overridable}
        self._groups: dict[tuple[int, bool], tuple[ort.InferenceSession, list[str]]] = {}
        self._group_lock = threading.Lock()
        self._session(self.factored)  # the graph scoring runs, ready before the first request

    def _session(self, one: bool | None) -> ort.InferenceSession:
        """The graph with delta inputs (one user per run or not), or with ``None`` the plain shared graph."""
        found = self._sessions.get(one)
        if found is None:
            with self._group_lock:
                found = self._sessions.get(one)
                if found is None:
                    graph = self.version.shared_bytes if one is None else self._model_bytes[one]
                    found = self._sessions[one] = ort.InferenceSession(
                        graph, session_options(self.threads), providers=["CPUExecutionProvider"])
        return found

    @property
    def base(self) -> ort.InferenceSession:
        """Domains without a delta on the general graph. On the one-user graph they are fed zero deltas instead,
        as in a batch (alone, onnxruntime constant-folds their domain row: scores 1e-8 off the batched ones)."""
        return self._session(None)

    def _users(self, user: np.ndarray, n: int) -> tuple[bool, np.ndarray]:
        """Whether the one-user graph takes this run, and the user rows to feed it or the general graph."""
        if user.shape[0] == 1 and self.factored:
            return True, user
        return False, _rows(user, n)

    def _build(self, domain: str) -> dict[str, np.ndarray]:
        """The delta feeds of a domain, held as published (float16 stays float16)."""
        delta = self.version.read_delta(domain)
        feeds = {}
        for name, zero in self._zeros.items():
            array = delta.get(name)
            feeds[name + DELTA_SUFFIX] = zero if array is None else np.ascontiguousarray(array, dtype=zero.dtype)
        return feeds

    def logits(self, domain: str, user: np.ndarray, items: np.ndarray) -> np.ndarray:
        one, user = self._users(user, len(items))
        feeds = {USER_INPUT: user, ITEM_INPUT: items}
        if domain in self.version.manifest.deltas:
            feeds.update(self._entry(domain))
        elif not one:
            return self.base.run([self.output], feeds)[0]
        else:
            feeds.update({name + DELTA_SUFFIX: zero for name, zero in self._zeros.items()})
        return self._session(one).run([self.output], feeds)[0]

    def _grouped(self, copies: int, one: bool) -> tuple[ort.InferenceSession, list[str]]:
        found = self._groups.get((copies, one))
        if found is not None:
            return found
        with self._group_lock:
            found = self._groups.get((copies, one))
            if found is None:
                model = grouped_model(onnx.load_model_from_string(self._model_bytes[one]), copies, set(), self.output)
                session = ort.InferenceSession(model.SerializeToString(), session_options(self.threads),
                                               providers=["CPUExecutionProvider"])
                found = self._groups[(copies, one)] = (session, [f"{self.output}__{k}" for k in range(copies)])
        return found

    def warm_groups(self, max_group: int) -> None:
        for copies in range(2, max_group + 1):  # the graphs scoring's batches take (one user per request)
            self._grouped(copies, self.factored)

    def logits_many(self, jobs: Sequence[tuple[str, np.ndarray, np.ndarray]]) -> list[np.ndarray]:
        if len(jobs) == 1:
            return [self.logits(*jobs[0])]
        one = self.factored and all(user.shape[0] == 1 for _, user, _ in jobs)
        session, outputs = self._grouped(len(jobs), one)
        feeds: dict[str, np.ndarray] = {}
        deltas = self.version.manifest.deltas
        for k, (domain, user, items) in enumerate(jobs):
            feeds[f"{USER_INPUT}__{k}"] = user if one else _rows(user, len(items))
            feeds[f"{ITEM_INPUT}__{k}"] = items
            if domain in deltas:
                for name, array in self._entry(domain).items():
                    feeds[f"{name}__{k}"] = array
            else:
                for name, zero in self._zeros.items():
                    feeds[f"{name}{DELTA_SUFFIX}__{k}"] = zero
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
        user = _rows(user, len(items))
        session = self._entry(domain)[0] if domain in self.version.manifest.deltas else self.base
        return session.run([self.output], {USER_INPUT: user, ITEM_INPUT: items})[0]


def _rows(user: np.ndarray, n: int) -> np.ndarray:
    """User vectors for the general graph: one row per item (a single user repeated)."""
    if user.shape[0] == 1 and n != 1:
        return np.ascontiguousarray(np.broadcast_to(user, (n, user.shape[1])))
    return user


def with_delta_inputs(model: onnx.ModelProto, names: Sequence[str], dtype: str) -> onnx.ModelProto:
    """``model`` reading every initializer ``W`` in ``names`` as ``W + Cast(W__delta, float32)``, with
    ``W__delta`` a graph input of ``dtype`` (float16 or float32) and ``W`` left as the θS initializer."""
    graph = model.graph
    inits = {i.name: i for i in graph.initializer}
    composed = {}
    front = []
    for name in names:
        init = inits[name]
        delta = name + DELTA_SUFFIX
        graph.input.append(helper.make_tensor_value_info(delta, _ONNX_DTYPE[dtype], list(init.dims)))
        added = composed[name] = f"{name}__composed"
        if dtype == "float32":
            front.append(helper.make_node("Add", [name, delta], [added], name=f"{name}__add"))
        else:
            cast = f"{name}__delta_f32"
            front.append(helper.make_node("Cast", [delta], [cast], to=onnx.TensorProto.FLOAT, name=f"{name}__cast"))
            front.append(helper.make_node("Add", [name, cast], [added], name=f"{name}__add"))
    for node in graph.node:
        node.input[:] = [composed.get(x, x) for x in node.input]
    nodes = front + list(graph.node)
    del graph.node[:]
    graph.node.extend(nodes)
    return model


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
