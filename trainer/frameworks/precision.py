"""The arithmetic of a training step's forward: bfloat16 matmuls where the CPU has them in hardware.

In the continual trainer (``trainer.precision``) DN's pass is most of a round once DR runs on the head's
features, and its time is the model's matmuls. ``Framework.loss`` runs the model's forward under
``torch.autocast`` (bfloat16 matmuls, float32 accumulation) and everything else in float32: the loss, the
backward's accumulation into float32 weights, the optimizers. Only the forward: with the loss and the
optimizer steps under autocast as well, one seed of five diverged (docs/streaming.md, "A round at 5× the
clicks per second").
``auto`` uses it only where the CPU computes bfloat16 natively: elsewhere oneDNN emulates it, which is slower
than float32. Offline experiments default to float32 (``FrameworkConfig.precision``), the paper's arithmetic.
"""

from __future__ import annotations

import contextlib
from typing import Literal

import torch

Precision = Literal["auto", "bf16", "fp32"]


def native_bf16() -> bool:
    """True when this CPU has bfloat16 dot products in hardware (AVX-512 BF16 or AMX tiles). oneDNN's own flag
    (``_is_mkldnn_bf16_supported``) is also true on AVX-512 cores that only emulate bfloat16, ~2x slower."""
    cpu = getattr(torch, "cpu", None)
    checks = [getattr(cpu, name, None) for name in ("_is_avx512_bf16_supported", "_is_amx_tile_supported")]
    return any(bool(check()) for check in checks if check is not None)


def resolve(precision: Precision) -> Literal["bf16", "fp32"]:
    """The precision a setting means on this machine."""
    if precision == "auto":
        return "bf16" if native_bf16() else "fp32"
    return precision


def autocast(precision: str) -> contextlib.AbstractContextManager[None]:
    """The context a training forward runs in (CPU autocast: the trainer runs on CPUs)."""
    if precision == "bf16":
        return torch.autocast("cpu", dtype=torch.bfloat16)
    return contextlib.nullcontext()
