"""A local stack of real servers as background processes on loopback: ``mamdr dev up|down|status``.

Redis (the Debian ``redis-server``), the cached Kafka broker (``scripts/kafka/run-broker.sh``), the
continual trainer and serving, each in its own session with a pid file and a log in the workdir
(``run/NAME.pid``, ``logs/NAME.log``); ``stack.json`` records ports and URLs. ``down`` stops them in
reverse order: SIGTERM to the process group, SIGKILL after a timeout. The process helpers are also
what the quickstart uses to run serving. Torch-free.
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

from contracts.errors import BackendUnavailable, ConfigError

REPO = Path(__file__).resolve().parents[1]
RUN_BROKER = REPO / "scripts" / "kafka" / "run-broker.sh"
COMPONENTS = ("redis", "kafka", "trainer", "serving")  # start order; stopped in reverse
STATE_FILE = "stack.json"


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def mamdr_argv(*args: str) -> list[str]:
    """The ``mamdr`` CLI of this interpreter (works without the console script on PATH)."""
    return [sys.executable, "-m", "mamdr.cli", *args]


# -- processes ---------------------------------------------------------------------------------------
def pid_file(workdir: Path, name: str) -> Path:
    return workdir / "run" / f"{name}.pid"


def log_file(workdir: Path, name: str) -> Path:
    return workdir / "logs" / f"{name}.log"


def _die_with_parent() -> None:
    import ctypes

    ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG


def start_process(name: str, argv: Sequence[str], workdir: Path, env: dict[str, str] | None = None,
                  die_with_parent: bool = False) -> subprocess.Popen[bytes]:
    """Start ``argv`` in its own session (so ``down`` can signal the whole group); log and pid in workdir."""
    log_path, pid_path = log_file(workdir, name), pid_file(workdir, name)
    log_path.parent.mkdir(parents=True, exist_ok=True)
    pid_path.parent.mkdir(parents=True, exist_ok=True)
    with open(log_path, "ab") as out:
        proc = subprocess.Popen(
            list(argv), stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
            env={**os.environ, **(env or {})}, start_new_session=True,
            preexec_fn=_die_with_parent if die_with_parent else None,
        )
    pid_path.write_text(f"{proc.pid}\n")
    return proc


def read_pid(workdir: Path, name: str) -> int | None:
    try:
        return int(pid_file(workdir, name).read_text().strip())
    except (OSError, ValueError):
        return None


def alive(pid: int | None) -> bool:
    if pid is None:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:  # a zombie (exited, not yet reaped) is not alive
        return Path(f"/proc/{pid}/stat").read_text().split(") ", 1)[1][:1] != "Z"
    except (OSError, IndexError):
        return True


def stop_pid(pid: int, timeout_s: float = 20.0) -> str:
    """SIGTERM to the process group, SIGKILL after ``timeout_s``; returns how it ended."""
    if not alive(pid):
        return "not running"
    try:
        os.killpg(pid, signal.SIGTERM)
    except ProcessLookupError:
        return "not running"
    except PermissionError:
        os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        _reap(pid)
        if not alive(pid):
            return "stopped"
        time.sleep(0.1)
    try:
        os.killpg(pid, signal.SIGKILL)
    except ProcessLookupError:
        return "stopped"
    for _ in range(50):
        _reap(pid)
        if not alive(pid):
            break
        time.sleep(0.1)
    return "killed"


def _reap(pid: int) -> None:
    with contextlib.suppress(ChildProcessError):
        os.waitpid(pid, os.WNOHANG)


def stop_process(workdir: Path, name: str, timeout_s: float = 20.0) -> str:
    pid = read_pid(workdir, name)
    outcome = "not running" if pid is None else stop_pid(pid, timeout_s)
    pid_file(workdir, name).unlink(missing_ok=True)
    return outcome


def tail(path: Path, lines: int = 15) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"


def wait_until(check: Callable[[], bool], timeout_s: float, what: str, workdir: Path | None = None,
               name: str | None = None, proc: subprocess.Popen[bytes] | None = None) -> float:
    """Poll ``check`` until true; a dead process or the timeout raises with the log's last lines."""
    t0 = time.monotonic()
    while time.monotonic() - t0 < timeout_s:
        if proc is not None and proc.poll() is not None:
            break
        if name is not None and workdir is not None and proc is None and not alive(read_pid(workdir, name)):
            break
        try:
            if check():
                return time.monotonic() - t0
        except Exception:
            pass
        time.sleep(0.2)
    log = f"\n--- {log_file(workdir, name)}\n{tail(log_file(workdir, name))}" if workdir and name else ""
    state = "exited" if proc is not None and proc.poll() is not None else f"not ready after {timeout_s:.0f} s"
    raise BackendUnavailable(f"{what} {state}{log}")


