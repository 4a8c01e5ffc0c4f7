"""Settings that do what they say: MAMDR_HOME moves the default locations, MAMDR_LOG_LEVEL is read,
values are bounded, and the CLI turns a bad value into one line and exit code 2."""

from __future__ import annotations

import logging
import os

import pytest
from pydantic import ValidationError

from contracts.errors import ConfigError
from contracts.settings import Settings, admin_token_problem, load_settings
from mamdr.cli import main


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in [n for n in os.environ if n.startswith("MAMDR_")]:
        monkeypatch.delenv(name)


def test_home_moves_every_default_location(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MAMDR_HOME", "/srv/mamdr")
    monkeypatch.setenv("MAMDR_FEATURE_STORE__URL", "redis://r:6379/0")  # explicit wins
    s = Settings()
    assert s.artifacts_url == "file:///srv/mamdr/artifacts"
    assert s.registry.url == "sqlite:///srv/mamdr/registry.db"
    assert s.stream.url == "file:///srv/mamdr/stream/clicks"
    assert s.feature_store.url == "redis://r:6379/0"
    assert load_settings(**{"serving.port": 9000}).registry.url == "sqlite:///srv/mamdr/registry.db"


def test_log_level_is_read_and_checked(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MAMDR_LOG_LEVEL", "debug")
    assert Settings().log_level == "DEBUG"
    monkeypatch.setenv("MAMDR_LOG_LEVEL", "LOUD")
    with pytest.raises(ValidationError):
        Settings()


@pytest.mark.parametrize(("key", "value"), [
    ("serving.max_body_bytes", 10), ("serving.max_body_bytes", 1 << 30), ("serving.port", 70000),
    ("serving.reload_poll_s", 0), ("serving.max_concurrency", 0), ("feature_store.max_connections", 0),
    ("feature_store.dtype", "int8"), ("trainer.lr", -1.0), ("trainer.batch_size", 0),
])
def test_values_are_bounded(key: str, value: object) -> None:
    with pytest.raises(ConfigError, match=key.replace(".", r"\.")):  # one line naming the setting
        load_settings(**{key: value})


def test_no_default_admin_token() -> None:
    assert Settings().registry.admin_token is None
    assert admin_token_problem(Settings().registry.admin_token) == "no admin token is configured"


def test_cli_reads_the_log_level_and_reports_bad_settings(monkeypatch: pytest.MonkeyPatch,
                                                          capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setenv("MAMDR_SERVING__MAX_BODY_BYTES", "1")
    monkeypatch.setenv("MAMDR_LOG_LEVEL", "WARNING")
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    root.handlers = []  # basicConfig only configures an unconfigured root logger
    try:
        assert main(["serve", "--port", "1"]) == 2
        assert root.level == logging.WARNING
    finally:
        root.handlers, root.level = handlers, level
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "serving.max_body_bytes" in err and "1024" in err
