"""Building blocks that route each sample to its own domain's weights, and shared expert banks.

Per-domain weights are stacked ``[n_domains, in, out]`` and read only by indexing dim 0 with the
per-sample domain tensor. One primitive, :func:`domain_matmul`, has three paths with identical maths:

- one row (``weight.shape[0] == 1``): a plain matmul with row 0. This is the graph export gets when
  it slices every domain-indexed tensor to one domain; a branch on a static shape, not on values.
- eager (training and evaluation): samples are grouped by domain (stable sort) and each group is one
  matmul with its domain's matrix, so cost and memory are those of a shared layer.
- traced, compiled or exported with the full tables: the per-sample matrices are gathered
  (``weight[domain]``, ``[B, in, out]``) and multiplied with ``bmm``; no value-dependent Python control
  flow, so the graph is valid for any batch and any domain, but it costs ``B * in * out`` memory.
"""

from __future__ import annotations

import itertools
import math
from typing import ClassVar

import torch
from torch import nn

from trainer.models.base import DomainIndexedModule
from trainer.models.dropout import Dropout


def tracing() -> bool:
    """True while torch.jit, torch.compile/torch.export or torch.onnx is capturing a graph."""
    return torch.jit.is_tracing() or torch.compiler.is_compiling() or torch.onnx.is_in_onnx_export()


def domain_matmul(x: torch.Tensor, weight: torch.Tensor, domain: torch.Tensor,
                  shared: torch.Tensor | None = None) -> torch.Tensor:
    """``x[b] @ (weight[domain[b]] ⊙ shared)`` for every sample: x ``[B, in]``, weight ``[D, in, out]``."""
    if weight.shape[0] == 1:
        w = weight[0] if shared is None else weight[0] * shared
        return x @ w
    if tracing():
        w = weight.index_select(0, domain)
        if shared is not None:
            w = w * shared
        return torch.bmm(x.unsqueeze(1), w).squeeze(1)
    if x.shape[0] == 0:
        return x.new_zeros(0, weight.shape[-1])
    order = torch.argsort(domain, stable=True)
    ids, counts = torch.unique_consecutive(domain.index_select(0, order), return_counts=True)
    rows = weight.index_select(0, ids)  # one gather: its backward is one index_add, not one per group
    if shared is not None:
        rows = rows * shared
    groups = x.index_select(0, order).split(counts.tolist())
    out_sorted = torch.cat([g @ w for g, w in zip(groups, rows.unbind(0), strict=True)])
    inverse = torch.empty_like(order)
    inverse[order] = torch.arange(order.shape[0], device=order.device)
    return out_sorted.index_select(0, inverse)


def _uniform_(tensor: torch.Tensor, fan_in: int) -> torch.Tensor:
    """nn.Linear's default initialisation, row by row."""
    bound = 1.0 / math.sqrt(fan_in) if fan_in > 0 else 0.0
    return nn.init.uniform_(tensor, -bound, bound)


class DomainLinear(DomainIndexedModule):
    """A linear layer with one independent weight and bias per domain (a tower or gate layer)."""

    domain_tensors: ClassVar[tuple[str, ...]] = ("weight", "bias")

    def __init__(self, n_domains: int, in_dim: int, out_dim: int) -> None:
        super().__init__()
        self.weight = nn.Parameter(_uniform_(torch.empty(n_domains, in_dim, out_dim), in_dim))
        self.bias = nn.Parameter(_uniform_(torch.empty(n_domains, out_dim), in_dim))

    def forward(self, x: torch.Tensor, domain: torch.Tensor) -> torch.Tensor:
        return domain_matmul(x, self.weight, domain) + self.bias.index_select(0, domain)


class DomainMLP(nn.Module):
    """Per-domain tower: DomainLinear + ReLU + dropout per hidden layer, then a per-domain logit."""

    def __init__(self, n_domains: int, in_dim: int, hidden: tuple[int, ...], dropout: float) -> None:
        super().__init__()
        dims = (in_dim, *hidden)
        self.layers = nn.ModuleList(DomainLinear(n_domains, a, b) for a, b in itertools.pairwise(dims))
        self.out = DomainLinear(n_domains, dims[-1], 1)
        self.dropout = Dropout(dropout)

    def forward(self, x: torch.Tensor, domain: torch.Tensor) -> torch.Tensor:
        for layer in self.layers:
            x = self.dropout(torch.relu(layer(x, domain)))
        return self.out(x, domain).squeeze(-1)


class ExpertBank(nn.Module):
    """``n`` shared experts (MLPs of the same widths) evaluated together: ``[B, in] -> [B, n, out]``."""

    def __init__(self, n_experts: int, in_dim: int, hidden: tuple[int, ...], dropout: float) -> None:
        super().__init__()
        dims = (in_dim, *hidden)
        self.weights = nn.ParameterList(
            nn.Parameter(_uniform_(torch.empty(n_experts, a, b), a)) for a, b in itertools.pairwise(dims)
        )
        self.biases = nn.ParameterList(
            nn.Parameter(_uniform_(torch.empty(n_experts, b), a)) for a, b in itertools.pairwise(dims)
        )
        self.dropout = Dropout(dropout)
        self.out_dim = dims[-1]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = torch.einsum("bi,eio->beo", x, self.weights[0]) + self.biases[0]
        h = self.dropout(torch.relu(h))
        for w, b in zip(list(self.weights)[1:], list(self.biases)[1:], strict=True):
            h = self.dropout(torch.relu(torch.einsum("bei,eio->beo", h, w) + b))
        return h


class FieldStack(nn.Module):
    """The three fields (user, item, domain) as equal-width vectors ``[B, 3, emb_dim]``.

    Field-interaction models (FM, bi-interaction, self-attention) need one width; pretrained user or
    item vectors of another width get a shared linear projection, otherwise they pass unchanged.
    """

    def __init__(self, user_dim: int, item_dim: int, emb_dim: int) -> None:
        super().__init__()
        self.user = nn.Identity() if user_dim == emb_dim else nn.Linear(user_dim, emb_dim, bias=False)
        self.item = nn.Identity() if item_dim == emb_dim else nn.Linear(item_dim, emb_dim, bias=False)

    def forward(self, user_emb: torch.Tensor, item_emb: torch.Tensor,
                domain_emb: torch.Tensor) -> torch.Tensor:
        return torch.stack([self.user(user_emb), self.item(item_emb), domain_emb], dim=1)


def last_width(in_dim: int, hidden: tuple[int, ...]) -> int:
    return hidden[-1] if hidden else in_dim


def split_hidden(hidden: tuple[int, ...]) -> tuple[tuple[int, ...], tuple[int, ...]]:
    """The paper's MLP widths split into a shared bottom (all but last) and a tower (the last)."""
    if len(hidden) <= 1:
        return (), hidden
    return hidden[:-1], hidden[-1:]