# -- health checks -----------------------------------------------------------------------------------
def http_ok(url: str, timeout_s: float = 1.0) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=timeout_s) as resp:
            return bool(resp.status == 200)
    except OSError:
        return False


def redis_ping(port: int) -> bool:
    with socket.create_connection(("127.0.0.1", port), timeout=0.5) as s:
        s.sendall(b"PING\r\n")
        return s.recv(16).startswith(b"+PONG")


def kafka_answers(bootstrap: str) -> bool:
    import logging

    from kafka import KafkaAdminClient

    logging.getLogger("kafka").setLevel(logging.WARNING)  # a probe's connection chatter is noise

    admin = KafkaAdminClient(bootstrap_servers=bootstrap, request_timeout_ms=3000, bootstrap_timeout_ms=2000,
                             client_id="mamdr-dev-probe")
    try:
        admin.list_topics()
        return bool(admin.describe_cluster().get("brokers"))
    finally:
        admin.close()


def kafka_libs() -> Path:
    import re

    version = os.environ.get("KAFKA_VERSION")
    if not version:
        match = re.search(r"<kafka.version>(.+?)</kafka.version>", (RUN_BROKER.parent / "pom.xml").read_text())
        version = match.group(1) if match else ""
    home = os.environ.get("MAMDR_KAFKA_HOME") or str(Path.home() / ".cache" / "mamdr" / "kafka" / version)
    return Path(home) / "libs"


# -- the stack ---------------------------------------------------------------------------------------
@dataclass
class StackState:
    workdir: str
    redis_port: int
    kafka_port: int
    serving_port: int
    metrics_port: int
    topic: str = "clicks"

    @property
    def redis_url(self) -> str:
        return f"redis://127.0.0.1:{self.redis_port}/0"

    @property
    def stream_url(self) -> str:
        return f"kafka://127.0.0.1:{self.kafka_port}/{self.topic}"

    @property
    def serving_url(self) -> str:
        return f"http://127.0.0.1:{self.serving_port}"

    @property
    def metrics_url(self) -> str:
        return f"http://127.0.0.1:{self.metrics_port}/metrics"

    @property
    def artifacts_url(self) -> str:
        return f"file://{Path(self.workdir) / 'artifacts'}"

    def urls(self) -> dict[str, str]:
        return {"serving": self.serving_url, "docs": f"{self.serving_url}/docs", "trainer metrics": self.metrics_url,
                "stream": self.stream_url, "feature store + registry": self.redis_url,
                "artifacts": self.artifacts_url}

    def health(self, name: str) -> bool:
        try:
            if name == "redis":
                return redis_ping(self.redis_port)
            if name == "kafka":
                return kafka_answers(f"127.0.0.1:{self.kafka_port}")
            if name == "trainer":
                return http_ok(self.metrics_url)
            return http_ok(f"{self.serving_url}/healthz")
        except Exception:
            return False


def load_state(workdir: Path) -> StackState | None:
    try:
        return StackState(**json.loads((workdir / STATE_FILE).read_text()))
    except (OSError, ValueError, TypeError):
        return None


def admin_token(workdir: Path) -> str:
    """The stack's registry admin token (generated once, mode 600)."""
    path = workdir / "admin_token"
    if not path.exists():
        path.write_text(secrets.token_urlsafe(24) + "\n")
        path.chmod(0o600)
    return path.read_text().strip()


def _create_topic(url: str) -> None:
    from contracts.settings import StreamSettings
    from stream import open_stream

    with open_stream(url, StreamSettings(url=url, create_topics=True)) as stream:
        stream.ensure_topics()


