"""Publishing: atomic folder, parent reuse of unchanged deltas, verification, registry registration."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
import torch

from contracts.artifacts import load_version, manifest_digest, sha256_file
from contracts.errors import ConfigError, Conflict, IntegrityError
from contracts.manifest import MANIFEST_FILE, Manifest
from domain_registry import open_registry
from tests.support.tiny_model import train_tiny
from trainer.export import export_version, set_live_pointer
from trainer.export.publish import publish_version


@pytest.fixture(scope="module")
def tiny():
    # A private model: this module changes θi of one domain.
    return train_tiny("mlp", steps=2, delta_steps=1, n_domains=3, seed=3)


def test_manifest_records_contract_checksums_and_cold_start(tiny, tmp_path: Path) -> None:
    m = export_version(tiny.params, tiny.domains, tmp_path, "v1", feature_store_version="emb-7",
                       offsets={"clicks:0": 12}, events_included=12, metrics={"auc": 0.5})
    on_disk = Manifest.model_validate_json((tmp_path / "v1" / MANIFEST_FILE).read_text())
    assert on_disk == m
    assert m.parent is None and m.feature_store_version == "emb-7" and m.offsets == {"clicks:0": 12}
    assert m.contract.user_dim == 16 and m.contract.item_dim == 16 and m.contract.model == "mlp"
    assert m.shared_sha256 == sha256_file(tmp_path / m.shared_path)
    for entry in m.deltas.values():
        assert entry.sha256 == sha256_file(tmp_path / entry.path)
        assert all(t.dtype == "float32" for t in entry.tensors)
    assert len(m.cold_start["user"]) == 16 and len(m.cold_start["item"]) == 16
    assert sorted(p.name for p in tmp_path.iterdir()) == ["v1"]  # no temp dir left behind


def test_unchanged_domains_point_at_the_parent_file(tiny, tmp_path: Path) -> None:
    m1 = export_version(tiny.params, tiny.domains, tmp_path, "v1")
    m2 = export_version(tiny.params, tiny.domains, tmp_path, "v2", parent="v1")
    assert m2.shared_sha256 == m1.shared_sha256  # same weights, same bytes (the graph is reused)
    assert all(e.path.startswith("v1/") and e.version == "v1" for e in m2.deltas.values())
    assert not (tmp_path / "v2" / "deltas").exists()
    # Change θi of one domain: only that delta is written under v2.
    slot = tiny.domains["dom-1"]
    old = {n: t.clone() for n, t in tiny.params.delta(slot).items()}
    try:
        tiny.params.set_delta(slot, {n: t + 0.01 for n, t in old.items()})
        m3 = export_version(tiny.params, tiny.domains, tmp_path, "v3", parent="v2")
    finally:
        tiny.params.set_delta(slot, old)
    assert m3.deltas["dom-1"].path == "v3/deltas/dom-1.onnx"
    assert {d: e.path[:3] for d, e in m3.deltas.items() if d != "dom-1"} == {"dom-0": "v1/", "dom-2": "v1/"}
    assert load_version(tmp_path / "v3").read_delta("dom-1")


def test_float16_deltas_are_read_as_float16(tiny, tmp_path: Path) -> None:
    m = export_version(tiny.params, tiny.domains, tmp_path, "v1", delta_dtype="float16")
    loaded = load_version(tmp_path / "v1")
    arrays = loaded.read_delta("dom-0")  # not upcast: serving holds what was published
    assert arrays and all(a.dtype.name == "float16" for a in arrays.values())
    assert all(t.dtype == "float16" for t in m.deltas["dom-0"].tensors)
    assert loaded.delta_dtype == "float16"
    export_version(tiny.params, tiny.domains, tmp_path, "v2", delta_dtype="float32")
    assert load_version(tmp_path / "v2").delta_dtype == "float32"


def test_existing_version_and_bad_ids_are_refused(tiny, tmp_path: Path) -> None:
    export_version(tiny.params, tiny.domains, tmp_path, "v1")
    with pytest.raises(Conflict):
        export_version(tiny.params, tiny.domains, tmp_path, "v1")
    with pytest.raises(ConfigError):
        export_version(tiny.params, tiny.domains, tmp_path, "../evil")
    with pytest.raises(ConfigError):
        export_version(tiny.params, {"dom-0": 99}, tmp_path, "v9")


def test_a_version_that_does_not_verify_never_becomes_visible(tiny, tmp_path: Path) -> None:
    export_version(tiny.params, tiny.domains, tmp_path, "v1")
    m1 = load_version(tmp_path / "v1").manifest
    shared = (tmp_path / m1.shared_path).read_bytes()
    name = m1.deltas["dom-0"].tensors[0].name
    arrays = {name: torch.ones(m1.deltas["dom-0"].tensors[0].shape).numpy()}
    # A delta file whose tensor is absent from the graph: verification fails before the rename.
    from trainer.export.onnx_graph import delta_model

    bad = {"dom-0": (delta_model("dom-0", {"not.a.weight": arrays[name]}), {"not.a.weight": arrays[name]})}
    with pytest.raises(IntegrityError):
        publish_version(tmp_path, "v2", shared, bad, m1.contract, parent="v1")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["v1"]


def test_load_refuses_corrupted_files(tiny, tmp_path: Path) -> None:
    m = export_version(tiny.params, tiny.domains, tmp_path, "v1")
    path = tmp_path / m.deltas["dom-2"].path
    data = bytearray(path.read_bytes())
    data[-1] ^= 0xFF
    path.write_bytes(bytes(data))
    with pytest.raises(IntegrityError, match="sha256"):
        load_version(tmp_path / "v1")
    os.remove(path)
    with pytest.raises(IntegrityError, match="missing"):
        load_version(tmp_path / "v1")


def test_registry_registration_promotion_and_live_pointer(tiny, tmp_path: Path) -> None:
    registry = open_registry(f"sqlite://{tmp_path}/registry.db")
    m = export_version(tiny.params, tiny.domains, tmp_path / "art", "v1", registry=registry, promote=True)
    live = registry.live_model()
    assert live is not None and live.id == "v1"
    assert live.artifact_uri == f"file://{(tmp_path / 'art' / 'v1').resolve()}"
    assert live.domain_checksums == {d: e.sha256 for d, e in m.deltas.items()}
    # The manifest's digest is recorded at publish; serving and promote compare the file against it.
    assert live.manifest_sha256 == manifest_digest(tmp_path / "art" / "v1")
    set_live_pointer(tmp_path / "art", "v1")
    assert (tmp_path / "art" / "LIVE").read_text() == "v1"
    assert json.loads((tmp_path / "art" / "v1" / MANIFEST_FILE).read_text())["version"] == "v1"
    registry.close()


def test_all_delta_arrays_match_the_per_domain_views(tiny) -> None:
    from trainer.export.view import all_delta_arrays, delta_arrays, domain_view_arrays, shared_view_arrays

    shared = shared_view_arrays(tiny.params.model)
    for without in ((), ("dom-1",)):
        batched = all_delta_arrays(tiny.params, shared, tiny.domains, without, chunk=2)
        for domain, slot in tiny.domains.items():
            one = delta_arrays(shared, domain_view_arrays(tiny.params, slot, with_delta=domain not in without))
            assert batched[domain].keys() == one.keys()
            for name, value in one.items():
                assert batched[domain][name].shape == value.shape and (batched[domain][name] == value).all(), name


def test_many_deltas_share_one_pack_that_serving_reads(tiny, tmp_path: Path) -> None:
    from contracts.manifest import DELTA_PACK_FILE
    from serving.composition import FeedComposer

    per_file = export_version(tiny.params, tiny.domains, tmp_path / "a", "v1")
    packed = export_version(tiny.params, tiny.domains, tmp_path / "b", "v1", pack_min=2, max_carry=2)
    assert {e.path for e in packed.deltas.values()} == {f"v1/{DELTA_PACK_FILE}"}
    assert not (tmp_path / "b" / "v1" / "deltas").exists()
    assert {d: e.sha256 for d, e in packed.deltas.items()} == {d: e.sha256 for d, e in per_file.deltas.items()}
    a, b = load_version(tmp_path / "a" / "v1"), load_version(tmp_path / "b" / "v1")
    for domain in per_file.deltas:
        want, got = a.read_delta(domain), b.read_delta(domain)
        assert want.keys() == got.keys() and all((want[n] == got[n]).all() for n in want)
        assert FeedComposer(b).composed(domain).keys() == FeedComposer(a).composed(domain).keys()
    # unchanged: carried (counted), then written again after max_carry versions, so old packs can go
    m2 = export_version(tiny.params, tiny.domains, tmp_path / "b", "v2", parent="v1", pack_min=2, max_carry=2)
    assert all(e.path == f"v1/{DELTA_PACK_FILE}" and e.carried == 1 for e in m2.deltas.values())
    m3 = export_version(tiny.params, tiny.domains, tmp_path / "b", "v3", parent="v2", pack_min=2, max_carry=2)
    assert all(e.path == f"v3/{DELTA_PACK_FILE}" and e.carried == 0 for e in m3.deltas.values())
    # a flipped byte of a packed delta is refused, like a per-file one
    pack = tmp_path / "b" / "v3" / DELTA_PACK_FILE
    data = bytearray(pack.read_bytes())
    data[m3.deltas["dom-2"].offset + 5] ^= 0xFF  # type: ignore[operator]
    pack.write_bytes(bytes(data))
    with pytest.raises(IntegrityError):
        load_version(tmp_path / "b" / "v3")


def test_delta_files_are_the_bytes_onnx_helpers_make() -> None:
    import numpy as np
    from onnx import helper, numpy_helper

    from trainer.export.onnx_graph import OPSET, delta_model

    rng = np.random.default_rng(0)
    arrays = {"tower.0.weight": rng.random((4, 6)).astype(np.float32), "domain_embedding.weight":
              rng.random((1, 3)).astype(np.float32), "out.bias": rng.random(1).astype(np.float32)}
    for dtype in ("float32", "float16"):
        inits = [numpy_helper.from_array(np.ascontiguousarray(arrays[n], dtype=np.dtype(dtype)), n)
                 for n in sorted(arrays)]
        graph = helper.make_graph([], "delta:dom-1", [], [], initializer=inits)
        want = helper.make_model(graph, producer_name="mamdr-trainer", opset_imports=[helper.make_opsetid("", OPSET)])
        assert delta_model("dom-1", arrays, dtype) == want.SerializeToString(deterministic=True)
