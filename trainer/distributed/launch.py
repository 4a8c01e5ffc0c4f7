"""``mamdr trainer run --world-size N`` / torchrun: decide this process's role and run it.

* torchrun (or the Kubeflow operator) set RANK/WORLD_SIZE/LOCAL_RANK/MASTER_ADDR/MASTER_PORT: this
  process is that rank.
* ``--world-size N`` without RANK: this process becomes rank 0 on 127.0.0.1 and starts ranks
  1..N-1 as child processes of the same command (they die with it: PR_SET_PDEATHSIG).
* Rank 0 returns a ``Session`` whose coordinator is attached to the ContinualTrainer; ranks > 0
  run the worker loop here and the command returns its exit code.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import socket
import subprocess
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

from contracts.errors import BackendUnavailable, ConfigError, MamdrError

log = logging.getLogger("mamdr.trainer.distributed")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _die_with_parent() -> None:
    import ctypes

    ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGTERM)  # 1 = PR_SET_PDEATHSIG


@dataclass
class Session:
    """Rank 0 of a distributed run: the coordinator plus the local children it started (if any)."""

    world_size: int
    exit_code: int | None = None
    coordinator: Any = None
    children: list[subprocess.Popen[bytes]] = field(default_factory=list)

    def attach(self, trainer: Any, registry: Any = None) -> None:
        from trainer.distributed.service import Coordinator

        self.coordinator = Coordinator(self.world_size, trainer.store, registry)
        trainer.distributed = self.coordinator

    @contextlib.contextmanager
    def guard(self) -> Iterator[None]:
        """Turn a failed collective into one clean error: nothing of the round was published."""
        from trainer.distributed import comm

        ok = False
        try:
            yield
            ok = True
        except MamdrError:
            raise
        except RuntimeError as exc:  # gloo/nccl: a peer died, closed the connection or timed out
            raise BackendUnavailable(
                f"distributed round failed ({' '.join(str(exc).split())[:300]}); nothing of this round was "
                "published or committed: restart every rank to resume from the last published offsets") from exc
        finally:
            if self.coordinator is not None:
                self.coordinator.close(ok)
            for child in self.children:
                try:
                    child.wait(timeout=60 if ok else 10)
                except subprocess.TimeoutExpired:
                    child.kill()
            comm.close_group()


def prepare(args: Any, settings: Any, rank_argv: Sequence[str] = ()) -> Session | None:
    """None for a single process; a finished Session (exit_code set) on ranks > 0; else rank 0's.

    With ``--world-size N`` and no launcher, ranks 1..N-1 are started here as ``rank_argv`` (the command
    line that started this process; the caller, the CLI, knows what that is).
    """
    from trainer.distributed import comm

    world = args.world_size
    children: list[subprocess.Popen[bytes]] = []
    if (world or 1) > 1 and "RANK" not in os.environ and comm.env_world_size() is None:
        if not rank_argv:
            raise ConfigError("--world-size > 1 without a launcher needs the command line to start the other ranks")
        port = free_port()
        base = {**os.environ, "WORLD_SIZE": str(world), "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(port)}
        for rank in range(1, world):
            env = {**base, "RANK": str(rank), "LOCAL_RANK": str(rank)}
            children.append(subprocess.Popen(list(rank_argv), env=env, preexec_fn=_die_with_parent))
        os.environ.update({**base, "RANK": "0", "LOCAL_RANK": "0"})
    env = comm.detect(world)
    if env is None:
        return None
    comm.init_group(env, args.dist_timeout)
    log.info("rank %d of %d joined (%s:%d)", env.rank, env.world_size, env.master_addr, env.master_port)
    if env.is_coordinator:
        return Session(env.world_size, children=children)
    from feature_store import open_store
    from stream import open_stream
    from trainer.distributed.service import worker_loop

    store = open_store(settings.feature_store.url, settings.feature_store)
    try:
        code = worker_loop(store, env.rank, env.world_size, stream=open_stream(settings.stream.url, settings.stream))
    except RuntimeError as exc:
        log.error("rank %d: distributed round failed: %s", env.rank, " ".join(str(exc).split())[:300])
        code = 1
    finally:
        store.close()
        comm.close_group()
    return Session(env.world_size, exit_code=code)
