"""The house rules of the layout (docs/architecture.md), checked on the source with ``ast`` (nothing is imported).

Contracts at the bottom, the composition root (``mamdr``) at the top, arrows only downward; no module that
only tests use; no comment or docstring pointing at a document that is not in the repository.
Every import counts, including the ones inside functions (lazy imports are still dependencies), and so do
the strings that name a module for a lazy import: ``"pkg.module:Class"`` rows of a backend table and
dotted module names (``mamdr.cli``'s command list, ``importlib.resources.files("trainer.datasets")``).
"""

from __future__ import annotations

import ast
import io
import re
import subprocess
import tokenize
from collections import defaultdict
from functools import cache
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PLATFORM = ("contracts", "stream", "feature_store", "domain_registry", "trainer", "serving", "mamdr")
COMPOSITION_ROOT = "mamdr"
# May import the composition root: the root itself and what drives it from outside.
ABOVE_THE_ROOT = ("mamdr", "tests", "bench")

# package -> platform packages it must never import
FORBIDDEN = {
    "contracts": set(PLATFORM) - {"contracts"},
    "stream": {"trainer", "serving", "mamdr"},
    "feature_store": {"trainer", "serving", "mamdr"},
    "domain_registry": {"trainer", "serving", "mamdr"},
    "serving": {"trainer", "mamdr"},
    "trainer": {"serving", "mamdr"},
}

# Modules nothing in the platform imports on purpose: started from outside. Each must be named in a
# document (README, docs/, a package README, pyproject.toml) so the next engineer can find how it runs.
ENTRY_POINTS = {
    "mamdr.cli": "the `mamdr` console script (pyproject.toml [project.scripts])",
    "mamdr.settings_doc": "`python -m mamdr.settings_doc --write README.md` regenerates the settings table",
    "domain_registry.app": "`uvicorn --factory domain_registry.app:create_admin_app`: the registry API alone",
}

_SPEC = re.compile(r"^([A-Za-z_]\w*(?:\.\w+)+):[A-Za-z_]\w*$")
_MD = re.compile(r"(?<![\w./-])((?:\.{1,2}/)?[\w./-]*\w\.md)\b")


@cache
def py_files() -> tuple[Path, ...]:
    out = subprocess.run(["git", "ls-files", "-co", "--exclude-standard", "*.py"], cwd=ROOT,
                         capture_output=True, text=True, check=True).stdout.split()
    return tuple(Path(p) for p in out if (ROOT / p).exists())


def module_name(rel: Path) -> str:
    parts = list(rel.with_suffix("").parts)
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts)


@cache
def modules() -> dict[str, Path]:
    return {module_name(p): p for p in py_files()}


