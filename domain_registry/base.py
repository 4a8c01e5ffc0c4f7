"""The registry interface: domains, model versions and an audit trail. Backends: one file each.

Trainer and serving notice changes by polling ``change_counter()``: it increases on every write
(domain or model), so a poller compares one integer per interval instead of re-reading everything.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import Any, Literal

from pydantic import BaseModel, Field

from mamdr.contracts import DomainId

DomainStatus = Literal["active", "paused", "retired"]
ModelStatus = Literal["candidate", "live", "superseded", "rolled_back"]


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

    # -- change notification and audit
    @abstractmethod
    def change_counter(self) -> int: ...

    @abstractmethod
    def audit(self, limit: int = 100) -> list[AuditEntry]:
        """Newest first."""

    def close(self) -> None:  # noqa: B027 - optional hook
        """Release connections."""
