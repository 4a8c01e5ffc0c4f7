"""The registry's rules, shared by every backend so both behave the same.

Backends only store and load; what a valid id is, which status changes are allowed, what a
domain looks like after an update and which version a rollback restores is decided here.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable
from typing import Any

from contracts.errors import Conflict, DataError, Gone
from contracts.events import is_domain_id
from domain_registry.base import DOMAIN_STATUSES, Domain, ModelVersion, is_version_id

MAX_DISPLAY_NAME = 200
MAX_SETTINGS_BYTES = 16_384


def dumps(value: Any) -> str:
    """The one JSON encoding both backends store (compact, keys sorted): equal values, equal bytes."""
    return json.dumps(value, sort_keys=True, separators=(",", ":"))


def check_domain_id(domain_id: object) -> str:
    """The id itself, or ``DataError`` saying what a valid id looks like."""
    if not isinstance(domain_id, str) or not is_domain_id(domain_id):
        shown = domain_id
        if isinstance(shown, str) and len(shown) > 80:
            shown = shown[:77] + "..."
        raise DataError(
            f"invalid domain id {shown!r}: use a slug of lowercase letters, digits, '-' and '_' "
            "(starting and ending with a letter or digit), at most 64 characters"
        )
    return domain_id


def check_version_id(version_id: object) -> str:
    if not isinstance(version_id, str) or not is_version_id(version_id):
        raise DataError(
            f"invalid model version id {version_id!r}: use letters, digits, '.', '_' and '-' "
            "(starting with a letter or digit), at most 128 characters"
        )
    return version_id


def _check_display_name(name: str) -> str:
    if not isinstance(name, str) or not name.strip():
        raise DataError("display_name must be a non-empty string")
    if len(name) > MAX_DISPLAY_NAME:
        raise DataError(f"display_name is longer than {MAX_DISPLAY_NAME} characters")
    return name.strip()


def _check_json_dict(value: Any, what: str) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise DataError(f"{what} must be a JSON object")
    try:
        encoded = json.dumps(value, allow_nan=False, sort_keys=True)
    except (TypeError, ValueError) as exc:
        raise DataError(f"{what} must be JSON-serializable with finite numbers: {exc}") from None
    if len(encoded) > MAX_SETTINGS_BYTES:
        raise DataError(f"{what} is larger than {MAX_SETTINGS_BYTES} bytes of JSON")
    return dict(value)


def _check_domain_settings(settings: Any) -> dict[str, Any]:
    """A JSON object; the keys the trainer reads are type-checked here so a typo fails at the edge."""
    checked = _check_json_dict(settings, "settings")
    dr_k = checked.get("dr_k")
    if dr_k is not None and (isinstance(dr_k, bool) or not isinstance(dr_k, int) or dr_k < 1):
        raise DataError(f"settings.dr_k must be a positive integer (DR neighbours per domain), got {dr_k!r}")
    return checked


def new_domain(domain_id: str, display_name: str | None, settings: dict[str, Any] | None,
               now: float) -> Domain:
    check_domain_id(domain_id)
    name = domain_id if display_name is None else _check_display_name(display_name)
    return Domain(id=domain_id, display_name=name, status="active", created_at=now, updated_at=now,
                  settings=_check_domain_settings(settings or {}))


def updated_domain(current: Domain, *, display_name: str | None, status: str | None,
                   settings: dict[str, Any] | None, now: float) -> tuple[Domain, dict[str, Any]]:
    """The domain after an update and the audit detail (``{field: [old, new]}``).

    ``settings`` is merged key by key (a ``None`` value removes the key), like a JSON merge patch.
    A retired domain is kept for history and never changes again: ``Gone``. When nothing changes,
    ``changes`` is empty and backends write nothing (no counter bump, ``updated_at`` kept).
    """
    if current.status == "retired":
        raise Gone(f"domain {current.id!r} is retired; its record is kept for history and cannot change "
                   "(create a domain with a new id instead)")
    if status is not None and status not in DOMAIN_STATUSES:
        raise DataError(f"invalid status {status!r}: use one of {', '.join(DOMAIN_STATUSES)}")
    changes: dict[str, Any] = {}
    data = current.model_dump()
    if display_name is not None:
        name = _check_display_name(display_name)
        if name != current.display_name:
            changes["display_name"] = [current.display_name, name]
            data["display_name"] = name
    if status is not None and status != current.status:
        changes["status"] = [current.status, status]
        data["status"] = status
    if settings is not None:
        patch = _check_json_dict(settings, "settings")
        merged = dict(current.settings)
        for key, value in patch.items():
            if value is None:
                merged.pop(key, None)
            else:
                merged[key] = value
        merged = _check_domain_settings(merged)
        if merged != current.settings:
            changes["settings"] = [current.settings, merged]
            data["settings"] = merged
    data["updated_at"] = now
    return Domain.model_validate(data), changes


def domain_exists(domain_id: str, status: str) -> Conflict:
    hint = " (retired ids are kept for history and cannot be reused)" if status == "retired" else ""
    return Conflict(f"domain {domain_id!r} already exists{hint}")


def update_action(changes: dict[str, Any]) -> str:
    """The audit action of an update: retiring is its own action so history is easy to scan."""
    return "domain.retire" if changes.get("status", [None, None])[1] == "retired" else "domain.update"


def new_model(version: ModelVersion) -> ModelVersion:
    """A version as registered: a candidate with a valid id and JSON-safe metrics."""
    check_version_id(version.id)
    if version.parent is not None:
        check_version_id(version.parent)
    if version.status != "candidate":
        raise DataError(f"model {version.id!r} has status {version.status!r}; versions are registered as "
                        "candidates and made live with promote")
    if not version.artifact_uri:
        raise DataError(f"model {version.id!r} has no artifact_uri")
    _check_json_dict(version.metrics, "metrics")
    _check_json_dict(version.delta_checksums, "delta_checksums")
    if not math.isfinite(version.created_at):
        raise DataError("created_at must be a finite timestamp")
    return version.model_copy(update={"promoted_at": None})


def rollback_target(live: ModelVersion | None,
                    superseded: Iterable[tuple[int, ModelVersion]]) -> ModelVersion:
    """The version a rollback restores: the superseded one that was live most recently.

    ``superseded`` holds ``(sequence at which it became live, version)``; rolled-back versions
    never appear there, so a rollback never restores a version that was itself rolled back.
    """
    if live is None:
        raise Conflict("no live model version to roll back; promote one first")
    best = max(superseded, key=lambda pair: pair[0], default=None)
    if best is None:
        raise Conflict(f"model {live.id!r} is live but no earlier live version is left to roll back to")
    return best[1]


def check_deletable(version_id: str, status: str) -> None:
    """Retention may forget any record but the live one (roll back or promote another first)."""
    if status == "live":
        raise Conflict(f"model version {version_id!r} is live and cannot be deleted; promote another first")
