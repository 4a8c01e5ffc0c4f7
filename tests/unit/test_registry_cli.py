"""``mamdr domains ...`` and ``mamdr models ...`` against a sqlite registry."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import pytest

from domain_registry import open_registry
from domain_registry.base import ModelVersion
from mamdr.cli import main


@pytest.fixture()
def url(tmp_path: Path) -> str:
    """An existing (empty) registry: only ``domains add`` may create one."""
    with open_registry(f"sqlite://{tmp_path}/registry.db"):
        pass
    return f"sqlite://{tmp_path}/registry.db"


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def rows(out: str) -> list[list[str]]:
    """Table body (after the header and the dashes line), split on runs of two spaces."""
    lines = out.strip().splitlines()
    assert set(lines[1].replace(" ", "")) == {"-"}, out
    return [[c.strip() for c in line.split("  ") if c.strip()] for line in lines[2:]]


def test_domain_commands(capsys: pytest.CaptureFixture[str], url: str) -> None:
    code, out, _ = run(capsys, "domains", "add", "comedy", "--name", "Comedy films", "--set", "dr_k=3",
                       "--set", "note=hi", "--registry", url, "--actor", "alice")
    assert code == 0 and "Comedy films" in out and '{"dr_k": 3, "note": "hi"}' in out
    run(capsys, "domains", "add", "action", "--registry", url)
    code, out, _ = run(capsys, "domains", "list", "--registry", url)
    assert code == 0 and [r[:3] for r in rows(out)] == [["action", "action", "active"],
                                                       ["comedy", "Comedy films", "active"]]
    assert run(capsys, "domains", "pause", "comedy", "--registry", url)[0] == 0
    code, out, _ = run(capsys, "domains", "list", "--status", "paused", "--registry", url)
    assert [r[0] for r in rows(out)] == ["comedy"]
    assert run(capsys, "domains", "resume", "comedy", "--registry", url)[0] == 0
    code, out, _ = run(capsys, "domains", "retire", "comedy", "--registry", url)
    assert code == 0 and "retired" in out
    code, out, _ = run(capsys, "domains", "show", "comedy", "--registry", url)
    assert code == 0 and rows(out)[0][2] == "retired"
    with open_registry(url) as reg:
        assert reg.audit(10)[-1].actor == "alice"
        assert [e.action for e in reg.audit(10)][:3] == ["domain.retire", "domain.update", "domain.update"]


@pytest.mark.parametrize(("argv", "needle", "exit_code"), [
    (["domains", "add", "Bad Id"], "invalid domain id", 3),
    (["domains", "show", "nope"], "does not exist", 3),
    (["domains", "add", "x", "--set", "novalue"], "KEY=VALUE", 2),
    (["models", "promote", "v9"], "not registered", 3),
    (["models", "rollback"], "no live model", 3),
])
def test_errors_are_one_line(capsys: pytest.CaptureFixture[str], url: str, argv: list[str], needle: str,
                             exit_code: int) -> None:
    code, out, err = run(capsys, *argv, "--registry", url)
    assert code == exit_code and out == ""
    assert err.count("\n") == 1 and err.startswith("mamdr: error:") and needle in err


def test_duplicate_and_bad_url(capsys: pytest.CaptureFixture[str], url: str) -> None:
    run(capsys, "domains", "add", "comedy", "--registry", url)
    code, _, err = run(capsys, "domains", "add", "comedy", "--registry", url)
    assert code == 3 and "already exists" in err
    code, _, err = run(capsys, "domains", "list", "--registry", "ftp://x")
    assert code == 2 and "sqlite://" in err


def test_model_commands(capsys: pytest.CaptureFixture[str], url: str) -> None:
    with open_registry(url) as reg:
        for v in ("v1", "v2"):
            reg.register_model(ModelVersion(id=v, created_at=time.time(), artifact_uri=f"file:///a/{v}",
                                            metrics={"auc": 0.75}, delta_checksums={"comedy": "ab"}))
    assert run(capsys, "models", "promote", "v1", "--registry", url)[0] == 0
    assert run(capsys, "models", "promote", "v2", "--registry", url)[0] == 0
    code, out, _ = run(capsys, "models", "list", "--registry", url)
    assert code == 0 and [r[:2] for r in rows(out)] == [["v2", "live"], ["v1", "superseded"]]
    code, out, _ = run(capsys, "models", "rollback", "--registry", url)
    assert code == 0 and rows(out)[0][:2] == ["v1", "live"]
    code, out, _ = run(capsys, "models", "show", "v2", "--registry", url)
    assert code == 0 and "rolled_back" in out and "auc" in out and "0.75" in out


def test_registry_modules_never_import_torch() -> None:
    code = ("import sys, domain_registry, mamdr.commands.registry, domain_registry.api, domain_registry.app, "
            "domain_registry.sqlite_store, domain_registry.redis_store, contracts.http; "
            "assert 'torch' not in sys.modules, 'torch imported'")
    subprocess.run([sys.executable, "-c", code], check=True, cwd=Path(__file__).resolve().parents[2])
