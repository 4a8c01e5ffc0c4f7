"""The batch validator's fast path decides exactly as the contract's ``parse_event`` on every record."""

from __future__ import annotations

import json
import random

from contracts.events import InvalidEvent, parse_event
from stream.base import Record
from stream.validate import check_records

BASE = {"event_id": "e1", "ts": 1.7e9, "domain": "comedy", "user_id": "u1", "item_id": "i1", "clicked": 1}

EDGE: list[bytes] = [
    json.dumps(BASE).encode(),
    json.dumps({**BASE, "ts": 0}).encode(),
    json.dumps({**BASE, "ts": -0.0}).encode(),
    json.dumps({**BASE, "ts": -1}).encode(),
    json.dumps({**BASE, "ts": "12.5"}).encode(),  # lax: the contract coerces it, the fast path defers
    json.dumps({**BASE, "ts": 2**60}).encode(),
    json.dumps({**BASE, "clicked": True}).encode(),
    json.dumps({**BASE, "clicked": 1.0}).encode(),
    json.dumps({**BASE, "clicked": 2}).encode(),
    json.dumps({**BASE, "clicked": "1"}).encode(),
    json.dumps({**BASE, "domain": "comedy\n"}).encode(),  # Python's "$" would accept it; the contract does not
    json.dumps({**BASE, "domain": "Comedy"}).encode(),
    json.dumps({**BASE, "domain": "a" * 64}).encode(),
    json.dumps({**BASE, "domain": "a" * 65}).encode(),
    json.dumps({**BASE, "domain": "-a"}).encode(),
    json.dumps({**BASE, "event_id": ""}).encode(),
    json.dumps({**BASE, "user_id": "u" * 256}).encode(),
    json.dumps({**BASE, "user_id": "u" * 257}).encode(),
    json.dumps({**BASE, "item_id": 7}).encode(),
    json.dumps({**BASE, "features": None}).encode(),
    json.dumps({**BASE, "features": {"device": "ios"}}).encode(),
    json.dumps({**BASE, "features": ["x"]}).encode(),
    json.dumps({**BASE, "extra": 1}).encode(),
    json.dumps({k: v for k, v in BASE.items() if k != "clicked"}).encode(),
    json.dumps({**{k: v for k, v in BASE.items() if k != "clicked"}, "features": {}}).encode(),
    b'{"event_id": "e1", "event_id": "e2", "ts": 1, "domain": "a", "user_id": "u", "item_id": "i", "clicked": 0}',
    b'{"event_id": "\\u00e9", "ts": 1, "domain": "a", "user_id": "u", "item_id": "i", "clicked": 0}',
    b'{"event_id": "\xff", "ts": 1, "domain": "a", "user_id": "u", "item_id": "i", "clicked": 0}',
    b"[1, 2]",
    b"null",
    b"{not json",
    b"",
    json.dumps({**BASE, "event_id": "x" * 200}).encode() + b" " * 20_000,  # over max_bytes
]


def _outcome(value: bytes) -> tuple:
    try:
        e = parse_event(value, max_bytes=16_384)
    except InvalidEvent as exc:
        return ("invalid", exc.message)
    return ("valid", e.event_id, float(e.ts), e.domain, e.user_id, e.item_id, int(e.clicked))


def _check(values: list[bytes]) -> None:
    records = [Record("t", 0, i, v, 0.0) for i, v in enumerate(values)]
    checked = check_records(records, max_bytes=16_384)
    got: dict[int, tuple] = {r.offset: ("invalid", reason) for r, reason in checked.invalid}
    for j, i in enumerate(checked.index):
        got[i] = ("valid", checked.event_id[j], checked.ts[j], checked.domain[j], checked.user_id[j],
                  checked.item_id[j], checked.clicked[j])
    assert len(got) == len(values)  # every record is either valid or rejected with a reason, once
    for i, value in enumerate(values):
        assert got[i] == _outcome(value), value[:120]


def test_edge_cases_agree_with_the_contract() -> None:
    _check(EDGE)
    outcomes = [_outcome(v)[0] for v in EDGE]
    assert outcomes.count("valid") >= 8 and outcomes.count("invalid") >= 15  # the list exercises both


def test_mutated_events_agree_with_the_contract() -> None:
    rng = random.Random(0)
    values = []
    for _ in range(3000):  # bounded: byte-level mutations of valid events
        raw = bytearray(json.dumps({**BASE, "ts": rng.choice([1, 2.5, 0]), "clicked": rng.choice([0, 1])}).encode())
        for _ in range(rng.randint(1, 3)):
            pos = rng.randrange(len(raw))
            op = rng.random()
            if op < 0.4:
                raw[pos] = rng.randrange(256)
            elif op < 0.7:
                del raw[pos]
            else:
                raw.insert(pos, rng.choice(b'"{}[],:0123456789-eE.aZ \\n'))
        values.append(bytes(raw))
    _check(values)


def test_the_valid_pairs_view_matches_the_columns() -> None:
    records = [Record("t", 0, i, v, 0.0) for i, v in enumerate(EDGE)]
    checked = check_records(records, max_bytes=16_384)
    pairs = checked.valid
    assert [r.offset for r, _ in pairs] == checked.index
    assert [e.user_id for _, e in pairs] == checked.user_id
