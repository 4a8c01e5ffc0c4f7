"""Every setting the README documents does something, bad values are one-line errors, and the CLI's exit code
says what kind of failure it was (2 usage/config, 3 not found or invalid data, 4 backend unavailable)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from contracts.errors import ConfigError
from contracts.settings import Settings, load_settings

REPO = Path(__file__).resolve().parents[2]


def mamdr(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "mamdr.cli", *args], capture_output=True, text=True, timeout=120,
                          cwd=REPO, env={**os.environ, **(env or {})})


def test_mamdr_home_moves_every_default_location(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("MAMDR_HOME", str(tmp_path))
    monkeypatch.setenv("MAMDR_FEATURE_STORE__URL", "memory://kept")  # set explicitly: left alone
    s = Settings()
    assert s.artifacts_url == f"file://{tmp_path}/artifacts"
    assert s.registry.url == f"sqlite://{tmp_path}/registry.db"
    assert s.stream.url == f"file://{tmp_path}/stream/clicks"
    assert s.feature_store.url == "memory://kept"


def test_bad_values_are_one_line_config_errors_naming_the_variable() -> None:
    with pytest.raises(ConfigError, match=r"trainer\.round_events \(MAMDR_TRAINER__ROUND_EVENTS\)"):
        load_settings(**{"trainer.round_events": -5})
    with pytest.raises(ConfigError, match=r"feature_store\.dtype"):
        load_settings(**{"feature_store.dtype": "float64"})


def test_log_level_comes_from_the_environment_unless_the_flag_says_otherwise(tmp_path: Path) -> None:
    probe = ("import logging, sys; from mamdr.cli import main; "
             f"main(sys.argv[1:] + ['models', 'list', '--registry', 'sqlite://{tmp_path}/none.db']); "
             "print(logging.getLevelName(logging.getLogger().level))")
    run = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=120, cwd=REPO,
                         env={**os.environ, "MAMDR_LOG_LEVEL": "debug"})
    assert run.stdout.strip().splitlines()[-1] == "DEBUG", run.stderr
    run = subprocess.run([sys.executable, "-c", probe, "--log-level", "warning"], capture_output=True, text=True,
                         timeout=120, cwd=REPO, env={**os.environ, "MAMDR_LOG_LEVEL": "debug"})
    assert run.stdout.strip().splitlines()[-1] == "WARNING", run.stderr
    loud = mamdr("--log-level", "LOUD", "models", "list")
    assert loud.returncode == 2 and "invalid choice" in loud.stderr
    env_loud = mamdr("models", "list", env={"MAMDR_LOG_LEVEL": "LOUD"})
    assert env_loud.returncode == 2 and "MAMDR_LOG_LEVEL" in env_loud.stderr


def test_registry_poll_interval_paces_the_trainers_domain_reads(tmp_path: Path) -> None:
    from contracts.settings import StreamSettings
    from domain_registry import open_registry
    from feature_store import open_store
    from stream import open_stream
    from trainer.service.loop import ContinualTrainer

    def reads(poll_s: float) -> int:
        settings = load_settings(**{"registry.poll_interval_s": poll_s})
        registry = open_registry(f"sqlite://{tmp_path}/r{poll_s}.db")
        url = f"file://{tmp_path}/s{poll_s}/clicks"
        trainer = ContinualTrainer(settings, stream=open_stream(url, StreamSettings(url=url, create_topics=True)),
                                   store=open_store(f"memory://p{poll_s}"), registry=registry, artifacts=tmp_path)
        calls = 0
        real = registry.change_counter

        def counted() -> int:
            nonlocal calls
            calls += 1
            return real()

        registry.change_counter = counted  # type: ignore[method-assign]
        for _ in range(5):
            trainer._refresh_domains()
        trainer._refresh_domains(now=True)  # an event of an unknown domain asks at once
        return calls

    assert reads(3600.0) == 2
    assert reads(1e-9) == 6


@pytest.mark.parametrize(("args", "code", "text"), [
    (("models", "list", "--limit", "-5"), 2, "must be >= 1"),
    (("trainer", "run", "--round-events", "-5", "--registry", "sqlite:///nonexistent/r.db"), 2,
     "MAMDR_TRAINER__ROUND_EVENTS"),
    (("stream", "tail", "--stream", "kafka://a:9092,b:port/clicks"), 2, "HOST:PORT"),
    (("models", "list", "--registry", "redis://127.0.0.1:9/0"), 4, "mamdr: error:"),
])
def test_each_error_class_has_its_exit_code(args: tuple[str, ...], code: int, text: str) -> None:
    run = mamdr(*args)
    assert run.returncode == code, run.stderr
    assert text in run.stderr
    assert "Traceback" not in run.stderr


def test_read_commands_never_create_a_store(tmp_path: Path) -> None:
    missing_db = tmp_path / "typo" / "registry.db"
    for args in (("models", "list", "--registry", f"sqlite://{missing_db}"),
                 ("domains", "list", "--registry", f"sqlite://{missing_db}"),
                 ("models", "rollback", "--registry", f"sqlite://{missing_db}"),
                 ("features", "info", "--feature-store", f"file://{tmp_path}/typo-store")):
        run = mamdr(*args)
        assert run.returncode == 3, (args, run.stderr)
        assert "read commands never create" in run.stderr or "no " in run.stderr
    assert not (tmp_path / "typo").exists() and not (tmp_path / "typo-store").exists()


def test_dr_data_history_trains_theta_i_on_the_domains_reservoir_too(tmp_path: Path) -> None:
    import numpy as np

    from contracts.settings import StreamSettings
    from domain_registry import open_registry
    from feature_store import open_store
    from stream import open_stream
    from trainer.data.base import Split
    from trainer.service.loop import ContinualTrainer

    url = f"file://{tmp_path}/s/clicks"
    trainer = ContinualTrainer(load_settings(**{"trainer.dr_data": "history"}),
                               stream=open_stream(url, StreamSettings(url=url, create_topics=True)),
                               store=open_store("memory://dr-data"), registry=open_registry(f"sqlite://{tmp_path}/r.db"),
                               artifacts=tmp_path)
    ones = np.ones(3, dtype=np.int64)
    trainer.buffers.add(0, ones, ones, np.ones(3, dtype=np.float32))
    trainer.buffers.retire(trainer.buffers.take_fresh())  # three old rows in domain 0's reservoir
    round_rows = {0: Split(user=np.zeros(2, dtype=np.int64), item=np.zeros(2, dtype=np.int64),
                           label=np.zeros(2, dtype=np.float32))}
    history = trainer._history(round_rows)
    assert len(history[0]) == 5 and history[0].user.tolist() == [0, 0, 1, 1, 1]


def test_dr_steps_theta_i_with_sgd_at_its_own_rate_unless_told_otherwise() -> None:
    """``trainer.dr_optimizer``/``dr_lr``: SGD at 0.3 by default; Adam at ``trainer.lr``; ``dr_lr`` wins."""
    assert load_settings().trainer.dr_optimizer == "sgd" and load_settings().trainer.dr_step == 0.3
    adam = load_settings(**{"trainer.dr_optimizer": "adam", "trainer.lr": 2e-3}).trainer
    assert adam.dr_step == 2e-3
    assert load_settings(**{"trainer.dr_optimizer": "adam", "trainer.dr_lr": 0.01}).trainer.dr_step == 0.01
    with pytest.raises(ConfigError, match="dr_optimizer"):
        load_settings(**{"trainer.dr_optimizer": "lion"})
