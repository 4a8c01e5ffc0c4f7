"""One backend-selection mechanism: every URL-picked family (stream, feature store, registry, artifacts) is a
``scheme -> "module:Class"`` table opened through ``contracts.urls.open_backend``."""

from __future__ import annotations

import pytest

import contracts.artifacts
import domain_registry
import feature_store
import stream
from contracts.errors import ConfigError
from contracts.urls import load_object, open_backend, parse_url

FAMILIES = {
    "stream": (stream.BACKENDS, stream.open_stream),
    "feature store": (feature_store.BACKENDS, feature_store.open_store),
    "registry": (domain_registry.BACKENDS, domain_registry.open_registry),
    "artifacts": (contracts.artifacts.BACKENDS, contracts.artifacts.open_artifacts),
}


@pytest.mark.parametrize("family", sorted(FAMILIES))
def test_every_row_names_a_class_with_the_uniform_constructor(family: str) -> None:
    backends, _ = FAMILIES[family]
    for scheme, spec in backends.items():
        cls = load_object(spec)
        assert isinstance(cls, type), f"{family} {scheme}:// → {spec} is not a class"
        assert callable(getattr(cls, "from_url", None)), f"{spec} has no from_url(parsed, settings)"


@pytest.mark.parametrize("family", sorted(FAMILIES))
@pytest.mark.parametrize("url", ["nosuch://x", "no-scheme-at-all"])
def test_unknown_scheme_names_the_allowed_ones(family: str, url: str) -> None:
    backends, opener = FAMILIES[family]
    with pytest.raises(ConfigError) as exc:
        opener(url)
    assert family in str(exc.value)
    for scheme in backends:
        assert f"{scheme}://" in str(exc.value)


def test_open_backend_builds_through_from_url_and_checks_the_type() -> None:
    class Thing:
        @classmethod
        def from_url(cls, parsed, settings):
            made = cls()
            made.parsed, made.settings = parsed, settings
            return made

    import sys
    import types

    mod = types.ModuleType("_backend_test_mod")
    mod.Thing, mod.Other = Thing, object  # type: ignore[attr-defined]
    sys.modules[mod.__name__] = mod
    try:
        got = open_backend("thing://a/b", {"thing": "_backend_test_mod:Thing"}, "thing", {"k": 1}, Thing)
        assert got.parsed == parse_url("thing://a/b", ("thing",), "thing") and got.settings == {"k": 1}
        with pytest.raises(TypeError):
            open_backend("thing://a", {"thing": "_backend_test_mod:Thing"}, "thing", None, int)
    finally:
        del sys.modules[mod.__name__]


def test_artifacts_file_url_is_a_folder(tmp_path) -> None:
    assert contracts.artifacts.open_artifacts(f"file://{tmp_path}").root == tmp_path
