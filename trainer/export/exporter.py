"""Export a trained model (θS + every domain's θi) as one published version; optionally register it."""

from __future__ import annotations

import json
import time
from collections.abc import Collection, Mapping
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch

from contracts.artifacts import sha256_bytes
from contracts.errors import ConfigError
from contracts.manifest import MANIFEST_FILE, InputContract, Manifest
from trainer.export.onnx_graph import (
    OUTPUT,
    delta_model,
    export_shared_graph,
    graph_initializer_names,
    model_bytes,
)
from trainer.export.publish import MAX_CARRY, PACK_MIN, check_new_version, publish_version
from trainer.export.view import all_delta_arrays, build_view_module, shared_view_arrays
from trainer.models.base import CTRModel
from trainer.params import DomainParameters

if TYPE_CHECKING:
    from domain_registry.base import Registry

REGISTRY_JSON_LIMIT = 16_000  # domain_registry.rules caps a record's JSON fields at 16,384 bytes


def cold_start_vectors(model: CTRModel) -> dict[str, list[float]]:
    """Mean user and item vectors: the documented fallback for ids the feature store does not know."""
    with torch.no_grad():
        return {
            "user": model.user_embedding.weight.float().mean(dim=0).tolist(),
            "item": model.item_embedding.weight.float().mean(dim=0).tolist(),
        }


def registry_checksums(manifest: Manifest) -> dict[str, str]:
    """The manifest's own sha256 (under ``"manifest.json"``, always) and the per-domain checksums if
    they fit the record's 16 KiB JSON cap (~200 domains).

    The manifest digest is what serving and promote compare the manifest file against, so a manifest
    edited after publication is refused; the manifest holds every delta's checksum, verified on load.
    """
    digest = {MANIFEST_FILE: sha256_bytes(manifest.to_json().encode())}  # the bytes publish_version wrote
    checksums = {**{d: e.sha256 for d, e in manifest.deltas.items()}, **digest}
    if len(json.dumps(checksums)) <= REGISTRY_JSON_LIMIT:
        return checksums
    return digest


def export_version(
    params: DomainParameters,
    domains: Mapping[str, int],
    root: Path,
    version: str,
    *,
    parent: str | None = None,
    feature_store_version: str | None = None,
    offsets: Mapping[str, int] | None = None,
    events_included: int = 0,
    metrics: Mapping[str, object] | None = None,
    delta_dtype: str = "float32",
    registry: Registry | None = None,
    promote: bool = False,
    without_delta: Collection[str] = (),
    cold_start: Mapping[str, list[float]] | None = None,
    pack_min: int = PACK_MIN,
    max_carry: int = MAX_CARRY,
) -> Manifest:
    """Publish ``<root>/<version>``: shared.onnx (θS view), one delta per domain, the manifest.

    ``domains`` maps each domain id to its slot (row of the domain-indexed tensors); the domains in
    ``without_delta`` are exported as θS alone (their θi did not graduate). With a ``registry`` the version is
    registered as a candidate, and made live if ``promote``. ``cold_start`` overrides the mean of the whole
    tables (the continual trainer passes the mean of the rows ids own, which its prequential scoring uses too).
    """
    model = params.model
    if not isinstance(model, CTRModel):
        raise ConfigError("export needs a CTRModel")
    check_new_version(Path(root), version)  # fail before the (slow) export, not after it
    n_slots = model.config.n_domains
    for domain, slot in domains.items():
        if not 0 <= slot < n_slots:
            raise ConfigError(f"domain {domain!r} has slot {slot}, outside the model's {n_slots} domains")
    was_training = model.training
    model.eval()
    try:
        shared = shared_view_arrays(model)
        view = build_view_module(model, shared)
        graph = export_shared_graph(view, shared, model.config.udim, model.config.idim)
        in_graph = graph_initializer_names(graph)
        # every domain's delta in one pass per tensor (a view per domain cost ~1.5 ms each at 1,000 domains)
        deltas: dict[str, tuple[bytes, dict[str, np.ndarray]]] = {
            domain: (delta_model(domain, arrays, delta_dtype) if arrays else b"", arrays)
            for domain, arrays in all_delta_arrays(params, shared, domains, without_delta, in_graph).items()}
        contract = InputContract(
            user_dim=model.config.udim, item_dim=model.config.idim, output=OUTPUT, model=model.name,
            model_config_json=model.config.to_json(),
        )
        manifest = publish_version(
            Path(root), version, model_bytes(graph), deltas, contract, parent=parent, domains=sorted(domains),
            feature_store_version=feature_store_version,
            cold_start=dict(cold_start) if cold_start is not None else cold_start_vectors(model),
            offsets=offsets,
            events_included=events_included, metrics=metrics, delta_dtype=delta_dtype,
            pack_min=pack_min, max_carry=max_carry,
        )
    finally:
        model.train(was_training)
    if registry is not None:
        from domain_registry.base import ModelVersion

        registry.register_model(ModelVersion(
            id=version, parent=parent, created_at=time.time(),
            artifact_uri=f"file://{(Path(root) / version).resolve()}",
            delta_checksums=registry_checksums(manifest), metrics=dict(metrics or {}),
        ))
        if promote:
            registry.promote(version)
    return manifest
