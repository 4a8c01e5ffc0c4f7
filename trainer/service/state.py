"""The continual trainer's model state: model, θi deltas, id vocabularies, and its checkpoint.

Tables grow as the stream brings new users, items and domains: user/item tables by doubling their
capacity (rows beyond the vocabulary are unused; rows freed by expiry are reused first, see
vocab.py), domain-indexed tensors by exactly the new domains (``CTRModel.grow_domains``).
Parameters keep their identity, so only optimizer state shaped like the old tensors has to be
rebuilt (the caller rebuilds its framework after a growth).

The checkpoint of version V lives in ``<artifacts>/.trainer/V/`` (tensors via ``torch.save`` and
loaded with ``weights_only=True``; vocabularies and config as JSON), written atomically before V is
published; a restart loads the checkpoint of the live version only.

A checkpoint is *full* (every tensor and the whole vocabularies) or *incremental*: the dense
tensors and θi (small), plus only the table rows and vocabulary rows that changed since its parent
(``rows.npz`` without pickles, their ids in JSON). ``chain.json`` names its parent and base; loading
replays base → ... → V. The trainer writes a full one when the increments since the last full one
reach ``checkpoint_rebase_ratio`` × its size (or ``checkpoint_max_chain`` links), so the bytes a
round writes stay proportional to its changed rows on average and a restart reads a bounded chain.
Retention keeps every checkpoint a kept version's chain needs (``checkpoint_chain``).
"""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
import uuid
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from contracts.errors import DataError
from trainer.models import ModelConfig, build_model
from trainer.models.base import CTRModel
from trainer.params import DomainParameters
from trainer.service.vocab import Vocab

CHECKPOINT_DIR = ".trainer"
TENSORS_FILE = "state.pt"
META_FILE = "meta.json"
ROWS_FILE = "rows.npz"
CHAIN_FILE = "chain.json"
TABLES = {"user": "user_embedding.weight", "item": "item_embedding.weight"}


def read_chain(root: Path, version: str) -> dict[str, Any]:
    """A checkpoint's ``chain.json`` (a checkpoint without one is full: written before increments)."""
    path = Path(root) / CHECKPOINT_DIR / version / CHAIN_FILE
    try:
        return dict(json.loads(path.read_text()))
    except FileNotFoundError:
        return {"kind": "full", "parent": None, "base": version, "base_bytes": 0, "chain_bytes": 0, "chain_len": 0}


def checkpoint_chain(root: Path, version: str) -> list[str]:
    """The checkpoints loading ``version`` reads, newest first (``version`` ... its full base).

    ``DataError`` when a link is missing: that version cannot be resumed from."""
    chain, seen = [version], {version}
    while True:
        folder = Path(root) / CHECKPOINT_DIR / chain[-1]
        if not (folder / META_FILE).exists():
            raise DataError(f"checkpoint {chain[-1]} (needed by {version}) is missing in {folder.parent}")
        link = read_chain(root, chain[-1])
        parent = link.get("parent") if link.get("kind") == "rows" else None
        if parent is None:
            return chain
        if parent in seen:
            raise DataError(f"checkpoint chain of {version} loops at {parent}")
        chain.append(parent)
        seen.add(parent)


def _dir_bytes(folder: Path) -> int:
    return sum(p.stat().st_size for p in folder.iterdir() if p.is_file())


def _generator(*parts: int) -> torch.Generator:
    """A generator seeded by the lineage seed and where it is used, so a replay draws the same rows.

    Every random draw of the state is keyed this way (not by torch's global generator, which other
    code moves): the same seed and the same stream give the same model, run after run.
    """
    seed = 0
    for part in parts:
        seed = (seed * 1_000_003 + int(part)) % (2**63 - 1)
    return torch.Generator().manual_seed(seed)


