"""Names and the Redis key layout (incremental versions: feature_store/lineage.py).

- ``{ns}:current``: the pointer readers follow; publish switches it with one SET.
- ``{ns}:versions``: sorted set of versions by creation time (oldest first); ``{ns}:ghosts``: deleted
  versions whose rows kept versions still read; ``{ns}:seq``: the version sequence counter.
- ``{ns}:v:{version}:meta``: hash with dims, dtype, counts, creation time, seq, root, parent,
  lineage, floored, retired.
- ``{ns}:v:{version}:live``: a random token, deleted FIRST by gc. Readers read it in the same
  atomic command as the vectors, so a present token proves every row that version reads was
  present at that instant and a changed token tells them the version was rebuilt.
- ``{ns}:v:{version}:w:u`` / ``:w:i``: list of the ids an incremental version wrote (gc's index).
- ``{ns}:t:{root}:u:{id}`` / ``:i:{id}``: the floor value of an id in the tree of ``root`` (a full
  version writes here); ``{ns}:t:{root}:hu:{id}`` / ``:hi:{id}``: hash seq -> value of the writes of
  incremental versions above the floor (b"" = forgotten); ``{ns}:t:{root}:su`` / ``:si``: set of the
  ids that have such writes (a read fetches only their hashes); ``{ns}:t:{root}:r:{seq}``: the same
  writes of version ``seq`` as one hash ``u:{id}`` / ``i:{id}`` -> value (the read path without a script
  HMGETs it for each version of a lineage above the floor).

Namespaces and versions are slugs, so they never contain glob characters (gc uses SCAN MATCH).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import numpy as np

from contracts.errors import ConfigError, DataError
from feature_store.base import Kind

_SLUG = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")
KIND_TAG: dict[str, str] = {"user": "u", "item": "i"}


def check_name(value: str, what: str) -> str:
    """A namespace or version: 1-64 of letters, digits, '.', '_', '-' (first a letter or digit)."""
    if not isinstance(value, str) or not _SLUG.match(value):
        raise DataError(f"{what} {value!r} is invalid: use 1-64 letters, digits, '.', '_' or '-'")
    return value


def check_kind(kind: str) -> Kind:
    if kind not in KIND_TAG:
        raise DataError(f"entity kind {kind!r} is invalid: use 'user' or 'item'")
    return kind  # type: ignore[return-value]


def check_dims(dims: dict[Kind, int]) -> dict[Kind, int]:
    """Validated {kind: positive int} (numpy integers accepted)."""
    out: dict[Kind, int] = {}
    for kind, dim in dims.items():
        check_kind(kind)
        if isinstance(dim, bool) or not isinstance(dim, int | np.integer) or dim <= 0:
            raise DataError(f"dimension of {kind} must be a positive integer, got {dim!r}")
        out[kind] = int(dim)
    return out


def check_namespace(ns: str) -> str:
    try:
        return check_name(ns, "namespace")
    except DataError as exc:
        raise ConfigError(exc.message + " (MAMDR_FEATURE_STORE__NAMESPACE)") from None


@dataclass(frozen=True)
class KeyLayout:
    namespace: str

    def __post_init__(self) -> None:
        check_namespace(self.namespace)

    @property
    def current(self) -> str:
        return f"{self.namespace}:current"

    @property
    def versions(self) -> str:
        return f"{self.namespace}:versions"

    def prefix(self, version: str) -> str:
        return f"{self.namespace}:v:{version}:"

    def meta(self, version: str) -> str:
        return f"{self.prefix(version)}meta"

    def live(self, version: str) -> str:
        return f"{self.prefix(version)}live"

    def version_glob(self, version: str) -> str:
        return f"{self.prefix(version)}*"

    @property
    def ghosts(self) -> str:
        return f"{self.namespace}:ghosts"

    @property
    def seq(self) -> str:
        return f"{self.namespace}:seq"

    def index(self, version: str, kind: Kind) -> str:
        return f"{self.prefix(version)}w:{KIND_TAG[kind]}"

    def floor_prefix(self, root: str, kind: Kind) -> str:
        return f"{self.namespace}:t:{root}:{KIND_TAG[kind]}:"

    def writes_prefix(self, root: str, kind: Kind) -> str:
        return f"{self.namespace}:t:{root}:h{KIND_TAG[kind]}:"

    def above_floor(self, root: str, kind: Kind) -> str:
        """Set of the ids of ``kind`` with writes above the floor (readers look only those up)."""
        return f"{self.namespace}:t:{root}:s{KIND_TAG[kind]}"

    def read_hash(self, root: str, seq: int) -> str:
        """Hash ``<kind tag>:<id>`` -> value of the writes of the version ``seq`` (readers HMGET it, one
        command per version above the floor instead of one per id)."""
        return f"{self.namespace}:t:{root}:r:{seq}"

    def tree_glob(self, root: str) -> str:
        return f"{self.namespace}:t:{root}:*"
