"""``mamdr domains ...`` and ``mamdr models ...`` against a sqlite registry."""

from __future__ import annotations

import getpass
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

from contracts.artifacts import manifest_digest, read_manifest
from domain_registry import open_registry
from domain_registry.base import ModelVersion
from mamdr.cli import main
from tests.fixtures.redis_server import free_port
from tests.support.fake_version import publish_fake


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
        user = getpass.getuser()
        assert reg.audit(10)[-1].actor == f"cli-local:{user}:alice"  # local-admin mode, recorded as such
        assert reg.audit(10)[0].actor == f"cli-local:{user}"
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
    """Exit codes: 2 usage, 3 not found or invalid, 4 backend unavailable."""
    code, out, err = run(capsys, *argv, "--registry", url)
    assert code == exit_code and out == ""
    assert err.count("\n") == 1 and err.startswith("mamdr: error:") and needle in err


def test_duplicate_and_bad_url(capsys: pytest.CaptureFixture[str], url: str) -> None:
    run(capsys, "domains", "add", "comedy", "--registry", url)
    code, _, err = run(capsys, "domains", "add", "comedy", "--registry", url)
    assert code == 3 and "already exists" in err
    code, _, err = run(capsys, "domains", "list", "--registry", "ftp://x")
    assert code == 2 and "sqlite://" in err
    code, _, err = run(capsys, "domains", "list", "--registry", f"redis://127.0.0.1:{free_port()}/0")
    assert code == 4 and "unreachable" in err


def test_model_commands(capsys: pytest.CaptureFixture[str], url: str, tmp_path: Path) -> None:
    with open_registry(url) as reg:
        for v in ("v1", "v2"):
            folder = publish_fake(tmp_path / "art", v)
            manifest = read_manifest(folder)
            reg.register_model(ModelVersion(id=v, created_at=time.time(), artifact_uri=f"file://{folder}",
                                            metrics={"auc": 0.75}, delta_checksums={
                                                "comedy": manifest.deltas["comedy"].sha256,
                                                "manifest.json": manifest_digest(folder)}))
    assert run(capsys, "models", "promote", "v1", "--registry", url)[0] == 0
    assert run(capsys, "models", "promote", "v2", "--registry", url)[0] == 0
    code, out, _ = run(capsys, "models", "list", "--registry", url)
    assert code == 0 and [r[:2] for r in rows(out)] == [["v2", "live"], ["v1", "superseded"]]
    code, out, _ = run(capsys, "models", "rollback", "--registry", url)
    assert code == 0 and rows(out)[0][:2] == ["v1", "live"]
    code, out, _ = run(capsys, "models", "show", "v2", "--registry", url)
    assert code == 0 and "rolled_back" in out and "auc" in out and "0.75" in out
    assert rows(out)[0][5] == "1", "the manifest digest is not counted as a delta"


@pytest.mark.parametrize("label", ["api:alice", "api", "API:x", "cli-local:bob", "a b"])
def test_cli_cannot_forge_an_api_actor(capsys: pytest.CaptureFixture[str], url: str, label: str) -> None:
    code, out, err = run(capsys, "domains", "add", "comedy", "--registry", url, "--actor", label)
    assert code != 0 and out == "" and "--actor" in err
    with open_registry(url) as reg:
        assert reg.change_counter() == 0


def test_promote_and_rollback_refuse_broken_versions(capsys: pytest.CaptureFixture[str], url: str,
                                                     tmp_path: Path) -> None:
    art = tmp_path / "art"
    with open_registry(url) as reg:
        for v in ("v1", "v2", "v3"):
            publish_fake(art, v, reg)
    assert run(capsys, "models", "promote", "v1", "--registry", url)[0] == 0
    (art / "v2" / "deltas" / "comedy.onnx").write_bytes(b"corrupt")
    code, out, err = run(capsys, "models", "promote", "v2", "--registry", url)
    assert code != 0 and out == "" and "cannot go live" in err and "sha256" in err
    assert run(capsys, "models", "promote", "v3", "--registry", url)[0] == 0
    shutil.rmtree(art / "v1")
    code, _, err = run(capsys, "models", "rollback", "--registry", url)
    assert code != 0 and "'v1' cannot go live" in err
    with open_registry(url) as reg:
        assert reg.live_model().id == "v3"  # type: ignore[union-attr]
        assert reg.audit(1)[0].actor.startswith("cli-local:")


def test_registry_modules_never_import_torch() -> None:
    code = ("import sys, domain_registry, mamdr.commands.registry, domain_registry.api, domain_registry.app, "
            "domain_registry.sqlite_store, domain_registry.redis_store, contracts.http; "
            "assert 'torch' not in sys.modules, 'torch imported'")
    subprocess.run([sys.executable, "-c", code], check=True, cwd=Path(__file__).resolve().parents[2])
