"""Split polled records into valid click events and rejects (with a one-line reason each).

The trainer's loop is poll -> :func:`check_records` -> buffer the valid ones -> ``stream.dead_letter``
each reject -> ... -> commit; a bad event is counted and parked, it never stops training.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field

from contracts.events import ClickEvent, InvalidEvent, parse_event
from stream.base import Record


@dataclass
class Checked:
    valid: list[tuple[Record, ClickEvent]] = field(default_factory=list)
    invalid: list[tuple[Record, str]] = field(default_factory=list)


def check_records(records: Iterable[Record], max_bytes: int) -> Checked:
    out = Checked()
    for record in records:
        try:
            out.valid.append((record, parse_event(record.value, max_bytes=max_bytes)))
        except InvalidEvent as exc:
            out.invalid.append((record, exc.message))
    return out
