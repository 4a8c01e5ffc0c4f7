"""``mamdr trainer run --world-size N`` / torchrun: decide this process's role and run it.

* torchrun (or the Kubeflow operator) set RANK/WORLD_SIZE/LOCAL_RANK/MASTER_ADDR/MASTER_PORT: this
  process is that rank.
* ``--world-size N`` without RANK: this process becomes rank 0 on 127.0.0.1 and starts ranks
  1..N-1 as child processes of the same command (they die with it: PR_SET_PDEATHSIG).
* Every rank returns a ``Session``; the CLI builds a ContinualTrainer on each and attaches the rank's
  ``Replica`` (trainer/distributed/replica.py): each rank consumes and trains on its own partitions.
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
    """This process's rank of a distributed run, plus the local children it started (rank 0 of
    ``--world-size N`` without a launcher)."""

    env: Any
    replica: Any = None
    children: list[subprocess.Popen[bytes]] = field(default_factory=list)

    @property
    def world_size(self) -> int:
        return int(self.env.world_size)

    def attach(self, trainer: Any, registry: Any = None) -> None:
        from trainer.distributed.replica import Replica

        self.replica = Replica(self.env, registry)
        trainer.distributed = self.replica

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
            for child in self.children:
                try:
                    child.wait(timeout=60 if ok else 10)
                except subprocess.TimeoutExpired:
                    child.kill()
            comm.close_group()


def prepare(args: Any, settings: Any, rank_argv: Sequence[str] = ()) -> Session | None:
    """None for a single process; else this rank's Session (every rank runs a full trainer on its partitions).

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
    return Session(env, children=children)
