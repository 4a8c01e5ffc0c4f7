"""The serving image holds only what serving imports: the base dependencies of pyproject.toml cover every
third-party import of the torch-free packages, and nothing else (no torch, no test-only or quickstart-only
package)."""

from __future__ import annotations

import ast
import re
import sys
import tomllib
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
SERVING_SIDE = ["contracts", "stream", "serving", "feature_store", "domain_registry"]
PLATFORM = {"contracts", "stream", "serving", "feature_store", "domain_registry", "trainer", "mamdr", "tests"}
# import name -> distribution, where they differ; fastapi brings starlette, uvicorn[standard] brings uvloop etc.
DISTRIBUTION = {"kafka": "kafka-python", "prometheus_client": "prometheus-client", "yaml": "pyyaml",
                "pydantic_settings": "pydantic-settings", "starlette": "fastapi", "google": "onnx",
                "confluent_kafka": "confluent-kafka"}
TEST_OR_TOOL_ONLY = {"pytest", "pytest-timeout", "ruff", "httpx", "pyyaml", "kubernetes-validate", "jsonschema",
                     "schemathesis",
                     "torch", "onnxscript", "scikit-learn", "matplotlib"}


def _project() -> dict:
    return tomllib.loads((REPO / "pyproject.toml").read_text())["project"]


def _name(requirement: str) -> str:
    return re.split(r"[<>=\[ ;]", requirement, maxsplit=1)[0].lower()


def _names(node: ast.AST) -> set[str]:
    if isinstance(node, ast.Import):
        return {a.name.split(".")[0] for a in node.names}
    if isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
        return {node.module.split(".")[0]}
    return set()


def _optional(tree: ast.AST) -> set[str]:
    """Imports inside ``try: ... except ImportError``: an optional extra's package, absent in the image."""
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Try) and any(isinstance(h.type, ast.Name) and h.type.id == "ImportError"
                                             for h in node.handlers):
            for child in node.body:
                found |= _names(child)
    return found


def _imports(package: str, optional: bool = False) -> set[str]:
    found: set[str] = set()
    for path in (REPO / package).rglob("*.py"):
        tree = ast.parse(path.read_text())
        if optional:
            found |= _optional(tree)
            continue
        every: set[str] = set()
        for node in ast.walk(tree):
            every |= _names(node)
        found |= every - _optional(tree)
    return found


def test_base_dependencies_hold_nothing_serving_does_not_need() -> None:
    base = {_name(r) for r in _project()["dependencies"]}
    assert not base & TEST_OR_TOOL_ONLY, f"move {base & TEST_OR_TOOL_ONLY} to an extra"


def test_every_serving_side_import_is_a_base_dependency() -> None:
    base = {_name(r) for r in _project()["dependencies"]}
    for package in SERVING_SIDE:
        third_party = _imports(package) - PLATFORM - set(sys.stdlib_module_names) - {"__future__"}
        needed = {DISTRIBUTION.get(m, m).lower().replace("_", "-") for m in third_party}
        assert needed <= base, f"{package} imports {needed - base}, which the serving image lacks"


def test_optional_serving_side_imports_are_an_extra_not_the_base() -> None:
    base = {_name(r) for r in _project()["dependencies"]}
    extras = {_name(r) for k, v in _project()["optional-dependencies"].items() if k != "dev" for r in v}
    optional = {DISTRIBUTION.get(m, m).lower().replace("_", "-") for p in SERVING_SIDE for m in _imports(p, True)}
    optional -= PLATFORM | set(sys.stdlib_module_names)
    assert "confluent-kafka" in optional  # the optional Kafka consumer (stream/kafka_confluent.py)
    assert "confluent-kafka" not in base and optional - base <= extras, optional - base - extras


def test_test_and_trainer_packages_live_in_their_extras() -> None:
    extras = {k: {_name(r) for r in v} for k, v in _project()["optional-dependencies"].items()}
    assert {"torch", "httpx"} <= extras["trainer"]
    assert {"pytest", "httpx", "pyyaml"} <= extras["dev"]
