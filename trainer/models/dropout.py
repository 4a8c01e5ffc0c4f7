"""Dropout whose mask costs a fraction of ``torch.nn.Dropout``'s on the CPU.

``nn.Dropout`` draws its mask with ``bernoulli_``, one double-precision draw per element: 3-4 ms for a
[1024, 256] activation on this machine's cores, five times the matmul that made it. In a round of the
continual trainer with the paper MLP that was 46 % of the training time (docs/streaming.md, "A round
at 5× the clicks per second"). Here the mask comes from random 64-bit words read as four 16-bit lanes,
each lane compared with a threshold: one cheap draw per four elements. Each element is kept with
probability 1 − p', where p' is p rounded to a multiple of 2^-16 (exact for 0.5, within 7.7e-6 of p
otherwise), and scaled by 1 / (1 − p'), so the expected output is the input, as with ``nn.Dropout``. It
draws from torch's default generator (``torch.manual_seed`` fixes it) and works under
``torch.func.vmap(randomness="different")``. In eval mode it is the identity, so exported graphs are
unchanged.
"""

from __future__ import annotations

import torch
from torch import nn

LANES = 1 << 16  # values a 16-bit lane takes


class Dropout(nn.Dropout):
    """``nn.Dropout`` (same arguments, same state dict: none) with a cheap mask."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training or self.p == 0.0:
            return x
        dropped = round(self.p * LANES)  # lanes below the threshold drop their element
        if dropped >= LANES:
            return x * 0.0
        n = x.numel()
        words = torch.randint(-(1 << 63), (1 << 63) - 1, (-(-n // 4),), dtype=torch.int64, device=x.device)
        lanes = words.view(torch.int16)[:n].view(x.shape)
        keep = (lanes >= dropped - LANES // 2).to(x.dtype)
        return x * keep.mul_(LANES / (LANES - dropped))
