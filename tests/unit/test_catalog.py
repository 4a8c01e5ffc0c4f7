"""trainer.catalog.Catalog: the one name → class table of models and frameworks (torch-free to test)."""

from __future__ import annotations

import pytest

from contracts.errors import ConfigError
from trainer.catalog import Catalog


class Base:
    name = "base"


def make(name: str) -> type[Base]:
    return type(f"C_{name}", (Base,), {"name": name})


def test_register_reads_like_a_mapping() -> None:
    cat: Catalog[Base] = Catalog("widget")
    a, b = cat.register(make("a")), cat.register(make("b"))
    assert dict(cat) == {"a": a, "b": b} and "a" in cat and len(cat) == 2 and sorted(cat) == ["a", "b"]
    assert cat.get_class("b") is b and cat.check("a") == "a"


def test_double_registration_is_an_error() -> None:
    cat: Catalog[Base] = Catalog("widget")
    cat.register(make("a"))
    with pytest.raises(ValueError, match="widget 'a' registered twice"):
        cat.register(make("a"))


def test_unknown_name_lists_the_choices() -> None:
    cat: Catalog[Base] = Catalog("widget")
    cat.register(make("b"))
    cat.register(make("a"))
    with pytest.raises(ConfigError, match=r"unknown widget 'z'; choose from a, b \(hint\)"):
        cat.check("z", hint=" (hint)")


def test_a_class_without_a_name_is_refused() -> None:
    with pytest.raises(ValueError, match="no name"):
        Catalog("widget").register(type("Nameless", (), {}))
