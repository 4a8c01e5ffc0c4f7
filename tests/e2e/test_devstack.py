"""``mamdr dev up|status|down``: real redis-server, Kafka broker, trainer and serving on loopback."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from mamdr import devstack

pytestmark = pytest.mark.timeout(400)


def _mamdr(*args: str, timeout: float = 240) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "mamdr.cli", *args], capture_output=True, text=True,
                          timeout=timeout)


def test_dev_up_status_down(tmp_path: Path) -> None:
    wd = tmp_path / "dev"
    t0 = time.monotonic()
    try:
        up = _mamdr("dev", "up", "--workdir", str(wd), "--timeout", "150")
        assert up.returncode == 0, up.stdout + up.stderr
        started = time.monotonic() - t0
        st = devstack.load_state(wd)
        assert st is not None and st.serving_url in up.stdout and st.stream_url in up.stdout
        pids = {n: devstack.read_pid(wd, n) for n in devstack.COMPONENTS}
        assert all(devstack.alive(p) for p in pids.values()), pids
        # every part answers on loopback: serving (no model yet: not ready), trainer metrics, redis
        assert httpx.get(f"{st.serving_url}/healthz").status_code == 200
        assert httpx.get(f"{st.serving_url}/readyz").status_code == 503
        assert "mamdr_trainer" in httpx.get(st.metrics_url).text
        assert devstack.redis_ping(st.redis_port)
        status = _mamdr("dev", "status", "--workdir", str(wd))
        assert status.returncode == 0 and status.stdout.count("healthy") == 4, status.stdout
        # a second up is a no-op on a running stack
        again = _mamdr("dev", "up", "--workdir", str(wd))
        assert again.returncode == 0 and again.stdout.count("already running") == 4
        assert {n: devstack.read_pid(wd, n) for n in devstack.COMPONENTS} == pids

        down = _mamdr("dev", "down", "--workdir", str(wd), "--timeout", "30")
        assert down.returncode == 0
        assert down.stdout.count("stopped") == 4, down.stdout  # SIGTERM sufficed, nothing was killed
        assert not any(devstack.alive(p) for p in pids.values())
        status = _mamdr("dev", "status", "--workdir", str(wd))
        assert status.returncode == 1 and status.stdout.count("stopped") == 4
        print(f"dev up in {started:.0f} s, whole test {time.monotonic() - t0:.0f} s")
    finally:
        devstack.down(wd, timeout_s=10, say=lambda _: None)
