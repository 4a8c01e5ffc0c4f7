"""The round plan: everything rank 0 sends every worker at the start of a round (JSON + tensors).

It holds the dense part of θS (every parameter and buffer except the user/item tables, which
workers fetch from the feature store instead), θi of the round's target domains, the round's rows
per domain (global table rows and labels: DN shards them, DR needs whole domains), the touched
rows of each table, the values of touched rows the live feature-store version does not hold yet,
and the schedule (domain order, targets, seeds, step sizes).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from trainer.data.base import Split
from trainer.service.state import ModelState

TABLES = {"user": "user_embedding.weight", "item": "item_embedding.weight"}


@dataclass
class RoundPlan:
    meta: dict[str, Any]
    tensors: dict[str, torch.Tensor]

    # -- views ----------------------------------------------------------------------------------------
    @property
    def order(self) -> list[int]:
        return list(self.meta["order"])

    @property
    def targets(self) -> list[int]:
        return list(self.meta["targets"])

    def split(self, slot: int) -> Split:
        t = self.tensors
        return Split(user=t[f"rows/{slot}/user"].numpy(), item=t[f"rows/{slot}/item"].numpy(),
                     label=t[f"rows/{slot}/label"].numpy())

    def dense(self) -> dict[str, torch.Tensor]:
        return {k[len("dense/"):]: v for k, v in self.tensors.items() if k.startswith("dense/")}

    def deltas(self) -> dict[int, dict[str, torch.Tensor]]:
        out: dict[int, dict[str, torch.Tensor]] = {}
        for k, v in self.tensors.items():
            if k.startswith("delta/"):
                _, slot, name = k.split("/", 2)
                out.setdefault(int(slot), {})[name] = v
        return out

    def events(self) -> int:
        return int(sum(self.tensors[f"rows/{s}/label"].numel() for s in self.meta["domains"]))

    def nbytes(self) -> int:
        return sum(t.numel() * t.element_size() for t in self.tensors.values())


def build_plan(state: ModelState, train: dict[int, Split], targets: Sequence[int], order: Sequence[int], *,
               round_no: int, seed: int, knobs: dict[str, Any], fs_version: str | None,
               n_published: dict[str, int]) -> RoundPlan:
    """Rank 0: the plan of one round from the trainer's state and the round's rows (global rows)."""
    model = state.model
    tensors: dict[str, torch.Tensor] = {}
    skip = set(TABLES.values())
    for name, value in model.state_dict().items():
        if name not in skip:
            tensors[f"dense/{name}"] = value.detach().clone()
    for slot in targets:
        if state.params.has_delta(slot):
            for name, value in state.params.delta(slot).items():
                tensors[f"delta/{slot}/{name}"] = value.detach().clone()
    for slot, split in train.items():
        tensors[f"rows/{slot}/user"] = torch.from_numpy(np.ascontiguousarray(split.user, dtype=np.int64))
        tensors[f"rows/{slot}/item"] = torch.from_numpy(np.ascontiguousarray(split.item, dtype=np.int64))
        tensors[f"rows/{slot}/label"] = torch.from_numpy(np.ascontiguousarray(split.label, dtype=np.float32))
    ids: dict[str, list[str]] = {}
    vocab = {"user": state.users.ids, "item": state.items.ids}
    for kind, table in TABLES.items():
        rows = np.unique(np.concatenate([getattr(s, kind) for s in train.values()]).astype(np.int64))
        tensors[f"touched/{kind}"] = torch.from_numpy(rows)
        n_pub = n_published[kind] if fs_version is not None else 0
        ids[kind] = [vocab[kind][r] for r in rows[rows < n_pub]]
        weight = dict(model.named_parameters())[table].detach()
        tensors[f"new/{kind}"] = weight[torch.from_numpy(rows[rows >= n_pub])].clone()
    meta = {
        "round": round_no, "seed": seed, "model": state.model_name, "config": model.config.to_json(),
        "specific": state.specific, "order": [int(d) for d in order], "targets": sorted(int(t) for t in targets),
        "domains": sorted(int(s) for s in train), "fs_version": fs_version, "ids": ids,
        "n_published": {k: (n_published[k] if fs_version is not None else 0) for k in TABLES}, **knobs,
    }
    return RoundPlan(meta, tensors)
