"""Verify a model version before the registry makes it live (promote, rollback).

A version is promotable when its folder verifies exactly as serving will verify it
(:func:`contracts.artifacts.load_version`: every sha256, every delta shape, the shared graph
parses), its manifest is the one the registry recorded at publish (``manifest_sha256``), it holds
the version it claims, and the per-domain checksums the registry recorded match the manifest's.
Anything else is refused with ``IntegrityError`` (409) naming the reason, and nothing changes.

Versions are immutable once published, so checking before the switch (not inside the registry's
transaction) is enough; serving re-verifies on load and keeps the old version if a file changed since.
"""

from __future__ import annotations

from contracts.errors import IntegrityError, MamdrError, NotFound
from domain_registry.base import ModelVersion, Registry


def verify_model(model: ModelVersion, artifacts_url: str) -> None:
    """``IntegrityError`` unless ``model``'s artifacts load and match what the registry recorded."""
    from contracts.artifacts import load_version, version_dir_of

    def refuse(reason: str) -> IntegrityError:
        return IntegrityError(f"model version {model.id!r} cannot go live: {reason}")

    try:
        loaded = load_version(version_dir_of(model.artifact_uri, artifacts_url), model.manifest_sha256)
    except NotFound as exc:
        raise refuse(exc.message) from None
    except MamdrError as exc:
        raise refuse(exc.message) from None
    except OSError as exc:
        raise refuse(f"its artifacts cannot be read ({exc})") from None
    if loaded.version != model.id:
        raise refuse(f"{model.artifact_uri} holds version {loaded.version!r}")
    for domain, sha in model.domain_checksums.items():
        entry = loaded.manifest.deltas.get(domain)
        if entry is None or entry.sha256 != sha:
            raise refuse(f"the delta of {domain!r} differs from the one recorded at publish")


def verified_promote(registry: Registry, version_id: str, artifacts_url: str, actor: str) -> ModelVersion:
    """Promote ``version_id`` after :func:`verify_model`; a broken version is refused (409)."""
    model = registry.get_model(version_id)
    if model.status != "live":
        verify_model(model, artifacts_url)
    return registry.promote(version_id, actor=actor)


def rollback_candidate(registry: Registry) -> ModelVersion | None:
    """The version a rollback would restore: the superseded one that went live most recently."""
    superseded = [m for m in registry.list_models(1_000_000) if m.status == "superseded"]
    return max(superseded, key=lambda m: m.promoted_at or 0.0, default=None)


def verified_rollback(registry: Registry, artifacts_url: str, actor: str) -> ModelVersion:
    """Roll back after verifying the version it will restore; a broken one is refused (409)."""
    target = rollback_candidate(registry)
    if target is not None and registry.live_model() is not None:
        verify_model(target, artifacts_url)
    # A promote racing this call could change the target after the check; serving verifies every
    # version it loads and keeps the old one serving if that one is broken.
    return registry.rollback(actor=actor)
