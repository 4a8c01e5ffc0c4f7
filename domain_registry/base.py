"""The registry interface: domains, model versions and an audit trail. Backends: one file each.

Trainer and serving notice changes by polling ``change_counter()``: it increases on every write
(domain or model), so a poller compares one integer per interval instead of re-reading everything.
``wait_for_change(since, timeout_s)`` wraps that loop. Every write also appends one audit entry whose
``seq`` equals the counter value it produced, so ``audit()`` tells a poller what changed.
"""

from __future__ import annotations

import re
import time
from abc import ABC, abstractmethod
from collections.abc import Sequence
from typing import Any, Literal

from pydantic import BaseModel, Field

from contracts.errors import Conflict
from contracts.events import DomainId

DomainStatus = Literal["active", "paused", "retired"]
ModelStatus = Literal["candidate", "live", "superseded", "rolled_back"]
DOMAIN_STATUSES: tuple[DomainStatus, ...] = ("active", "paused", "retired")

# Reserved key of ``ModelVersion.delta_checksums``: the sha256 of the version's manifest file, recorded
# at publish (domain ids are slugs, so no domain can be called "manifest.json").
MANIFEST_CHECKSUM_KEY = "manifest.json"

# Version ids appear in URLs and folder names: no slashes, no spaces.
VERSION_ID_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$"
_VERSION_RE = re.compile(VERSION_ID_PATTERN)


def is_version_id(value: str) -> bool:
    """Letters, digits, '.', '_' and '-', at most 128 characters, not starting with a symbol."""
    return bool(_VERSION_RE.match(value))


class Domain(BaseModel):
    id: DomainId
    display_name: str
    status: DomainStatus = "active"
    created_at: float
    updated_at: float
    settings: dict[str, Any] = Field(default_factory=dict)  # e.g. {"dr_k": 3}


class ModelVersion(BaseModel):
    model_config = {"protected_namespaces": ()}

    id: str
    parent: str | None = None
    created_at: float
    artifact_uri: str  # where the version's folder is (file:///.../artifacts/v0003)
    delta_checksums: dict[str, str] = Field(default_factory=dict)  # domain -> sha256
    metrics: dict[str, Any] = Field(default_factory=dict)
    status: ModelStatus = "candidate"
    promoted_at: float | None = None  # when it last became live (promote or rollback)

    @property
    def manifest_sha256(self) -> str | None:
        """The manifest digest recorded at publish (None for versions registered before it was)."""
        return self.delta_checksums.get(MANIFEST_CHECKSUM_KEY)

    @property
    def domain_checksums(self) -> dict[str, str]:
        """Per-domain delta checksums (the reserved manifest key left out)."""
        return {k: v for k, v in self.delta_checksums.items() if k != MANIFEST_CHECKSUM_KEY}


class AuditEntry(BaseModel):
    seq: int
    ts: float
    actor: str
    action: str  # e.g. "domain.create", "model.promote"
    target: str
    detail: dict[str, Any] = Field(default_factory=dict)


class Registry(ABC):
    """Every write is atomic and bumps the change counter; every method may raise BackendUnavailable."""

    # -- domains
    @abstractmethod
    def create_domain(self, domain_id: str, display_name: str | None = None,
                      settings: dict[str, Any] | None = None, actor: str = "system") -> Domain:
        """Create an active domain; ``Conflict`` if the id exists (even retired)."""

    def create_domains(self, domain_ids: Sequence[str], actor: str = "system") -> list[str]:
        """Create every id that does not exist yet (active, default name); return the ids created.

        Bulk onboarding (a stream that brings thousands of new domains at once): a backend may do it in
        one write; each creation still bumps the counter and gets its own audit entry."""
        created = []
        for domain_id in dict.fromkeys(domain_ids):
            try:
                self.create_domain(domain_id, actor=actor)
            except Conflict:
                continue
            created.append(domain_id)
        return created

    @abstractmethod
    def get_domain(self, domain_id: str) -> Domain:
        """``NotFound`` when absent."""

    @abstractmethod
    def list_domains(self, status: DomainStatus | None = None) -> list[Domain]: ...

    @abstractmethod
    def update_domain(self, domain_id: str, *, display_name: str | None = None,
                      status: DomainStatus | None = None, settings: dict[str, Any] | None = None,
                      actor: str = "system") -> Domain: ...

    # -- model versions
    @abstractmethod
    def register_model(self, version: ModelVersion, actor: str = "system") -> ModelVersion:
        """Record a new version as a candidate; ``Conflict`` if the id exists."""

    @abstractmethod
    def get_model(self, version_id: str) -> ModelVersion: ...

    @abstractmethod
    def list_models(self, limit: int = 100) -> list[ModelVersion]:
        """Newest first."""

    @abstractmethod
    def live_model(self) -> ModelVersion | None: ...

    @abstractmethod
    def promote(self, version_id: str, actor: str = "system") -> ModelVersion:
        """Make a version live; the previous live one becomes superseded. Atomic."""

    @abstractmethod
    def rollback(self, actor: str = "system") -> ModelVersion:
        """Mark the live version rolled_back and make the previous live one live again."""

    @abstractmethod
    def delete_model(self, version_id: str, actor: str = "system") -> bool:
        """Forget a version's record (retention). ``Conflict`` for the live version; False if absent.

        A deleted version can never be promoted or rolled back to again; the audit trail keeps
        its history (``model.delete``). Deleting an absent id is a no-op (no counter bump), so
        retention can repeat a delete after a crash.
        """

    # -- change notification and audit
    @abstractmethod
    def change_counter(self) -> int: ...

    @abstractmethod
    def audit(self, limit: int = 100) -> list[AuditEntry]:
        """Newest first."""

    def wait_for_change(self, since: int, timeout_s: float, poll_s: float = 0.05) -> int:
        """Block until ``change_counter() > since`` or ``timeout_s`` passes; return the counter."""
        deadline = time.monotonic() + max(0.0, timeout_s)
        while True:
            current = self.change_counter()
            if current > since or time.monotonic() >= deadline:
                return current
            time.sleep(min(poll_s, max(0.0, deadline - time.monotonic())))

    def close(self) -> None:  # noqa: B027 - optional hook
        """Release connections."""

    def __enter__(self) -> Registry:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
