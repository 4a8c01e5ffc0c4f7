"""The trainer's liveness: /healthz on the metrics port fails once the loop stops making progress (a TCP check
passed for a hung loop), while /metrics keeps answering."""

from __future__ import annotations

import json
import urllib.error
import urllib.request

import pytest

from trainer.service.health import Heartbeat, serve
from trainer.service.metrics import TrainerMetrics


def _get(url: str) -> tuple[int, bytes]:
    try:
        with urllib.request.urlopen(url, timeout=5) as r:
            return r.status, r.read()
    except urllib.error.HTTPError as e:
        return e.code, e.read()


def test_healthz_fails_when_the_loop_stops_beating() -> None:
    metrics, beat = TrainerMetrics(), Heartbeat()
    server = serve(metrics.registry, beat, timeout_s=30.0, host="127.0.0.1", port=0)
    base = f"http://127.0.0.1:{server.server_address[1]}"
    try:
        code, body = _get(base + "/healthz")
        assert code == 200 and json.loads(body)["alive"] is True
        beat._at -= 31.0  # the loop has not beaten for 31 s
        code, body = _get(base + "/healthz")
        assert code == 503 and json.loads(body)["seconds_since_progress"] >= 31
        code, body = _get(base + "/metrics")
        assert code == 200 and b"mamdr_trainer_rounds_total" in body and b"process_cpu_seconds_total" in body
        beat.beat()
        assert _get(base + "/healthz")[0] == 200
    finally:
        server.shutdown()
        server.server_close()


def test_the_loop_beats_every_iteration(tmp_path) -> None:
    from contracts.settings import StreamSettings, load_settings
    from domain_registry import open_registry
    from feature_store import open_store
    from stream import open_stream
    from trainer.service.loop import ContinualTrainer

    url = f"file://{tmp_path}/clicks"
    trainer = ContinualTrainer(load_settings(), stream=open_stream(url, StreamSettings(url=url, create_topics=True)),
                               store=open_store("memory://beat"), registry=open_registry(f"sqlite://{tmp_path}/r.db"),
                               artifacts=tmp_path / "artifacts")
    trainer.heartbeat._at -= 1000.0
    trainer.run(idle_exit_s=0.2)
    assert trainer.heartbeat.age_s() < 5.0
    trainer.close()


def test_liveness_timeout_is_a_bounded_setting() -> None:
    from contracts.errors import ConfigError
    from contracts.settings import load_settings

    assert load_settings().trainer.liveness_timeout_s == 1800.0
    with pytest.raises(ConfigError, match="liveness_timeout_s"):
        load_settings(**{"trainer.liveness_timeout_s": 0})