def _imports(rel: Path) -> set[str]:
    """Every module ``rel`` names: import statements anywhere in it, plus module-naming strings."""
    me = module_name(rel)
    package = me if rel.name == "__init__.py" else me.rpartition(".")[0]
    known = modules()
    found: set[str] = set()
    for node in ast.walk(ast.parse((ROOT / rel).read_text(), str(rel))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parts = package.split(".")[: len(package.split(".")) - (node.level - 1)]
                base = ".".join([*parts, base] if base else parts)
            found.add(base)
            found.update(f"{base}.{a.name}" for a in node.names if f"{base}.{a.name}" in known)
        elif isinstance(node, ast.Constant) and isinstance(node.value, str):
            spec = _SPEC.match(node.value)
            if spec:
                found.add(spec.group(1))
            elif "." in node.value and node.value in known:  # a bare "mamdr" is a name, not an import
                found.add(node.value)
    found.discard(me)
    return found


@cache
def import_graph() -> dict[str, frozenset[str]]:
    return {module_name(p): frozenset(_imports(p)) for p in py_files()}


def top(name: str) -> str:
    return name.split(".")[0]


def package_edges() -> dict[str, dict[str, list[str]]]:
    """{importing package: {imported platform package: [example 'a.b -> c.d', ...]}}."""
    edges: dict[str, dict[str, list[str]]] = defaultdict(lambda: defaultdict(list))
    for src, targets in import_graph().items():
        for t in targets:
            if top(t) in PLATFORM and top(t) != top(src):
                edges[top(src)][top(t)].append(f"{src} -> {t}")
    return edges


@pytest.mark.parametrize("package", sorted(FORBIDDEN))
def test_package_imports_only_downward(package: str) -> None:
    bad = {t: sorted(why) for t, why in package_edges()[package].items() if t in FORBIDDEN[package]}
    assert not bad, f"{package}/ must not import {sorted(FORBIDDEN[package])}; found {bad}"


def test_nothing_below_the_composition_root_imports_it() -> None:
    bad = sorted(why for src, targets in package_edges().items() if src not in ABOVE_THE_ROOT
                 for why in targets.get(COMPOSITION_ROOT, []))
    assert not bad, f"only {ABOVE_THE_ROOT} may import {COMPOSITION_ROOT}/ (move what they need down): {bad}"


def test_no_import_cycles_between_packages() -> None:
    graph = {p: set(package_edges()[p]) & set(PLATFORM) for p in PLATFORM}

    def reaches(start: str, goal: str) -> bool:
        seen, todo = set(), [start]
        while todo:
            node = todo.pop()
            for nxt in graph[node]:
                if nxt == goal:
                    return True
                if nxt not in seen:
                    seen.add(nxt)
                    todo.append(nxt)
        return False

    cycles = sorted({tuple(sorted((a, b))) for a in PLATFORM for b in graph[a] if reaches(b, a)})
    assert not cycles, f"packages that import each other (directly or through others): {cycles}"


def test_no_platform_module_is_used_only_by_tests() -> None:
    users: dict[str, set[str]] = defaultdict(set)
    for src, targets in import_graph().items():
        for t in targets:
            parts = t.split(".")
            for i in range(1, len(parts) + 1):  # importing a.b.c runs a and a.b too
                users[".".join(parts[:i])].add(src)
    unused = []
    for name in modules():
        if top(name) not in PLATFORM or name in PLATFORM or name in ENTRY_POINTS:
            continue
        if not any(top(u) != "tests" for u in users[name] - {name}):
            unused.append(f"{name} (used by {sorted(users[name]) or 'nothing'})")
    assert not unused, ("modules no platform code, bench or command uses: move test helpers to tests/support, "
                        f"delete dead code, or list a real entry point in ENTRY_POINTS: {unused}")


def test_entry_points_are_real_and_documented() -> None:
    docs = [ROOT / "README.md", ROOT / "pyproject.toml", *ROOT.glob("docs/*.md"), *ROOT.glob("*/README.md")]
    text = "\n".join(p.read_text() for p in docs if p.exists())
    for name in ENTRY_POINTS:
        assert name in modules(), f"ENTRY_POINTS names {name}, which is not a module any more"
        assert name in text, f"{name} is an entry point ({ENTRY_POINTS[name]}) but no document says so"


def _prose(rel: Path) -> list[tuple[int, str]]:
    """Comments and docstrings of a file, with their line numbers (where citations are written)."""
    source = (ROOT / rel).read_text()
    found = [(tok.start[0], tok.string) for tok in tokenize.generate_tokens(io.StringIO(source).readline)
             if tok.type == tokenize.COMMENT]
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Module | ast.ClassDef | ast.FunctionDef | ast.AsyncFunctionDef):
            doc = ast.get_docstring(node, clean=False)
            if doc and node.body:
                found.append((node.body[0].lineno, doc))
    return found


def cited_documents_missing(rel: Path) -> list[str]:
    missing = []
    for line, text in _prose(rel):
        for cited in _MD.findall(text):
            if cited.startswith("/"):
                continue  # an output file (e.g. /tmp/tables.md), not a citation
            here = [ROOT / cited, ROOT / rel.parent / cited]
            if not any(p.is_file() for p in here):
                missing.append(f"{rel}:{line}: {cited}")
    return missing


def test_every_cited_document_is_in_the_repository() -> None:
    missing = [m for rel in py_files() for m in cited_documents_missing(rel)]
    assert not missing, ("cite documents by their path in the repository (docs/..., README.md); "
                         f"these are not there: {missing}")


def test_the_checks_see_what_they_should() -> None:
    """Guards against a silently vacuous test: known edges and citations are found."""
    assert "contracts.urls" in import_graph()["stream"]
    assert "stream.kafka_stream" in import_graph()["stream"]  # through the backend table string
    assert "mamdr.commands.serve" in import_graph()["mamdr.cli"]  # through the command list
    assert package_edges()["serving"]["contracts"]
    assert cited_documents_missing(Path("tests/unit/test_layout.py")) == []
    assert _MD.findall("see docs/nowhere.md and README.md.") == ["docs/nowhere.md", "README.md"]


def test_test_helpers_live_in_tests_support() -> None:
    """Suites hold tests; shared helpers go to tests/support (fixtures that start servers to tests/fixtures)."""
    stray = [str(p) for p in py_files() if p.parts[0] == "tests" and len(p.parts) > 2
             and p.parts[1] in ("unit", "integration", "e2e")
             and not (p.name.startswith("test_") or p.name in ("__init__.py", "conftest.py"))]
    assert not stray, f"move these helpers to tests/support/: {stray}"
