"""Torch-free published model versions for registry tests: real manifest, checksums and ONNX files
(a graph that only holds initializers: enough for ``load_version``, not for scoring)."""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
from onnx import helper, numpy_helper

from contracts.artifacts import manifest_digest
from contracts.manifest import MANIFEST_FILE, InputContract
from domain_registry.base import ModelVersion, Registry
from trainer.export.publish import publish_version


def _model_bytes(arrays: dict[str, np.ndarray]) -> bytes:
    inits = [numpy_helper.from_array(a, name=n) for n, a in arrays.items()]
    graph = helper.make_graph([], "g", [], [], initializer=inits)
    return helper.make_model(graph).SerializeToString()


def publish_fake(root: Path, version: str, registry: Registry | None = None,
                 domains: tuple[str, ...] = ("comedy",)) -> Path:
    """Publish ``root/version`` (shared ``w`` [2] and one delta per domain) and register it as a candidate."""
    shared = {"w": np.zeros(2, dtype=np.float32)}
    deltas = {}
    for k, d in enumerate(domains):
        arrays = {"w": np.full(2, k + 1, dtype=np.float32)}
        deltas[d] = (_model_bytes(arrays), arrays)
    manifest = publish_version(Path(root), version, _model_bytes(shared), deltas,
                               InputContract(user_dim=2, item_dim=2, model="fake"), fsync=False)
    folder = Path(root) / version
    if registry is not None:
        checksums = {d: e.sha256 for d, e in manifest.deltas.items()}
        checksums[MANIFEST_FILE] = manifest_digest(folder)
        registry.register_model(ModelVersion(id=version, created_at=time.time(),
                                             artifact_uri=f"file://{folder.resolve()}", delta_checksums=checksums))
    return folder

