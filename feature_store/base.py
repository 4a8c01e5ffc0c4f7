"""The embedding-store interface that trainer and serving share. Backends: one file each.

Embeddings live in versioned namespaces: a new set is written beside the live one under version V,
then ``publish(V)`` switches one pointer so readers see all of V at once; ``gc(keep)`` drops old ones.
Entities are ``"user"`` or ``"item"``; ids are strings; vectors have a declared dimension.

A version declared with a ``parent`` is *incremental*: it holds only the rows it wrote or forgot,
and reads it every other id as its parent does (the newest write on its lineage; lineage.py), so a
version costs what changed, not the table. Every backend keeps these semantics and gc never
deletes a row a kept version reads through its ancestors.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Collection, Sequence
from dataclasses import dataclass, field
from typing import Literal

import numpy as np

Kind = Literal["user", "item"]
KINDS: tuple[Kind, ...] = ("user", "item")


@dataclass
class Lookup:
    """The result of the read for one request: one user plus N items.

    Missing ids are cold starts, reported (never raised): ``user`` is None when the user is
    unknown, and rows of ``items`` for unknown ids are zero with their positions in
    ``missing_items``. Callers apply the documented fallback.
    """

    version: str
    user: np.ndarray | None  # [Du] float32
    items: np.ndarray  # [N, Di] float32
    missing_items: list[int] = field(default_factory=list)

    @property
    def user_missing(self) -> bool:
        return self.user is None


@dataclass(frozen=True)
class VersionInfo:
    """What a version holds: declared dims, wire dtype, vectors per kind, creation time (epoch s).

    ``counts`` are the vectors the version itself wrote (for an incremental version, the changed rows).
    memory:// and file:// count distinct ids; redis:// counts rows written (an id written twice
    counts twice), which is exact for the usual write-once versions.
    """

    version: str
    dims: dict[Kind, int]
    dtype: str
    counts: dict[Kind, int]
    created: float
    parent: str | None = None  # incremental versions: the version it reads unwritten ids from


class EmbeddingStore(ABC):
    """Abstract store. Every method may raise ``contracts.errors.BackendUnavailable``."""

    @abstractmethod
    def write(self, version: str, kind: Kind, ids: Sequence[str], vectors: np.ndarray) -> int:
        """Write vectors [n, dim] under ``version`` (not yet visible to readers). Returns n written.

        Refuses (``DataError``) a dimension other than the declared one and non-finite values.
        """

    @abstractmethod
    def declare(self, version: str, dims: dict[Kind, int], parent: str | None = None) -> None:
        """Declare the vector dimension of each kind for a version before writing it.

        Declaring again merges kinds; a different dimension for an already declared kind is a
        ``Conflict``. Writing into the live version is refused (write a new one and publish it).
        With ``parent`` (an existing version) the version is incremental: ids it does not write are
        read as ``parent`` reads them; its dimensions and dtype are the parent's (``Conflict`` for
        others, or for a version already declared with another parent).
        """

    @abstractmethod
    def forget(self, version: str, kind: Kind, ids: Sequence[str]) -> int:
        """Make ``ids`` missing in ``version`` (an incremental version's tombstones). Returns n."""

    @abstractmethod
    def publish(self, version: str) -> None:
        """Make ``version`` current in one atomic pointer switch."""

    @abstractmethod
    def current_version(self) -> str | None:
        """The live version, or None before the first publish."""

    @abstractmethod
    def dims(self, version: str | None = None) -> dict[Kind, int]:
        """Declared dimensions of a version (default: the current one)."""

    @abstractmethod
    def lookup(self, user_id: str, item_ids: Sequence[str], version: str | None = None) -> Lookup:
        """One user and up to ~1,000 items from one version (default: current), in one round trip."""

    @abstractmethod
    def get_many(
        self, kind: Kind, ids: Sequence[str], version: str | None = None
    ) -> tuple[np.ndarray, list[int]]:
        """Vectors [n, dim] for ids of one kind and the positions that were missing."""

    @abstractmethod
    def versions(self) -> list[str]:
        """Versions present (oldest first)."""

    @abstractmethod
    def gc(self, keep: int, protect: Collection[str] = ()) -> list[str]:
        """Delete all but the newest ``keep`` versions (never the current one, nor ``protect``).

        Returns the deleted versions. ``gc(0, protect=kept)`` deletes exactly what is not in
        ``kept`` (model retention: the feature-store versions that kept manifests name).
        """

    @abstractmethod
    def describe(self, version: str | None = None) -> VersionInfo:
        """Metadata of a version (default: the current one); ``NotFound`` if absent."""

    @abstractmethod
    def health(self) -> bool:
        """True when the backend answers."""

    def close(self) -> None:  # noqa: B027 - optional hook
        """Release connections."""
