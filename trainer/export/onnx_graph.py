"""ONNX files of one version: the shared graph (θS view) and the per-domain delta files.

The graph is exported with the torch 2.x exporter (``torch.export`` based, ``dynamo=True``; the
TorchScript path still exists in torch 2.15 but is deprecated). ``optimize=False`` keeps every weight
as an initializer named after its parameter: the optimizer may fold a weight into a new constant
with a generated name, which would break delta names. The wrapper's ``m.`` prefix is stripped, so the
initializer names ARE the model's parameter names; :func:`export_shared_graph` checks that.
"""

from __future__ import annotations

import json
import logging
import warnings

import numpy as np
import onnx
import torch
from onnx import numpy_helper

from contracts.errors import IntegrityError
from trainer.export.view import Arrays, ServingView

OPSET = 18
INPUTS = ("user_emb", "item_emb")
OUTPUT = "logit"
_PREFIX = "m."

log = logging.getLogger(__name__)


def _rename(model: onnx.ModelProto, mapping: dict[str, str]) -> None:
    graph = model.graph
    for init in graph.initializer:
        init.name = mapping.get(init.name, init.name)
    for node in graph.node:
        node.input[:] = [mapping.get(x, x) for x in node.input]
        node.output[:] = [mapping.get(x, x) for x in node.output]
    for coll in (graph.input, graph.output, graph.value_info):
        for vi in coll:
            vi.name = mapping.get(vi.name, vi.name)


# Graphs already exported, by structure: a later version of the same model only needs new initializer
# values (the exporter costs seconds per call, a streaming trainer exports every round). A reused graph
# is checked against torch like a fresh one, and a mismatch falls back to a fresh export.
_GRAPHS: dict[tuple[object, ...], onnx.ModelProto] = {}
_MAX_GRAPHS = 8


def _structure_key(view: ServingView, arrays: Arrays, user_dim: int, item_dim: int) -> tuple[object, ...]:
    config = {k: v for k, v in view.m.config.to_json().items() if k not in ("n_users", "n_items", "n_domains")}
    shapes = tuple(sorted((n, tuple(a.shape), a.dtype.str) for n, a in arrays.items()))
    return (type(view.m).__module__, type(view.m).__qualname__, json.dumps(config, sort_keys=True, default=str),
            shapes, user_dim, item_dim)


def _with_values(graph: onnx.ModelProto, arrays: Arrays) -> onnx.ModelProto:
    model = onnx.ModelProto()
    model.CopyFrom(graph)
    for init in model.graph.initializer:
        if init.name in arrays:
            init.CopyFrom(numpy_helper.from_array(np.ascontiguousarray(arrays[init.name]), init.name))
    return model


def export_shared_graph(view: ServingView, arrays: Arrays, user_dim: int, item_dim: int) -> onnx.ModelProto:
    """The ModelProto of ``view`` (holding ``arrays``) with stable initializer names."""
    view.eval()
    key = _structure_key(view, arrays, user_dim, item_dim)
    cached = _GRAPHS.get(key)
    if cached is not None:
        model = _with_values(cached, arrays)
        try:
            check_graph_runs(model, view, user_dim, item_dim)
            return model
        except IntegrityError:
            log.warning("a cached graph no longer matches %s; exporting afresh", type(view.m).__name__)
            _GRAPHS.pop(key, None)
    model = _export(view, arrays, user_dim, item_dim)
    if len(_GRAPHS) >= _MAX_GRAPHS:
        _GRAPHS.pop(next(iter(_GRAPHS)))
    _GRAPHS[key] = model
    return model


def _export(view: ServingView, arrays: Arrays, user_dim: int, item_dim: int) -> onnx.ModelProto:
    n = torch.export.Dim("n", min=1, max=1_000_000)
    sample = (torch.randn(3, user_dim), torch.randn(3, item_dim))
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")
        program = torch.onnx.export(
            view, sample, None, input_names=list(INPUTS), output_names=[OUTPUT], opset_version=OPSET,
            dynamic_shapes=({0: n}, {0: n}), dynamo=True, optimize=False, verbose=False,
            external_data=False,
        )
    model = program.model_proto
    mapping = {i.name: i.name[len(_PREFIX):] for i in model.graph.initializer if i.name.startswith(_PREFIX)}
    _rename(model, mapping)
    model.producer_name = "mamdr-trainer"
    # Every tensor the graph reads must be an initializer under its parameter name with its shape.
    inits = {i.name: i for i in model.graph.initializer}
    for name, value in arrays.items():
        init = inits.get(name)
        if init is None:
            continue  # the head does not read it (e.g. an unused buffer)
        if list(init.dims) != list(value.shape):
            raise IntegrityError(f"exported {name!r} has shape {list(init.dims)}, expected {value.shape}")
    check_graph_runs(model, view, user_dim, item_dim)
    return model


def check_graph_runs(model: onnx.ModelProto, view: ServingView, user_dim: int, item_dim: int) -> None:
    """The exported graph must reproduce the torch view (guards against exporter regressions)."""
    import onnxruntime as ort

    rng = np.random.default_rng(0)
    u = rng.standard_normal((7, user_dim), dtype=np.float32)
    i = rng.standard_normal((7, item_dim), dtype=np.float32)
    sess = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    got = sess.run([OUTPUT], {INPUTS[0]: u, INPUTS[1]: i})[0]
    with torch.no_grad():
        want = view(torch.from_numpy(u), torch.from_numpy(i)).numpy()
    if got.shape != want.shape or not np.allclose(got, want, atol=1e-5, rtol=1e-5):
        raise IntegrityError("the exported ONNX graph does not reproduce the torch model; export refused")


def graph_initializer_names(model: onnx.ModelProto) -> set[str]:
    return {i.name for i in model.graph.initializer}


def delta_model(domain: str, arrays: Arrays, dtype: str = "float32") -> bytes:
    """A small ONNX file holding only initializers: the domain's delta, named as the shared ones.

    Filled in as protobuf fields directly: the same bytes as ``helper.make_model`` over
    ``numpy_helper.from_array`` tensors (a unit test compares them) at less than half the cost, which a
    trainer with thousands of domains pays per domain per round."""
    if dtype not in ("float32", "float16"):
        raise ValueError(f"delta dtype must be float32 or float16, not {dtype!r}")
    dt = np.dtype(dtype).newbyteorder("<")
    model = onnx.ModelProto()
    model.ir_version = onnx.IR_VERSION
    model.producer_name = "mamdr-trainer"
    opset = model.opset_import.add()
    opset.domain, opset.version = "", OPSET
    model.graph.name = f"delta:{domain}"
    code = onnx.TensorProto.FLOAT if dtype == "float32" else onnx.TensorProto.FLOAT16
    for name in sorted(arrays):
        value = np.ascontiguousarray(arrays[name], dtype=dt)
        tensor = model.graph.initializer.add()
        tensor.dims.extend(value.shape)
        tensor.data_type = code
        tensor.name = name
        tensor.raw_data = value.tobytes()
    return model.SerializeToString(deterministic=True)


def model_bytes(model: onnx.ModelProto) -> bytes:
    return model.SerializeToString(deterministic=True)
