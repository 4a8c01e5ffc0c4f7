"""The serving view of a CTR model: what one domain slot computes from feature-store vectors.

Serving feeds ``user_emb [N, Du]`` and ``item_emb [N, Di]`` (the feature store's vectors) and gets one
logit per row. Every tensor listed in ``CTRModel.domain_indexed`` has the domain on dim 0 and is only
read by indexing that axis with the domain tensor, so the model with those tensors cut to one row
``[1, ...]`` and ``domain = 0`` computes exactly that row's domain. One graph therefore serves every
domain; only its weights differ:

- the **shared view** is θS with each domain-indexed tensor replaced by its mean row over the domains
  (the default a domain with no delta, e.g. one onboarded after training, is served with);
- the **domain view** of slot d is Θd = θS + θd with each domain-indexed tensor cut to row d;
- the **delta** of d is ``domain view − shared view`` for the tensors where the two differ.

Names are the model's own parameter/buffer names, so they stay stable across versions.
"""

from __future__ import annotations

import copy
from collections.abc import Collection, Mapping

import numpy as np
import torch
from torch import nn

from trainer.models.base import CTRModel
from trainer.params import DomainParameters

Arrays = dict[str, np.ndarray]


class ServingView(nn.Module):
    """``forward(user_emb, item_emb) -> logit [N]`` over a model whose domain-indexed tensors have one row."""

    def __init__(self, model: CTRModel) -> None:
        super().__init__()
        self.m = model

    def forward(self, user_emb: torch.Tensor, item_emb: torch.Tensor) -> torch.Tensor:
        domain = torch.zeros(user_emb.shape[0], dtype=torch.long, device=user_emb.device)
        return self.m.score(user_emb, item_emb, domain)


def _set_tensor(module: nn.Module, name: str, value: torch.Tensor) -> None:
    """Replace a parameter or buffer (possibly of another shape) by name."""
    owner_name, _, leaf = name.rpartition(".")
    owner = module.get_submodule(owner_name) if owner_name else module
    if leaf in owner._parameters:
        owner._parameters[leaf] = nn.Parameter(value.detach().clone(), requires_grad=False)
    elif leaf in owner._buffers:
        owner._buffers[leaf] = value.detach().clone()
    else:
        raise KeyError(f"{name!r} is neither a parameter nor a buffer of {type(module).__name__}")


def graph_tensor_names(model: CTRModel) -> list[str]:
    """Parameters and buffers the head can read (the user/item tables are the feature store's)."""
    skip = set(model.SHARED_TABLES)
    names = [n for n, _ in model.named_parameters() if n not in skip]
    names += [n for n, _ in model.named_buffers() if n not in skip]
    return names


def _all_tensors(model: nn.Module) -> dict[str, torch.Tensor]:
    tensors = dict(model.named_parameters())
    tensors.update(dict(model.named_buffers()))
    return tensors


def _base_tensors(model: CTRModel) -> dict[str, torch.Tensor]:
    tensors = _all_tensors(model)
    return {n: tensors[n].detach() for n in graph_tensor_names(model)}


def shared_view_arrays(model: CTRModel) -> Arrays:
    """θS as the graph sees it: domain-indexed tensors collapse to their mean row (the default domain)."""
    out: Arrays = {}
    for name, t in _base_tensors(model).items():
        if name in model.domain_indexed:
            t = t.float().mean(dim=0, keepdim=True).to(t.dtype) if t.is_floating_point() else t[:1]
        out[name] = t.cpu().numpy().copy()
    return out


def domain_view_arrays(params: DomainParameters, slot: int, with_delta: bool = True) -> Arrays:
    """Θd = θS + θd with domain-indexed tensors cut to row ``slot`` (``with_delta=False``: θS alone, still
    with the domain's own rows: what a domain whose delta has not graduated is served with)."""
    model = params.model
    if not isinstance(model, CTRModel):
        raise TypeError("export needs a CTRModel (it relies on domain_indexed)")
    base = _base_tensors(model)
    composed: Mapping[str, torch.Tensor] = (params.composed(slot) if with_delta and params.has_delta(slot)
                                            else {})
    out: Arrays = {}
    for name, t in base.items():
        value = composed[name].detach() if name in composed else t
        if name in model.domain_indexed:
            value = value[slot : slot + 1]
        out[name] = value.cpu().numpy().copy()
    return out


