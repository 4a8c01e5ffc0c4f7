"""The click event on the wire and the ids it carries: what producers, the stream, the trainer and the
registry agree on. Torch-free, pydantic only.

- ``ClickEvent``: one click/no-click impression (JSON, one object per message).
- ``DeadLetter``: an event the trainer could not use, with the reason and its source offset.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, StringConstraints, ValidationError

from contracts.errors import DataError

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
