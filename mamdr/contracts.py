"""Contracts that trainer, serving, stream and stores share. Torch-free, pydantic only.

- ``ClickEvent``: one click/no-click impression on the wire (JSON, one object per message).
- ``Manifest``: what one published model version holds and which stream offsets it includes.
- Artifact layout: file names are constants here, nowhere else.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, StringConstraints, ValidationError

from mamdr.errors import DataError

# ---------------------------------------------------------------------------------------------
# Domain ids
DOMAIN_ID_PATTERN = r"^[a-z0-9](?:[a-z0-9_-]{0,62}[a-z0-9])?$"
_DOMAIN_RE = re.compile(DOMAIN_ID_PATTERN)
DomainId = Annotated[str, StringConstraints(pattern=DOMAIN_ID_PATTERN, max_length=64)]


def is_domain_id(value: str) -> bool:
    """A slug: lowercase letters, digits, '-' and '_', at most 64 characters."""
    return bool(_DOMAIN_RE.match(value))


def slugify(name: str) -> str:
    """Turn a free name (e.g. a genre "Film-Noir", a category "All_Beauty") into a domain id."""
    slug = re.sub(r"[^a-z0-9_-]+", "-", name.strip().lower()).strip("-_")[:64].strip("-_")
    if not slug:
        raise DataError(f"cannot make a domain id from {name!r}")
    return slug


# ---------------------------------------------------------------------------------------------
# Click events
EntityId = Annotated[str, StringConstraints(min_length=1, max_length=256)]


class ClickEvent(BaseModel):
    """One impression and whether it was clicked.

    Wire format (JSON object, UTF-8):
    ``{"event_id": "e-1", "ts": 1700000000.0, "domain": "comedy", "user_id": "u1",
    "item_id": "i9", "clicked": 1, "features": {"device": "ios"}}``
    ``ts`` is seconds since the epoch (float). ``features`` is optional and free-form.
    """

    model_config = ConfigDict(extra="forbid", frozen=True, strict=False)

    event_id: EntityId
    ts: float = Field(ge=0)
    domain: DomainId
    user_id: EntityId
    item_id: EntityId
    clicked: Literal[0, 1]
    features: dict[str, Any] | None = None

    def to_json(self) -> bytes:
        return self.model_dump_json(exclude_none=True).encode()


class InvalidEvent(DataError):
    """An event that cannot be used; carries the reason for the dead-letter record."""


def parse_event(raw: bytes | str, max_bytes: int = 16_384) -> ClickEvent:
    """Validate one wire message. Raises ``InvalidEvent`` with a one-line reason."""
    size = len(raw.encode() if isinstance(raw, str) else raw)
    if size > max_bytes:
        raise InvalidEvent(f"payload of {size} bytes exceeds the limit of {max_bytes}")
    try:
        return ClickEvent.model_validate_json(raw)
    except ValidationError as exc:
        first = exc.errors()[0]
        loc = ".".join(str(p) for p in first.get("loc", ())) or "<root>"
        raise InvalidEvent(f"{loc}: {first.get('msg', 'invalid')}") from None


class DeadLetter(BaseModel):
    """What goes to ``<topic>.dlq``: the reason, where it came from and the raw payload."""

    reason: str
    source_topic: str
    source_partition: int
    source_offset: int
    payload: str
    ts: float = Field(default_factory=lambda: datetime.now(UTC).timestamp())


# ---------------------------------------------------------------------------------------------
# Artifacts of one model version: <artifacts>/<version>/...
SHARED_MODEL_FILE = "shared.onnx"
DELTAS_DIR = "deltas"
DELTA_SUFFIX = ".onnx"
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
    sha256: str
    version: str  # the version that wrote it
    tensors: list[TensorSpec] = Field(default_factory=list)


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
