"""Name → class tables (the model zoo, the learning frameworks): one typed helper for both.

A class registers once under its ``name`` attribute; registering a name twice is an error, and asking
for an unknown name raises ``ConfigError`` listing the known ones. A catalog reads like a mapping
(``name in MODELS``, ``sorted(MODELS)``, ``MODELS[name]``).
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Generic, TypeVar

from contracts.errors import ConfigError

T = TypeVar("T")


class Catalog(Mapping[str, type[T]], Generic[T]):
    def __init__(self, what: str) -> None:
        self.what = what
        self._classes: dict[str, type[T]] = {}

    def register(self, cls: type[T]) -> type[T]:
        """Add ``cls`` under ``cls.name`` (usable as a decorator). ``ValueError`` on a second registration."""
        name = getattr(cls, "name", None)
        if not isinstance(name, str) or not name:
            raise ValueError(f"{cls.__name__} has no name to register as a {self.what}")
        if name in self._classes:
            raise ValueError(f"{self.what} {name!r} registered twice "
                             f"({self._classes[name].__qualname__} and {cls.__qualname__})")
        self._classes[name] = cls
        return cls

    def check(self, name: str, hint: str = "") -> str:
        """``name`` itself, or ``ConfigError`` naming every registered choice."""
        if name not in self._classes:
            raise ConfigError(f"unknown {self.what} {name!r}; choose from {', '.join(sorted(self._classes))}{hint}")
        return name

    def get_class(self, name: str) -> type[T]:
        return self._classes[self.check(name)]

    def __getitem__(self, name: str) -> type[T]:
        return self._classes[name]

    def __iter__(self) -> Iterator[str]:
        return iter(self._classes)

    def __len__(self) -> int:
        return len(self._classes)

    def __repr__(self) -> str:
        return f"Catalog({self.what!r}: {', '.join(self._classes)})"