def _argv(name: str, st: StackState, round_seconds: float) -> list[str]:
    wd = Path(st.workdir)
    if name == "redis":
        exe = shutil.which("redis-server")
        if exe is None:
            raise ConfigError("redis-server is not installed: apt-get install redis-server "
                              "(or scripts/setup.sh --servers)")
        (wd / "redis").mkdir(parents=True, exist_ok=True)
        return [exe, "--port", str(st.redis_port), "--bind", "127.0.0.1", "--dir", str(wd / "redis"),
                "--appendonly", "yes", "--save", "", "--protected-mode", "yes"]
    if name == "kafka":
        if not any(kafka_libs().glob("kafka_2.13-*.jar")):
            raise ConfigError(f"no Kafka jars in {kafka_libs()}: run scripts/kafka/fetch.sh first")
        return ["bash", str(RUN_BROKER), str(st.kafka_port), str(wd / "kafka")]
    backends = ["--feature-store", st.redis_url, "--registry", st.redis_url, "--artifacts", st.artifacts_url]
    if name == "trainer":
        return mamdr_argv("trainer", "run", "--stream", st.stream_url, *backends,
                          "--round-seconds", str(round_seconds), "--metrics-port", str(st.metrics_port))
    return mamdr_argv("serve", *backends, "--port", str(st.serving_port))


def up(workdir: Path, *, redis_port: int = 0, kafka_port: int = 0, serving_port: int = 0,
       metrics_port: int = 0, round_seconds: float = 10.0, timeout_s: float = 120.0,
       say: Callable[[str], None] = print) -> StackState:
    """Start what is not running yet, wait until every component is healthy, return the stack."""
    workdir = workdir.expanduser().resolve()
    workdir.mkdir(parents=True, exist_ok=True)
    st = load_state(workdir)
    if st is None or not any(alive(read_pid(workdir, n)) for n in COMPONENTS):
        st = StackState(str(workdir), redis_port or free_port(), kafka_port or free_port(),
                        serving_port or free_port(), metrics_port or free_port())
        (workdir / STATE_FILE).write_text(json.dumps(asdict(st), indent=2) + "\n")
    # one torch thread for the trainer: serving shares the machine (see README, Operations: Scaling)
    # the dev stack is where topics may appear by themselves: producers pointed at it create them too
    env = {"MAMDR_REGISTRY__ADMIN_TOKEN": admin_token(workdir), "MAMDR_HOME": str(workdir), "OMP_NUM_THREADS": "1",
           "MAMDR_STREAM__CREATE_TOPICS": "true"}
    limits = {"redis": 15.0, "kafka": timeout_s, "trainer": timeout_s, "serving": timeout_s}
    try:
        for name in COMPONENTS:
            if alive(read_pid(workdir, name)) and st.health(name):
                say(f"{name}: already running (pid {read_pid(workdir, name)})")
                continue
            proc = start_process(name, _argv(name, st, round_seconds), workdir, env)
            took = wait_until(lambda n=name: st.health(n), limits[name], name, workdir, name, proc)
            say(f"{name}: up in {took:.1f} s (pid {proc.pid}, log {log_file(workdir, name)})")
            if name == "kafka":  # the trainer only reads: the topic and its .dlq exist before it starts
                _create_topic(st.stream_url)
    except BaseException:
        down(workdir, say=say)
        raise
    return st


def down(workdir: Path, timeout_s: float = 20.0, say: Callable[[str], None] = print) -> dict[str, str]:
    workdir = workdir.expanduser().resolve()
    outcome = {}
    for name in reversed(COMPONENTS):
        outcome[name] = stop_process(workdir, name, timeout_s)
        say(f"{name}: {outcome[name]}")
    return outcome


def status(workdir: Path) -> dict[str, dict[str, object]]:
    workdir = workdir.expanduser().resolve()
    st = load_state(workdir)
    rows: dict[str, dict[str, object]] = {}
    for name in COMPONENTS:
        pid = read_pid(workdir, name)
        running = alive(pid)
        rows[name] = {"pid": pid, "running": running,
                      "healthy": bool(running and st is not None and st.health(name))}
    return rows
