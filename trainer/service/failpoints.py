"""Named crash points for crash-safety tests (the failpoint idiom of storage engines).

``MAMDR_FAILPOINTS="after_export:2,mid_round:1"`` makes the process SIGKILL itself the 2nd time it
passes ``after_export`` and the 1st time it passes ``mid_round``. Unset in production: one dict
lookup per call. Read once at import, so a test sets it in the child process's environment.
"""

from __future__ import annotations

import os
import signal
from collections import Counter

_ARMED: dict[str, int] = {}
for _part in filter(None, os.environ.get("MAMDR_FAILPOINTS", "").split(",")):
    _name, _, _count = _part.partition(":")
    _ARMED[_name.strip()] = int(_count or 1)
_HITS: Counter[str] = Counter()

POINTS = ("mid_round", "after_checkpoint", "mid_publish", "after_export", "after_commit", "mid_gc")


def failpoint(name: str) -> None:
    if not _ARMED:
        return
    _HITS[name] += 1
    if _ARMED.get(name) == _HITS[name]:
        os.kill(os.getpid(), signal.SIGKILL)
