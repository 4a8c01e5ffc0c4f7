"""One user per run (serving/factoring.py): the MLP's first layer factored into an item part per candidate and a
user part per request gives the general graph's scores; it applies only where the user side meets the items at
that layer and no delta overrides its weight; batches of one-user requests stay bit-equal to one-by-one runs."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
from onnx import helper, numpy_helper

from contracts.artifacts import load_version
from serving.composition import FeedComposer
from serving.factoring import USER_INPUT, factor_first_layer
from trainer.export.exporter import export_version
from trainer.export.onnx_graph import export_shared_graph
from trainer.export.view import build_view_module, shared_view_arrays
from trainer.models import MODELS, ModelConfig, build_model
from trainer.params import DomainParameters

D = 128
HIDDEN = (256, 128, 64)


def _graph(name: str) -> onnx.ModelProto:
    torch.manual_seed(0)
    model = build_model(name, ModelConfig(n_users=10, n_items=10, n_domains=3, emb_dim=D, hidden=(32, 16)))
    arrays = shared_view_arrays(model)
    return export_shared_graph(build_view_module(model, arrays), arrays, D, D)


def _run(model: onnx.ModelProto, user: np.ndarray, items: np.ndarray) -> np.ndarray:
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    return session.run(None, {USER_INPUT: user, "item_emb": items})[0]


def test_only_the_mlp_factors_and_scores_do_not_move() -> None:
    rng = np.random.default_rng(0)
    user = rng.standard_normal((1, D), dtype=np.float32)
    items = rng.standard_normal((50, D), dtype=np.float32)
    factored = {}
    for name in sorted(MODELS):
        graph = _graph(name)
        out = factor_first_layer(graph, set())
        if out is None:
            continue
        factored[name] = out
        assert [d.dim_value for d in next(i for i in out.graph.input if i.name == USER_INPUT)
                .type.tensor_type.shape.dim] == [1, D]
        assert "tower.0.weight" not in {i.name for i in out.graph.initializer}  # split into its parts
        want = _run(graph, np.repeat(user, len(items), axis=0), items)
        got = _run(out, user, items)
        assert got.shape == want.shape == (len(items),)
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)
    # the other models read user and item vectors together outside one first layer (FM terms, attention,
    # experts, per-domain towers): their graphs stay as exported
    assert set(factored) == {"mlp"}


def test_a_delta_over_the_first_layer_keeps_the_general_graph() -> None:
    assert factor_first_layer(_graph("mlp"), {"tower.0.weight"}) is None
    assert factor_first_layer(_graph("mlp"), {"out.weight", "out.bias"}) is not None


def test_a_user_side_that_depends_on_the_row_count_keeps_the_general_graph() -> None:
    """Data flow alone would accept it (the user side meets the items only at the concat); the scores differ once
    the user side runs on one row, and the load-time check sees it."""
    w = np.random.default_rng(0).standard_normal((3, 12)).astype(np.float32)
    nodes = [
        helper.make_node("Shape", ["user_emb"], ["shape"]),
        helper.make_node("Gather", ["shape", "zero"], ["rows"], axis=0),
        helper.make_node("Cast", ["rows"], ["rows_f"], to=onnx.TensorProto.FLOAT),
        helper.make_node("Div", ["user_emb", "rows_f"], ["scaled"]),  # u / N: one row gives u, N rows u / N
        helper.make_node("Concat", ["scaled", "item_emb"], ["cat"], axis=1),
        helper.make_node("Gemm", ["cat", "w", "b"], ["h"], transB=1),
        helper.make_node("ReduceSum", ["h"], ["logit"], axes=[1], keepdims=0),
    ]
    graph = helper.make_graph(
        nodes, "count", [helper.make_tensor_value_info("user_emb", onnx.TensorProto.FLOAT, ["n", 6]),
                         helper.make_tensor_value_info("item_emb", onnx.TensorProto.FLOAT, ["n", 6])],
        [helper.make_tensor_value_info("logit", onnx.TensorProto.FLOAT, ["n"])],
        initializer=[numpy_helper.from_array(w, "w"), numpy_helper.from_array(np.zeros(3, np.float32), "b"),
                     numpy_helper.from_array(np.array(0, np.int64), "zero")])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    assert factor_first_layer(model, set()) is None


@pytest.fixture(scope="module")
def head_version(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An MLP version whose deltas cover the head (the trainer's default scope) for two of three domains, at the
    paper's sizes (a no-delta domain's constant-folded row differed from the batched one only at these sizes)."""
    torch.manual_seed(1)
    model = build_model("mlp", ModelConfig(n_users=10, n_items=10, n_domains=3, emb_dim=D, hidden=HIDDEN))
    params = DomainParameters(model, specific=["out.weight", "out.bias"])
    gen = torch.Generator().manual_seed(2)
    for slot in (0, 1):
        params.set_delta(slot, {n: 0.5 * torch.randn(v.shape, generator=gen) for n, v in params.delta(slot).items()})
    root = tmp_path_factory.mktemp("factoring") / "art"
    export_version(params, {"a": 0, "b": 1, "c": 2}, root, "v1", feature_store_version="emb-1",
                   without_delta=["c"])
    return root / "v1"


def test_one_user_rows_score_as_the_same_user_repeated(head_version: Path) -> None:
    composer = FeedComposer(load_version(head_version), cache_size=4)
    assert composer.factored
    rng = np.random.default_rng(3)
    user = rng.standard_normal((1, D), dtype=np.float32)
    items = rng.standard_normal((40, D), dtype=np.float32)
    for domain in ("a", "b", "c", "never-published"):
        one = composer.logits(domain, user, items)
        repeated = composer.logits(domain, np.repeat(user, len(items), axis=0), items)  # the general graph
        np.testing.assert_allclose(one, repeated, rtol=1e-5, atol=1e-6)
    assert not np.allclose(composer.logits("a", user, items), composer.logits("c", user, items), atol=1e-4)


def test_batched_one_user_requests_equal_one_by_one_bit_for_bit(head_version: Path) -> None:
    """Domains with a delta, one exported without its θi ("c") and one never published, as scoring sends them."""
    composer = FeedComposer(load_version(head_version), cache_size=4)
    rng = np.random.default_rng(4)
    runs = [(("a", "b", "c", "never-published")[k % 4], rng.standard_normal((1, D), dtype=np.float32),
             rng.standard_normal((int(rng.integers(1, 100)), D), dtype=np.float32)) for k in range(12)]
    one_by_one = [composer.logits(*run) for run in runs]
    batched = composer.logits_many(runs)
    for a, b in zip(one_by_one, batched, strict=True):
        assert a.shape == b.shape and np.array_equal(a, b)
    mixed = [*runs[:2], ("a", np.repeat(runs[2][1], len(runs[2][2]), axis=0), runs[2][2])]  # per-row users too
    for (domain, user, items), got in zip(mixed, composer.logits_many(mixed), strict=True):
        np.testing.assert_allclose(got, composer.logits(domain, user, items), rtol=1e-5, atol=1e-6)
