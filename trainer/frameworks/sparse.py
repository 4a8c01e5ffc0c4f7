"""Row-sparse user/item tables: what makes a step cost O(rows it touched), not O(table).

A dense optimizer over an embedding table reads and writes every row at every step (Adam's moments
decay everywhere), so a continual trainer whose tables have seen 1M ids pays for 1M rows per step
while a round touches a few thousand. With ``sparse_tables`` the user and item tables emit sparse
gradients (``nn.Embedding(sparse=True)``: only the looked-up rows) and are stepped by a lazy,
row-wise optimizer; every other parameter keeps a dense Adam (``foreach``: one kernel per op over
all tensors, not a Python loop per tensor).

Table optimizers (``table_optimizer``):

- ``sparse_adam``: ``torch.optim.SparseAdam``, lazy Adam: the moments of a row are updated only at
  the steps that touch it, with the same lr and betas as the dense Adam the paper uses. A row's
  update equals dense Adam's at a step where the row appears; what it skips is the momentum drift
  of rows the batch did not read (the same trade as TensorFlow's LazyAdam in production CTR).
  Memory: two moments per weight, as dense Adam.
- ``rowwise_adagrad``: one accumulator per *row* (the mean squared gradient over the row), as in
  FBGEMM/TorchRec's row-wise Adagrad: optimizer memory 1/dim of the table's, no momentum.
- ``dense``: the table in the dense Adam (the paper's; O(table) per step: small tables only).

DN's outer step and DR's copies then work on the dense parameters plus the rows a round touched
(``touched_rows``): an untouched row is bit-identical before and after, and no full-table copy exists.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence

import torch
from torch import nn

from contracts.errors import ConfigError

TABLE_OPTIMIZERS = ("sparse_adam", "rowwise_adagrad", "dense")
# a table learning rate left unset: the inner lr for lazy Adam, FBGEMM's usual order for row-wise Adagrad
DEFAULT_TABLE_LR = {"rowwise_adagrad": 0.05}


def table_names(model: nn.Module) -> tuple[str, ...]:
    """The user/item tables (``CTRModel.SHARED_TABLES``) that are trainable."""
    named = dict(model.named_parameters())
    return tuple(n for n in getattr(model, "SHARED_TABLES", ()) if n in named and named[n].requires_grad)


def set_sparse_tables(model: nn.Module, sparse: bool) -> None:
    """Make the user/item ``nn.Embedding`` lookups emit sparse (row) gradients, or dense ones again."""
    for name in getattr(model, "SHARED_TABLES", ()):
        module = model.get_submodule(name.rpartition(".")[0])
        if isinstance(module, nn.Embedding):
            module.sparse = sparse


class RowWiseAdagrad(torch.optim.Optimizer):
    """Adagrad with one accumulator per row: s_r += mean(g_r²); w_r -= lr · g_r / (√s_r + eps).

    Sparse gradients only (the rows a step read). The accumulator grows with the table (a table
    grown in place by replacing ``.data`` keeps its rows' state; new rows start at ``initial``)."""

    def __init__(self, params: Iterable[nn.Parameter], lr: float = 0.05, eps: float = 1e-8,
                 initial: float = 0.0) -> None:
        super().__init__(params, {"lr": lr, "eps": eps, "initial": initial})

    @torch.no_grad()
    def step(self, closure=None):  # type: ignore[no-untyped-def, override]
        for group in self.param_groups:
            for p in group["params"]:
                if p.grad is None:
                    continue
                if not p.grad.is_sparse:
                    raise ConfigError("RowWiseAdagrad needs sparse gradients (nn.Embedding(sparse=True))")
                grad = p.grad.coalesce()
                rows, values = grad.indices()[0], grad.values()
                state = self.state[p]
                acc = state.get("sum")
                if acc is None or acc.shape[0] < p.shape[0]:
                    fresh = torch.full((p.shape[0],), group["initial"], dtype=p.dtype)
                    if acc is not None:
                        fresh[: acc.shape[0]] = acc
                    acc = state["sum"] = fresh
                s = acc.index_select(0, rows).add_(values.pow(2).mean(1))
                acc.index_copy_(0, rows, s)
                p.index_add_(0, rows, values / (s.sqrt_().add_(group["eps"]))[:, None], alpha=-group["lr"])
        return None


class SplitOptimizer:
    """A dense optimizer over the dense parameters plus a row-sparse one over the tables, stepped together.

    Quacks like ``torch.optim.Optimizer`` for what the frameworks use (``zero_grad``, ``step``)."""

    def __init__(self, dense: torch.optim.Optimizer | None, tables: torch.optim.Optimizer | None) -> None:
        self.dense = dense
        self.tables = tables
        self.optimizers = [o for o in (dense, tables) if o is not None]

    def zero_grad(self, set_to_none: bool = True) -> None:
        for o in self.optimizers:
            o.zero_grad(set_to_none=set_to_none)

    def step(self) -> None:
        for o in self.optimizers:
            o.step()

    @property
    def param_groups(self) -> list[dict]:
        return [g for o in self.optimizers for g in o.param_groups]


def table_lr(kind: str, table_lr: float | None, inner_lr: float) -> float:
    """``table_lr`` if set, else the optimizer's default (``DEFAULT_TABLE_LR``, or the inner lr)."""
    return table_lr if table_lr is not None else DEFAULT_TABLE_LR.get(kind, inner_lr)


def make_table_optimizer(kind: str, tables: Sequence[nn.Parameter], lr: float) -> torch.optim.Optimizer | None:
    if not tables:
        return None
    if kind == "sparse_adam":
        return torch.optim.SparseAdam(list(tables), lr=lr)
    if kind == "rowwise_adagrad":
        return RowWiseAdagrad(tables, lr=lr)
    raise ConfigError(f"table optimizer {kind!r}: use {TABLE_OPTIMIZERS}")


def touched_rows(batches: Iterable[Sequence[torch.Tensor]]) -> dict[str, torch.Tensor]:
    """Sorted unique user and item rows read by ``batches`` (user, item, domain, label)."""
    batches = list(batches)
    if not batches:
        empty = torch.empty(0, dtype=torch.long)
        return {"user_embedding.weight": empty, "item_embedding.weight": empty}
    return {"user_embedding.weight": torch.unique(torch.cat([b[0] for b in batches])),
            "item_embedding.weight": torch.unique(torch.cat([b[1] for b in batches]))}


class RowSnapshot:
    """Θ restricted to the dense parameters and some rows of the row-sparse ones (no full-table copy).

    ``take`` records the current values; ``lerp_back(beta)`` sets Θ ← Θ0 + β(Θ − Θ0) in place on the
    recorded rows (and every dense tensor); ``restore`` puts Θ0 back."""

    def __init__(self, dense: Sequence[torch.Tensor], sparse: Mapping[str, torch.Tensor]) -> None:
        self.dense = [t.detach() for t in dense]
        self.sparse = {n: t.detach() for n, t in sparse.items()}
        self.start = [t.clone() for t in self.dense]
        self.rows: dict[str, torch.Tensor] = {}
        self.values: dict[str, torch.Tensor] = {}

    @torch.no_grad()
    def take(self, rows: Mapping[str, torch.Tensor]) -> None:
        missing = set(self.sparse) - set(rows)
        if missing:
            raise ConfigError(f"no touched rows given for row-sparse parameter(s) {sorted(missing)}")
        torch._foreach_copy_(self.start, self.dense)
        self.rows = {n: rows[n] for n in self.sparse}
        self.values = {n: t.index_select(0, self.rows[n]) for n, t in self.sparse.items()}

    @torch.no_grad()
    def lerp_back(self, beta: float) -> None:
        if self.dense:
            torch._foreach_lerp_(self.start, self.dense, beta)  # start ← Θ + β(Θ̃ − Θ)
            torch._foreach_copy_(self.dense, self.start)
        for n, t in self.sparse.items():
            rows = self.rows[n]
            t.index_copy_(0, rows, self.values[n].lerp_(t.index_select(0, rows), beta))

    @torch.no_grad()
    def restore(self) -> None:
        if self.dense:
            torch._foreach_copy_(self.dense, self.start)
        for n, t in self.sparse.items():
            t.index_copy_(0, self.rows[n], self.values[n])


def carry_table_state(optimizer: torch.optim.Optimizer, tables: Sequence[nn.Parameter]) -> bool:
    """Make a table optimizer valid for ``tables`` after they grew in place (rows appended by
    replacing ``.data``): state tensors shaped like the old table get zero rows appended. False when
    the optimizer holds other parameters (e.g. the model was rebuilt): the caller starts a new one."""
    held = [p for g in optimizer.param_groups for p in g["params"]]
    if len(held) != len(tables) or any(a is not b for a, b in zip(held, tables, strict=True)):
        return False
    for p in held:
        for key, value in optimizer.state.get(p, {}).items():
            if torch.is_tensor(value) and value.dim() == p.dim() and value.shape[0] < p.shape[0]:
                pad = value.new_zeros((p.shape[0] - value.shape[0], *value.shape[1:]))
                optimizer.state[p][key] = torch.cat([value, pad])
    return True