def _build(model_name: str, config: ModelConfig, seed: int) -> CTRModel:
    """``build_model`` with its initial weights drawn from the lineage seed."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(_generator(seed, config.n_domains).initial_seed())
        return build_model(model_name, config)


def _grow_rows(table: nn.Embedding, needed: int, seed: int, kind: int) -> None:
    """Grow an embedding table in place, doubling until ``needed`` rows fit (new rows ~ N(0, 0.01)).

    Each doubling from C to 2C rows draws its rows from a generator keyed by (seed, table, C): sizes and
    values depend only on how many ids arrived, not on how polls cut the stream, so a replay of the same
    stream builds the same table."""
    weight = table.weight
    capacity = max(weight.shape[0], 1)
    parts = [weight.detach()]
    while capacity < needed:
        parts.append(torch.randn(capacity, weight.shape[1], dtype=weight.dtype,
                                 generator=_generator(seed, kind, capacity)) * 0.01)
        capacity *= 2
    if len(parts) == 1:
        return
    weight.data = torch.cat(parts, dim=0)[:capacity]
    weight.grad = None
    table.num_embeddings = capacity


class ModelState:
    """Model + deltas + vocabularies. Domains get slots (rows of domain-indexed tensors) in arrival order."""

    def __init__(self, model_name: str, config: ModelConfig, specific: str | Sequence[str] | None = None,
                 seed: int = 0) -> None:
        self.model_name = model_name
        self.seed = seed
        self.model: CTRModel = _build(model_name, config, seed)
        self.params = DomainParameters(self.model, specific)
        self.users = Vocab()
        self.items = Vocab()
        self.domains = Vocab()
        # the names the scope resolved to, as checkpoints store it: a later change of a model's HEAD (or of what
        # "default" means) must not change the scope of a lineage that already has θi
        self.specific: list[str] = list(self.params.specific_names)
        self._scoring_means: dict[str, torch.Tensor] = {}  # table → the live version's cold-start vector

    # -- growth ---------------------------------------------------------------------------------
    def bound(self, min_count: int = 1, filter_capacity: int = 1_000_000) -> None:
        """The frequency filter of the user and item vocabularies (trainer/service/vocab.py)."""
        for vocab in (self.users, self.items):
            vocab.min_count, vocab.filter_capacity = max(1, min_count), max(1, filter_capacity)

    def ensure(self, users: list[str], items: list[str], domains: list[str], round_no: int | None = None,
               now: float | None = None) -> bool:
        """Count a sighting of each id, giving rows as due; True when a table grew (rebuild optimizers)."""
        grew = False
        self.users.rows(users, round_no=round_no, now=now)
        self.items.rows(items, round_no=round_no, now=now)
        self.domains.rows(domains)
        new_domains = len(self.domains) - self.model.config.n_domains
        if new_domains > 0 and self.model.config.n_domains == 0:
            # nothing trained yet: build the model with its first domains (no mean row to copy), at the
            # initial table size, so the tables then grow exactly as they would have anyway
            config = dataclasses.replace(self.model.config, n_domains=len(self.domains))
            self.model = _build(self.model_name, config, self.seed)
            self.params = DomainParameters(self.model, self.specific)
            self._scoring_means.clear()
            grew = True
        elif new_domains > 0:
            self.model.grow_domains(new_domains)  # θi of domain-indexed tensors are rows: still valid
            grew = True
        cfg = self.model.config
        if len(self.users) > cfg.n_users:
            _grow_rows(self.model.user_embedding, len(self.users), self.seed, 1)
            grew = True
        if len(self.items) > cfg.n_items:
            _grow_rows(self.model.item_embedding, len(self.items), self.seed, 2)
            grew = True
        if len(self.users) > cfg.n_users or len(self.items) > cfg.n_items:
            self.model.config = dataclasses.replace(cfg, n_users=self.model.user_embedding.num_embeddings,
                                                    n_items=self.model.item_embedding.num_embeddings)
        return grew

    @torch.no_grad()
    def expire(self, round_no: int, now: float, rounds: int = 0, seconds: float = 0.0) -> dict[str, np.ndarray]:
        """Free the rows of ids not seen recently (``Vocab.expire``) and re-initialise them like new rows.

        Returns the freed rows per table ("user", "item"): training rows that use them must be dropped.
        """
        freed = {"user": self.users.expire(round_no, now, rounds, seconds),
                 "item": self.items.expire(round_no, now, rounds, seconds)}
        for n, (kind, rows) in enumerate(freed.items()):
            if len(rows):
                weight = (self.model.user_embedding if kind == "user" else self.model.item_embedding).weight
                gen = _generator(self.seed, 3 + n, round_no)
                weight[torch.from_numpy(rows)] = torch.randn(len(rows), weight.shape[1], dtype=weight.dtype,
                                                             generator=gen) * 0.01
        return freed

    @torch.no_grad()
    def cold_start(self) -> dict[str, list[float]]:
        """Mean vector of the rows ids own: what serving and ``predict`` give ids without a row."""
        return {kind: self._mean(kind).float().tolist() for kind in ("user", "item")}

    def _mean(self, kind: str) -> torch.Tensor:
        vocab, table = (self.users, self.model.user_embedding) if kind == "user" else (self.items,
                                                                                     self.model.item_embedding)
        weight = table.weight.detach()
        if len(vocab) == vocab.active:  # no free rows: the first rows, as before
            return weight[: max(len(vocab), 1)].mean(0)
        return weight[torch.from_numpy(vocab.live()[1])].mean(0) if vocab.active else weight[:1].mean(0)

    def published(self, cold_start: dict[str, list[float]] | None = None) -> None:
        """A version is live: every vocabulary's changes start over, and scoring gives ids without a row its
        ``cold_start`` (``cold_start()`` at its export; None, e.g. on a worker rank: computed when first needed)."""
        for vocab in (self.users, self.items, self.domains):
            vocab.clear_changes()
        self._scoring_means = {} if cold_start is None else {
            kind: torch.tensor(cold_start[kind], dtype=self.model.user_embedding.weight.dtype) for kind in cold_start}

    def _published_mean(self, kind: str) -> torch.Tensor:
        """The live version's cold-start vector: the mean of the rows it holds, which do not change until the
        next round trains them (and publishes)."""
        cached = self._scoring_means.get(kind)
        if cached is None:
            vocab, table = (self.users, self.model.user_embedding) if kind == "user" else (
                self.items, self.model.item_embedding)
            rows = vocab.published_rows()  # O(table): only before a publish set the vector, e.g. after a restart
            weight = table.weight.detach()
            cached = self._scoring_means[kind] = weight[torch.from_numpy(rows)].mean(0) if len(rows) else \
                weight[:1].mean(0)
        return cached

    def _inputs(self, urows: np.ndarray, irows: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
        """User and item vectors as the live version gives them: rows given since its publish (by any earlier
        poll of this round) are not in it, so their ids get its cold-start vector, like ids without a row;
        scores then do not depend on how polls cut the round."""
        out = []
        for rows, vocab, table, kind in ((urows, self.users, self.model.user_embedding, "user"),
                                         (irows, self.items, self.model.item_embedding, "item")):
            rows = vocab.as_published(rows)
            out.append(torch.where(torch.from_numpy(rows >= 0)[:, None], table.weight[np.maximum(rows, 0)],
                                   self._published_mean(kind)))
        return out[0], out[1]

    def slots(self) -> dict[str, int]:
        return {d: i for i, d in enumerate(self.domains.ids)}

    # -- scoring with the live parameters (prequential evaluation) -------------------------------
    @torch.no_grad()
    def predict(self, domain: str, users: list[str], items: list[str], with_delta: bool = True) -> np.ndarray:
        """Click probabilities as serving would give them: ids without a row in the live version get its
        cold-start vector (as in ``predict_rows``); ``with_delta=False``: θS alone, as a domain whose delta
        has not graduated is served."""
        self.model.eval()
        slot = self.domains.get(domain)
        u, i = self._inputs(self.users.rows(users, add=False), self.items.rows(items, add=False))
        if slot is None:
            raise DataError(f"domain {domain!r} has no slot yet: it is scored once its first clicks are buffered")
        d = torch.full((len(users),), slot, dtype=torch.long)
        if with_delta and self.params.has_delta(slot):
            logits = _call_score(self.model, self.params.composed(slot), u, i, d)
        else:
            logits = self.model.score(u, i, d)
        return torch.sigmoid(logits).numpy()

    @torch.no_grad()
    def predict_rows(self, slots: np.ndarray, urows: np.ndarray, irows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """θS and Θi click probabilities of a mixed-domain batch (row ``-1``: the mean vector), in one pass.

        What ``predict`` gives domain by domain (``with_delta`` False / True; rows of a slot without a
        delta get θS twice), without a Python call per domain: θS scores every row at once with the
        batch's domain column, and domains with a delta are scored ``vmap``-ed over their stacked Θi in
        groups of similar row counts (padding at most 2×), as DR trains them."""
        self.model.eval()
        u, i = self._inputs(urows, irows)
        shared = self.model.score(u, i, torch.from_numpy(slots.astype(np.int64)))
        specific = shared.clone()
        with_delta = [int(s) for s in np.unique(slots) if self.params.has_delta(int(s))]
        if with_delta:
            _score_deltas(self.model, self.params, with_delta, slots, u, i, specific)
        return torch.sigmoid(shared).numpy(), torch.sigmoid(specific).numpy()

    # -- checkpoint -----------------------------------------------------------------------------
    def save(self, root: Path, version: str, extra: dict[str, Any], parent: str | None = None,
             changed: dict[str, np.ndarray] | None = None, rebase_ratio: float = 1.0,
             max_chain: int = 50) -> Path:
        """Write ``<root>/.trainer/<version>`` atomically: incremental (the ``changed`` rows per table
        since the checkpoint ``parent``) unless there is no parent or the chain is due a full base."""
        base = Path(root) / CHECKPOINT_DIR
        base.mkdir(parents=True, exist_ok=True)
        link = read_chain(root, parent) if parent is not None and changed is not None else None
        if link is not None and not (base / parent / META_FILE).exists():  # type: ignore[operator]
            link = None
        if link is not None and (link["chain_len"] + 1 > max_chain
                                 or link["chain_bytes"] > rebase_ratio * max(1, link["base_bytes"])):
            link = None  # the increments since the base outweigh it: a new full base
        tmp = base / f".tmp-{version}-{uuid.uuid4().hex[:8]}"
        tmp.mkdir()
        meta: dict[str, Any] = {"model": self.model_name, "config": self.model.config.to_json(),
                                "specific": self.specific, "seed": self.seed, "domains": self.domains.ids,
                                **extra}
        if link is None or changed is None:
            tensors = {f"model/{k}": v.detach() for k, v in self.model.state_dict().items()}
            tensors.update(self.params.state())
            torch.save(tensors, tmp / TENSORS_FILE)
            meta.update({"users": self.users.ids, "items": self.items.ids,
                         "vocab_state": {"users": self.users.state(), "items": self.items.state()}})
            (tmp / META_FILE).write_text(json.dumps(meta))
            size = _dir_bytes(tmp)
            chain = {"kind": "full", "parent": None, "base": version, "base_bytes": size, "chain_bytes": 0,
                     "chain_len": 0}
        else:
            skip = set(TABLES.values())
            tensors = {f"model/{k}": v.detach() for k, v in self.model.state_dict().items() if k not in skip}
            tensors.update(self.params.state())
            torch.save(tensors, tmp / TENSORS_FILE)
            arrays: dict[str, np.ndarray] = {}
            ids: dict[str, list[str | None]] = {}
            for kind, vocab in (("user", self.users), ("item", self.items)):
                rows = np.asarray(changed[kind], dtype=np.int64)
                weight = dict(self.model.named_parameters())[TABLES[kind]].detach()
                names, last_round, last_time = vocab.marks(rows)
                arrays[f"{kind}_rows"] = rows
                arrays[f"{kind}_vecs"] = weight[torch.from_numpy(rows)].numpy()
                arrays[f"{kind}_last_round"] = np.asarray(last_round, dtype=np.int64)
                arrays[f"{kind}_last_time"] = np.asarray(last_time, dtype=np.float64)
                ids[kind] = names
            np.savez(tmp / ROWS_FILE, **arrays)
            meta.update({"row_ids": ids, "n_rows": {"user": len(self.users), "item": len(self.items)},
                         "vocab_small": {"users": self.users.small_state(), "items": self.items.small_state()}})
            (tmp / META_FILE).write_text(json.dumps(meta))
            size = _dir_bytes(tmp)
            chain = {"kind": "rows", "parent": parent, "base": link["base"], "base_bytes": link["base_bytes"],
                     "chain_bytes": link["chain_bytes"] + size, "chain_len": link["chain_len"] + 1}
        (tmp / CHAIN_FILE).write_text(json.dumps(chain))
        final = base / version
        if final.exists():
            shutil.rmtree(final)
        os.rename(tmp, final)
        return final

    @staticmethod
    def prune(root: Path, keep: set[str]) -> list[str]:
        """Delete checkpoints of versions not in ``keep`` (and half-written temp folders)."""
        base = Path(root) / CHECKPOINT_DIR
        removed = [p.name for p in base.iterdir() if p.is_dir() and p.name not in keep] if base.exists() else []
        for name in removed:
            shutil.rmtree(base / name, ignore_errors=True)
        return removed

    @classmethod
    def load(cls, root: Path, version: str) -> tuple[ModelState, dict[str, Any]]:
        folder = Path(root) / CHECKPOINT_DIR / version
        if not (folder / META_FILE).exists():
            raise DataError(f"no trainer checkpoint for live version {version} in {folder}; "
                            "start from scratch with a new artifacts folder or restore the checkpoint")
        chain = checkpoint_chain(root, version)
        if len(chain) == 1:
            return cls._load_full(folder)
        state, _ = cls._load_full(Path(root) / CHECKPOINT_DIR / chain[-1])
        tables = {k: dict(state.model.named_parameters())[n].detach().clone() for k, n in TABLES.items()}
        marks = {"user": state.users, "item": state.items}
        ids = {k: v.ids for k, v in marks.items()}
        rounds = {k: list(v.state()["last_round"]) for k, v in marks.items()}
        times = {k: list(v.state()["last_time"]) for k, v in marks.items()}
        meta: dict[str, Any] = {}
        for link in reversed(chain[:-1]):  # oldest increment first
            meta = json.loads((Path(root) / CHECKPOINT_DIR / link / META_FILE).read_text())
            with np.load(Path(root) / CHECKPOINT_DIR / link / ROWS_FILE, allow_pickle=False) as rows:
                for kind in TABLES:
                    n = int(meta["n_rows"][kind])
                    for lst, fill in ((ids[kind], None), (rounds[kind], 0), (times[kind], 0.0)):
                        lst.extend([fill] * (n - len(lst)))  # type: ignore[list-item]
                    r = rows[f"{kind}_rows"]
                    for j, row in enumerate(r.tolist()):
                        ids[kind][row] = meta["row_ids"][kind][j]
                        rounds[kind][row] = int(rows[f"{kind}_last_round"][j])
                        times[kind][row] = float(rows[f"{kind}_last_time"][j])
                    vecs = torch.from_numpy(rows[f"{kind}_vecs"])
                    cfg = ModelConfig.from_json(meta["config"])
                    need = max(cfg.n_users if kind == "user" else cfg.n_items, int(r.max()) + 1 if len(r) else 0)
                    if tables[kind].shape[0] < need:  # the rows a growth added, drawn as the trainer drew them
                        grown = nn.Embedding.from_pretrained(tables[kind], freeze=False)
                        _grow_rows(grown, need, state.seed, 1 if kind == "user" else 2)
                        tables[kind] = grown.weight.detach()
                    if len(r):
                        tables[kind][torch.from_numpy(r)] = vecs.to(tables[kind].dtype)
        state = cls(meta["model"], ModelConfig.from_json(meta["config"]), meta.get("specific"),
                    int(meta.get("seed", 0)))
        small = meta.get("vocab_small", {})
        state.users = Vocab.restore(ids["user"], {"last_round": rounds["user"], "last_time": times["user"],
                                                  **small.get("users", {})})
        state.items = Vocab.restore(ids["item"], {"last_round": rounds["item"], "last_time": times["item"],
                                                  **small.get("items", {})})
        state.domains = Vocab(meta["domains"])
        tensors = torch.load(folder / TENSORS_FILE, weights_only=True)
        state.model.load_state_dict({k[6:]: v for k, v in tensors.items() if k.startswith("model/")}, strict=False)
        params = dict(state.model.named_parameters())
        with torch.no_grad():
            for kind, name in TABLES.items():
                n = min(params[name].shape[0], tables[kind].shape[0])
                params[name][:n] = tables[kind][:n]
        state.params.load_state({k: v for k, v in tensors.items() if k.startswith("delta/")})
        return state, meta

    @classmethod
    def _load_full(cls, folder: Path) -> tuple[ModelState, dict[str, Any]]:
        meta = json.loads((folder / META_FILE).read_text())
        state = cls(meta["model"], ModelConfig.from_json(meta["config"]), meta.get("specific"),
                    int(meta.get("seed", 0)))
        vocab_state = meta.get("vocab_state", {})
        state.users = Vocab.restore(meta["users"], vocab_state.get("users"))
        state.items = Vocab.restore(meta["items"], vocab_state.get("items"))
        state.domains = Vocab(meta["domains"])
        tensors = torch.load(folder / TENSORS_FILE, weights_only=True)
        state.model.load_state_dict({k[6:]: v for k, v in tensors.items() if k.startswith("model/")})
        state.params.load_state({k: v for k, v in tensors.items() if k.startswith("delta/")})
        return state, meta


def _call_score(model: CTRModel, params: dict[str, torch.Tensor], u: torch.Tensor, i: torch.Tensor,
                d: torch.Tensor) -> torch.Tensor:
    """``model.score`` with some parameters replaced (functional_call on a bound method's module)."""
    from torch.func import functional_call

    wrapper = _Score(model)
    return functional_call(wrapper, {f"inner.{k}": v for k, v in params.items()}, (u, i, d), strict=False)


class _Score(nn.Module):
    """``model.score`` as a module's forward, for ``functional_call`` under ``vmap``."""

    def __init__(self, inner: CTRModel) -> None:
        super().__init__()
        self.inner = inner

    def forward(self, a: torch.Tensor, b: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
        return self.inner.score(a, b, c)


SCORE_BYTES = 128 << 20  # the stacked Θi of one vmapped scoring call stay under this (64 to 1,024 domains)


def _score_deltas(model: CTRModel, params: DomainParameters, domains: list[int], slots: np.ndarray,
                  u: torch.Tensor, i: torch.Tensor, out: torch.Tensor) -> None:
    """Write Θd's logits into ``out`` for the rows of each domain d in ``domains``.

    Domain-indexed tensors are fed as the domain's one row with the domain column at 0 (the form export
    and ``BatchedDR`` use), so no domain table is ever copied per domain."""
    from torch.func import functional_call, vmap

    order = np.argsort(slots, kind="stable")
    starts = np.searchsorted(slots[order], domains, side="left")
    ends = np.searchsorted(slots[order], domains, side="right")
    indexed = set(model.domain_indexed)
    tensors = dict(model.named_parameters())
    tensors.update(dict(model.named_buffers()))
    names = params.specific_names
    wrapper = _Score(model)

    def one(p: dict[str, torch.Tensor], a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        return functional_call(wrapper, {f"inner.{k}": v for k, v in p.items()}, (a, b, torch.zeros_like(a[:, 0],
                               dtype=torch.long)), strict=False)

    scorer = vmap(one)
    per_domain = 4 * sum(int(params.delta(domains[0])[n].numel()) for n in names) or 1
    size = max(64, min(1024, SCORE_BYTES // per_domain))
    widths = [1 << max(0, int(e - s) - 1).bit_length() for s, e in zip(starts, ends, strict=True)]
    by_width: dict[int, list[int]] = {}
    for k, w in enumerate(widths):
        by_width.setdefault(w, []).append(k)
    for width, members in by_width.items():
        for g in range(0, len(members), size):
            group = members[g:g + size]
            doms = torch.tensor([domains[k] for k in group])
            # row positions of each domain, padded by repeating its first row (padding is dropped after)
            idx = np.empty((len(group), width), dtype=np.int64)
            for r, k in enumerate(group):
                rows = order[starts[k]:ends[k]]
                idx[r] = rows[0]
                idx[r, :len(rows)] = rows
            stacked: dict[str, torch.Tensor] = {}
            for n in indexed:  # every domain-indexed tensor: the domain's own row [G, 1, ...]
                stacked[n] = tensors[n].detach().index_select(0, doms).unsqueeze(1)
            for n in names:
                delta = torch.stack([params.delta(domains[k])[n] for k in group])
                base = stacked[n] if n in indexed else tensors[n].detach().unsqueeze(0)
                stacked[n] = base + delta
            flat = torch.from_numpy(idx.reshape(-1))
            logits = scorer(stacked, u[flat].view(len(group), width, -1), i[flat].view(len(group), width, -1))
            counts = (ends - starts)[group]
            valid = np.arange(width)[None, :] < counts[:, None]
            out[torch.from_numpy(idx[valid])] = logits[torch.from_numpy(valid)]
