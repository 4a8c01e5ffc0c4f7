"""``open_registry``: backend by URL scheme, clear errors for bad URLs and files."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from contracts.errors import BackendUnavailable, ConfigError, DataError
from contracts.settings import RegistrySettings
from domain_registry import open_registry
from domain_registry.redis_store import RedisRegistry
from domain_registry.sqlite_store import SqliteRegistry


@pytest.mark.parametrize(("url", "needle"), [
    ("registry.db", "no scheme"),
    ("postgres://x/y", "not supported"),
    ("sqlite://", "no path"),
    ("redis://127.0.0.1:notaport/0", "not a valid redis URL"),
])
def test_bad_urls_are_config_errors(url: str, needle: str) -> None:
    with pytest.raises(ConfigError, match=needle):
        open_registry(url)


def test_scheme_picks_the_backend(tmp_path: Path) -> None:
    nested = tmp_path / "a" / "b" / "registry.db"
    with open_registry(f"sqlite://{nested}") as reg:
        assert isinstance(reg, SqliteRegistry)
        reg.create_domain("comedy")
    assert nested.is_file()
    reg2 = open_registry("redis://127.0.0.1:6390/2")  # connects lazily: no server needed to build it
    assert isinstance(reg2, RedisRegistry)
    reg2.close()
    settings = RegistrySettings(url=f"sqlite://{nested}")
    with open_registry(None, settings) as reg3:
        assert reg3.get_domain("comedy").id == "comedy"


def test_a_file_that_is_not_a_database_is_a_config_error(tmp_path: Path) -> None:
    bogus = tmp_path / "registry.db"
    bogus.write_bytes(b"this is not sqlite" * 100)
    with pytest.raises(ConfigError, match="not a usable registry database"):
        open_registry(f"sqlite://{bogus}")


def test_a_locked_file_at_open_is_unavailable_not_a_config_error(tmp_path: Path) -> None:
    path = tmp_path / "registry.db"
    SqliteRegistry(path).close()
    blocker = sqlite3.connect(str(path), isolation_level=None)
    blocker.execute("BEGIN EXCLUSIVE")
    try:
        with pytest.raises(BackendUnavailable):
            SqliteRegistry(path, busy_timeout_s=0.1)
    finally:
        blocker.execute("ROLLBACK")
        blocker.close()


@pytest.mark.parametrize("dr_k", [0, -1, 2.5, "3", True])
def test_dr_k_must_be_a_positive_integer(tmp_path: Path, dr_k: object) -> None:
    with open_registry(f"sqlite://{tmp_path}/r.db") as reg:
        with pytest.raises(DataError, match="dr_k"):
            reg.create_domain("comedy", settings={"dr_k": dr_k})
        reg.create_domain("comedy", settings={"dr_k": 3})
        with pytest.raises(DataError, match="dr_k"):
            reg.update_domain("comedy", settings={"dr_k": dr_k})
        assert reg.update_domain("comedy", settings={"dr_k": None}).settings == {}
