"""Incremental versions: lineages, the read rule and the gc plan every backend follows (torch-free).

A version declared with a ``parent`` holds only the rows it wrote (or forgot, a tombstone); a read
at version V takes, per id, the newest write made by V or one of its ancestors. Versions related by
``parent`` form a *tree* rooted at a full version; its writes share one keyspace per tree.

- Every version gets a sequence number ``seq`` (a per-namespace counter, never reused). Its
  *lineage* is the set of seqs of itself and its ancestors, kept as sorted intervals (a rollback
  branch adds one gap), so a reader decides "is this write visible" without walking parents.
- Seq 0 is the tree's *floor*: one value per id that every version of the tree sees unless it has
  a newer visible write. A root version writes straight into the floor.
- gc keeps versions, never a row a kept version reads: the *floor version* C of a tree is the
  newest version every kept version of the tree descends from; writes by C and its ancestors are
  folded into the floor in seq order (a newer fold supersedes an older one, which is then gone), so
  storage holds the floor (one value per id) plus the writes of versions newer than C. A deleted
  version whose writes a kept version still reads (above the floor) stays as a *ghost*: unreadable,
  its writes kept until folded; a deleted version no kept version descends from loses its writes.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable, Mapping
from dataclasses import dataclass, field

Intervals = tuple[tuple[int, int], ...]
FLOOR = 0  # the seq of a tree's floor values (visible on every lineage of the tree)


def extend(parent: Intervals, seq: int) -> Intervals:
    """The lineage of a child with ``seq`` of a version whose lineage is ``parent``."""
    if parent and parent[-1][1] == seq - 1:
        return (*parent[:-1], (parent[-1][0], seq))
    return (*parent, (seq, seq))


def contains(lineage: Intervals, seq: int) -> bool:
    return seq == FLOOR or any(lo <= seq <= hi for lo, hi in lineage)


def encode_lineage(lineage: Intervals) -> str:
    return ",".join(f"{lo}-{hi}" for lo, hi in lineage)


def decode_lineage(text: str) -> Intervals:
    out = []
    for part in filter(None, text.split(",")):
        lo, _, hi = part.partition("-")
        out.append((int(lo), int(hi)))
    return tuple(out)


def flat(lineage: Intervals) -> list[int]:
    """``[lo1, hi1, lo2, hi2, ...]`` (what the Redis read script takes)."""
    return [x for pair in lineage for x in pair]


def pick(writes: Mapping[int, bytes] | None, lineage: Intervals) -> bytes | None:
    """The value a reader at ``lineage`` sees among an id's writes (seq -> bytes; b"" = forgotten)."""
    if not writes:
        return None
    best = -1
    for seq in writes:
        if seq > best and contains(lineage, seq):
            best = seq
    if best < 0:
        return None
    value = writes[best]
    return value or None


@dataclass(frozen=True)
class Node:
    """A version (or ghost) as gc sees it."""

    name: str
    seq: int
    root: str
    lineage: Intervals
    created: float
    floored: bool = False  # its writes are in the floor (a root is floored from the start)
    retired: bool = False  # a ghost: deleted as a version, writes kept for kept descendants


@dataclass
class GcPlan:
    doomed: list[str] = field(default_factory=list)  # versions removed from the list (returned by gc)
    drop_trees: list[str] = field(default_factory=list)  # roots whose whole keyspace goes
    fold: list[Node] = field(default_factory=list)  # nodes folded into the floor, ascending seq
    dead: list[Node] = field(default_factory=list)  # nodes whose writes go (no kept version reads them)
    retire: list[Node] = field(default_factory=list)  # doomed versions kept as ghosts
    forget: list[Node] = field(default_factory=list)  # nodes whose metadata goes (after fold / dead)


def plan_gc(nodes: Iterable[Node], current: str | None, keep: int, protect: Collection[str] = ()) -> GcPlan:
    """What gc does: keep the newest ``keep`` versions, ``current`` and ``protect``; see the module docstring."""
    nodes = list(nodes)
    live = sorted((n for n in nodes if not n.retired), key=lambda n: (n.created, n.seq))
    kept_names = {n.name for n in live[max(0, len(live) - keep):]} if keep else set()
    kept_names |= {n.name for n in live if n.name == current or n.name in protect}
    plan = GcPlan(doomed=[n.name for n in live if n.name not in kept_names])
    trees: dict[str, list[Node]] = {}
    for n in nodes:
        trees.setdefault(n.root, []).append(n)
    for root, members in trees.items():
        kept = [n for n in members if n.name in kept_names and not n.retired]
        if not kept:
            plan.drop_trees.append(root)
            plan.forget.extend(members)
            continue
        # the common ancestors of the kept versions: the lineage of their newest common ancestor C
        common = set(_seqs(kept[0].lineage))
        for n in kept[1:]:
            common &= set(_seqs(n.lineage))
        reach = [n.lineage for n in kept]
        for n in sorted(members, key=lambda m: m.seq):
            doomed = n.name not in kept_names
            if not n.floored and n.seq in common:
                plan.fold.append(n)
                if doomed:
                    plan.forget.append(n)
            elif doomed and not n.floored and not any(contains(lin, n.seq) for lin in reach):
                plan.dead.append(n)
                plan.forget.append(n)
            elif doomed and n.floored:
                plan.forget.append(n)
            elif doomed and not n.retired:
                plan.retire.append(n)
    return plan


def _seqs(lineage: Intervals) -> Iterable[int]:
    for lo, hi in lineage:
        yield from range(lo, hi + 1)