def delta_arrays(shared: Arrays, domain_view: Arrays) -> Arrays:
    """Θd − shared view, only for float tensors that differ (a domain served by θS has an empty delta)."""
    out: Arrays = {}
    for name, value in domain_view.items():
        base = shared[name]
        if value.dtype.kind != "f":
            if not np.array_equal(value, base):
                raise ValueError(f"non-float tensor {name!r} differs per domain; it cannot be a delta")
            continue
        diff = (value.astype(np.float32) - base.astype(np.float32)).astype(np.float32)
        if np.any(diff != 0):
            out[name] = diff
    return out


def build_view_module(model: CTRModel, arrays: Arrays) -> ServingView:
    """A detached copy of the model's head in eval mode holding ``arrays`` (for export and checks)."""
    # Share (do not copy) the possibly huge user/item tables: the head never reads them.
    memo: dict[int, object] = {}
    for name, t in _all_tensors(model).items():
        if name in model.SHARED_TABLES:
            memo[id(t)] = t
    clone = copy.deepcopy(model, memo)
    for name, value in arrays.items():
        _set_tensor(clone, name, torch.from_numpy(np.ascontiguousarray(value)))
    clone.eval()
    return ServingView(clone)


def all_delta_arrays(params: DomainParameters, shared: Arrays, slots: Mapping[str, int],
                     without_delta: Collection[str] = (), names: Collection[str] | None = None,
                     chunk: int = 256) -> dict[str, Arrays]:
    """``delta_arrays(shared, domain_view_arrays(params, slot, with_delta))`` of every domain, computed per
    tensor over all domains at once (``chunk`` domains at a time) instead of a view per domain: the
    same float32 arithmetic (Θd = θS + θd, minus the shared view), without a Python pass per domain."""
    model = params.model
    if not isinstance(model, CTRModel):
        raise TypeError("export needs a CTRModel (it relies on domain_indexed)")
    base = _base_tensors(model)
    indexed = set(model.domain_indexed)
    specific = set(params.specific_names)
    order = list(slots)
    out: dict[str, Arrays] = {d: {} for d in order}
    for start in range(0, len(order), chunk):
        part = order[start:start + chunk]
        slot_idx = torch.tensor([slots[d] for d in part], dtype=torch.long)
        delta_of = [k for k, d in enumerate(part) if d not in without_delta and params.has_delta(slots[d])]
        for name, t in base.items():
            if names is not None and name not in names:
                continue
            if name in indexed:
                rows = t.index_select(0, slot_idx)  # [D, ...]: each domain's own row
                if not t.is_floating_point():
                    if not bool((rows == t[:1]).all()):
                        raise ValueError(f"non-float tensor {name!r} differs per domain; it cannot be a delta")
                    continue
                if name in specific and delta_of:
                    stacked = torch.cat([params.delta(slots[part[k]])[name] for k in delta_of])
                    rows = rows.clone()
                    rows[torch.tensor(delta_of)] += stacked.to(rows.dtype)
                keep = range(len(part))
            elif name in specific and delta_of and t.is_floating_point():
                rows = torch.stack([params.delta(slots[part[k]])[name] for k in delta_of]) + t
                keep = delta_of
            else:
                continue  # the same tensor for every domain: no delta
            values = rows.cpu().numpy()
            diff = (values.astype(np.float32) - shared[name].astype(np.float32)).astype(np.float32)
            if name in indexed:
                diff = diff[:, None]  # back to the one-row shape [1, ...] the graph holds
            nonzero = np.any(diff.reshape(len(diff), -1) != 0, axis=1)
            for j, k in enumerate(keep):
                if nonzero[j]:
                    out[part[k]][name] = diff[j]
    return out
