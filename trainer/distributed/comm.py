"""torch.distributed plumbing: who am I (torchrun env or ``--world-size``), the gloo/nccl group, one
flat all-reduce, a gather to rank 0, a pickle-free broadcast of named tensors, and control words over the c10d store.

Control words (``round`` / ``stop`` / ``abort``) go through the rendezvous store, not a collective:
a worker waiting for the next round polls a key, so an idle stream never trips the collective
timeout, while a dead coordinator (the store goes away with it) ends the worker at once.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import timedelta

import torch
import torch.distributed as dist
from torch._utils import _flatten_dense_tensors, _unflatten_dense_tensors

from contracts.errors import ConfigError

MSG_KEY = "mamdr/msg/{}"
POLL_S = 0.05


@dataclass(frozen=True)
class DistEnv:
    """Rank, world size and rendezvous address of this process."""

    rank: int
    world_size: int
    local_rank: int
    master_addr: str
    master_port: int

    @property
    def is_coordinator(self) -> bool:
        return self.rank == 0


def env_world_size() -> int | None:
    """WORLD_SIZE set by torchrun / the training operator, or None."""
    raw = os.environ.get("WORLD_SIZE")
    if raw is None:
        return None
    if not raw.isdigit() or int(raw) < 1:
        raise ConfigError(f"WORLD_SIZE={raw!r} is not a positive integer")
    return int(raw)


def detect(world_size: int | None) -> DistEnv | None:
    """The distributed environment, or None for a single process.

    ``world_size`` is the ``--world-size`` flag; torchrun's RANK/WORLD_SIZE/LOCAL_RANK/MASTER_* win
    when present and must agree with it.
    """
    env_world = env_world_size()
    if env_world is not None and world_size is not None and env_world != world_size:
        raise ConfigError(f"--world-size {world_size} but WORLD_SIZE={env_world} from the launcher; "
                          "make them equal (replicas x nproc-per-node)")
    world = env_world or world_size or 1
    if world <= 1:
        return None
    if "RANK" not in os.environ:
        raise ConfigError("distributed training needs RANK (torchrun sets it; `mamdr trainer run "
                          "--world-size N` sets it for the local processes it starts)")
    port = os.environ.get("MASTER_PORT", "29500")
    if not port.isdigit():
        raise ConfigError(f"MASTER_PORT={port!r} is not a port number")
    return DistEnv(rank=int(os.environ["RANK"]), world_size=world,
                   local_rank=int(os.environ.get("LOCAL_RANK", "0")),
                   master_addr=os.environ.get("MASTER_ADDR", "127.0.0.1"), master_port=int(port))


def init_group(env: DistEnv, timeout_s: float) -> None:
    """Join the process group. gloo: the trainer trains on CPU and the plan/deltas are CPU tensors
    (nccl would need them on the GPU first)."""
    os.environ.setdefault("MASTER_ADDR", env.master_addr)
    os.environ.setdefault("MASTER_PORT", str(env.master_port))
    dist.init_process_group("gloo", init_method="env://", rank=env.rank, world_size=env.world_size,
                            timeout=timedelta(seconds=timeout_s))


def close_group() -> None:
    if dist.is_initialized():
        dist.destroy_process_group()


# -- collectives --------------------------------------------------------------------------------------
def all_reduce_sum(tensors: list[torch.Tensor]) -> list[torch.Tensor]:
    """Sum a list of same-dtype tensors over ranks with ONE collective (flattened into one buffer)."""
    flat = _flatten_dense_tensors(tensors)
    dist.all_reduce(flat, op=dist.ReduceOp.SUM)
    return list(_unflatten_dense_tensors(flat, tensors))


def gather_to_root(tensor: torch.Tensor) -> list[torch.Tensor] | None:
    """Every rank's ``tensor`` (same shape and dtype on all ranks) on rank 0; None on the others."""
    if dist.get_rank() == 0:
        parts = [torch.empty_like(tensor) for _ in range(dist.get_world_size())]
        dist.gather(tensor.contiguous(), parts, dst=0)
        return parts
    dist.gather(tensor.contiguous(), None, dst=0)
    return None


def broadcast_tensors(named: dict[str, torch.Tensor] | None, meta: dict | None) -> tuple[dict[str, torch.Tensor], dict]:
    """Rank 0 sends JSON ``meta`` and named tensors; every rank returns them. No pickle on the wire:
    a JSON header (names, dtypes, shapes) and one flat buffer per dtype."""
    rank0 = dist.get_rank() == 0
    if rank0:
        assert named is not None and meta is not None
        order = sorted(named)
        header = {"meta": meta, "tensors": [[n, str(named[n].dtype).removeprefix("torch."),
                                             list(named[n].shape)] for n in order]}
        raw = torch.frombuffer(bytearray(json.dumps(header).encode()), dtype=torch.uint8)
        size = torch.tensor([raw.numel()], dtype=torch.int64)
    else:
        size = torch.zeros(1, dtype=torch.int64)
    dist.broadcast(size, 0)
    if not rank0:
        raw = torch.empty(int(size.item()), dtype=torch.uint8)
    dist.broadcast(raw, 0)
    header = json.loads(bytes(raw.numpy()).decode())
    specs = [(n, getattr(torch, dt), tuple(shape)) for n, dt, shape in header["tensors"]]
    out: dict[str, torch.Tensor] = {}
    for dtype in sorted({dt for _, dt, _ in specs}, key=str):
        group = [(n, shape) for n, dt, shape in specs if dt == dtype]
        total = sum(int(torch.Size(s).numel()) for _, s in group)
        if rank0:
            assert named is not None
            flat = torch.cat([named[n].reshape(-1).to(dtype) for n, _ in group]) if group else \
                torch.empty(0, dtype=dtype)
        else:
            flat = torch.empty(total, dtype=dtype)
        dist.broadcast(flat, 0)
        start = 0
        for n, shape in group:
            count = int(torch.Size(shape).numel())
            out[n] = flat[start:start + count].view(shape)
            start += count
    return out, header["meta"]


# -- control words over the store ---------------------------------------------------------------------
def store() -> dist.Store:
    """The rendezvous key-value store (hosted by rank 0 or the torchrun agent)."""
    return dist.distributed_c10d._get_default_store()


def post(n: int, word: str) -> None:
    """Rank 0: message number ``n`` to every worker (``round``, ``stop`` or ``abort``)."""
    store().set(MSG_KEY.format(n), word)


def wait_message(n: int, stop_after_s: float | None = None, idle: Callable[[], object] | None = None) -> str:
    """Workers: block until message ``n`` exists (polling, so no collective timeout while idle),
    calling ``idle`` (the record forwarder; it returns within ~0.1 s) between checks.

    Raises when the store (hosted by rank 0 or the torchrun agent) is gone."""
    kv = store()
    key = MSG_KEY.format(n)
    start = time.monotonic()
    while not kv.check([key]):
        if stop_after_s is not None and time.monotonic() - start > stop_after_s:
            return "timeout"
        if idle is not None:
            idle()
        else:
            time.sleep(POLL_S)
    return kv.get(key).decode()
