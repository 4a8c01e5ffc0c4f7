"""Export over every registered model: stable names, delta contents, ONNX == torch for each domain."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest
import torch

from contracts.artifacts import load_version
from serving.composition import build_composer
from tests.support.tiny_model import cached_tiny
from trainer.export import export_version
from trainer.export.view import graph_tensor_names
from trainer.models import MODELS

N_DOMAINS = 3


def _tiny(name: str):  # one small trained model per name, shared by the tests of this module
    return cached_tiny(name, steps=3, delta_steps=2, n_domains=N_DOMAINS)


@pytest.mark.parametrize("name", sorted(MODELS))
def test_every_model_exports_and_onnx_matches_torch_per_domain(name: str, tmp_path: Path) -> None:
    tiny = _tiny(name)
    model = tiny.params.model
    manifest = export_version(tiny.params, tiny.domains, tmp_path, "v1")

    shared = onnx.load(tmp_path / "v1" / "shared.onnx")
    assert max(o.version for o in shared.opset_import if o.domain in ("", "ai.onnx")) >= 17
    inits = {i.name for i in shared.graph.initializer}
    params = set(graph_tensor_names(model))
    named = inits & params
    assert named, "no initializer carries a parameter name"
    # Every parameter the graph reads keeps its own name: nothing was folded into a generated one.
    for init in shared.graph.initializer:
        if init.name not in params:
            assert np.prod(init.dims) <= 1, f"{name}: unexpected non-parameter initializer {init.name}"
    for dim_name in model.domain_indexed:
        if dim_name in inits:
            rows = next(i for i in shared.graph.initializer if i.name == dim_name).dims[0]
            assert rows == 1, f"{dim_name} must be exported as one row"

    # Deltas hold only tensors of the graph, named as their shared initializers, and are non-empty
    # (θi was trained, so every domain differs from the shared view).
    assert set(manifest.deltas) == set(tiny.domains)
    for entry in manifest.deltas.values():
        assert entry.tensors and {t.name for t in entry.tensors} <= named
        delta = onnx.load(tmp_path / entry.path)
        assert not delta.graph.node and {i.name for i in delta.graph.initializer} == {t.name for t in entry.tensors}

    loaded = load_version(tmp_path / "v1")
    gen = torch.Generator().manual_seed(1)
    for strategy in ("feed", "session"):
        composer = build_composer(strategy, loaded, cache_size=2, threads=1)
        for domain, slot in tiny.domains.items():
            u = torch.randint(0, len(tiny.user_ids), (40,), generator=gen)
            i = torch.randint(0, len(tiny.item_ids), (40,), generator=gen)
            with torch.no_grad():
                want = tiny.params.forward_domain(slot, u, i, torch.full((40,), slot)).numpy()
                got = composer.logits(domain, model.user_embedding(u).numpy(), model.item_embedding(i).numpy())
            np.testing.assert_allclose(got, want, atol=1e-5, rtol=0, err_msg=f"{name}/{strategy}/{domain}")


def test_domain_without_delta_is_served_by_the_shared_view(tmp_path: Path) -> None:
    tiny = _tiny("mlp")
    export_version(tiny.params, tiny.domains, tmp_path, "v1")
    loaded = load_version(tmp_path / "v1")
    composer = build_composer("feed", loaded, cache_size=2, threads=1)
    model = tiny.params.model
    u, i = torch.arange(5), torch.arange(5)
    ue, ie = model.user_embedding(u).detach().numpy(), model.item_embedding(i).detach().numpy()
    # The shared view uses the mean domain row; compute it in torch with functional_call.
    mean_row = model.domain_embedding.weight.detach().mean(0, keepdim=True)
    with torch.no_grad():
        want = torch.func.functional_call(
            model, {"domain_embedding.weight": mean_row}, (u, i, torch.zeros(5, dtype=torch.long))
        ).numpy()
    got = composer.logits("brand-new-domain", ue, ie)
    np.testing.assert_allclose(got, want, atol=1e-5)
    assert not np.allclose(got, composer.logits("dom-0", ue, ie), atol=1e-4)
