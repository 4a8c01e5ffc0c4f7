"""What one published model version holds (the ``Manifest``) and the file names of its folder.

A version is ``<artifacts>/<version>/manifest.json``, ``shared.onnx`` and ``deltas/<domain>.onnx``; these
names are constants here and nowhere else. The trainer writes this format and serving reads it
(:mod:`contracts.artifacts` reads and verifies it), so it belongs to neither.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

# Artifacts of one model version: <artifacts>/<version>/...
SHARED_MODEL_FILE = "shared.onnx"
DELTAS_DIR = "deltas"
DELTA_SUFFIX = ".onnx"
DELTA_PACK_FILE = "deltas.pack"  # many domains' delta files back to back (``DeltaEntry.offset``/``length``)
MANIFEST_FILE = "manifest.json"
LIVE_POINTER_FILE = "LIVE"  # optional pointer for registry-less setups


def delta_file(domain: str) -> str:
    return f"{DELTAS_DIR}/{domain}{DELTA_SUFFIX}"


class TensorSpec(BaseModel):
    name: str
    shape: list[int]
    dtype: str = "float32"


class DeltaEntry(BaseModel):
    """Where a domain's delta lives (possibly in the parent's folder) and its checksum."""

    path: str  # relative to the artifacts root, e.g. "v0003/deltas/comedy.onnx"
    sha256: str  # of the delta file's bytes (of the byte range, in a pack)
    version: str  # the version that wrote it
    tensors: list[TensorSpec] = Field(default_factory=list)
    # In a pack (``DELTA_PACK_FILE``): the delta file is bytes [offset, offset + length) of ``path``. One file
    # per version instead of one per domain: a version of 1,000 changed domains costs one fsync, not 1,000.
    offset: int | None = None
    length: int | None = None
    carried: int = 0  # versions this entry was carried forward unchanged (a pack's entries are rewritten after a few)


class InputContract(BaseModel):
    """What the shared graph expects from the feature store and the request."""

    user_dim: int
    item_dim: int
    inputs: list[str] = Field(default_factory=lambda: ["user_emb", "item_emb"])
    output: str = "logit"
    model: str  # e.g. "mlp"
    model_config_json: dict[str, Any] = Field(default_factory=dict)


class Manifest(BaseModel):
    """A published model version. Offsets stored here make a crash lose nothing and apply nothing twice."""

    model_config = ConfigDict(protected_namespaces=())

    version: str
    parent: str | None = None
    created_at: float = Field(default_factory=lambda: datetime.now(UTC).timestamp())
    shared_path: str
    shared_sha256: str
    contract: InputContract
    deltas: dict[str, DeltaEntry] = Field(default_factory=dict)
    domains: list[str] = Field(default_factory=list)
    feature_store_version: str | None = None
    offsets: dict[str, int] = Field(default_factory=dict)  # "topic:partition" -> next offset to read
    events_included: int = 0
    metrics: dict[str, Any] = Field(default_factory=dict)
    # Cold-start fallback vectors ("user", "item" -> the mean vector) for ids the feature store lacks.
    cold_start: dict[str, list[float]] = Field(default_factory=dict)

    def to_json(self) -> str:
        return self.model_dump_json(indent=2)
