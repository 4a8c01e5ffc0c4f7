"""The contract every CTR model honours, so learning frameworks and export stay model-agnostic.

A model owns three embedding tables and a head:
- ``user_embedding`` / ``item_embedding``: global features, shared by all domains (their rows are
  what the feature store serves). They may be frozen (pretrained vectors, as on Taobao).
- ``domain_embedding``: one row per domain.
- the head: ``score(user_emb, item_emb, domain)`` maps vectors to one logit per sample.

Every model accepts batches that mix domains (``domain`` is a per-sample LongTensor).
Parameters and buffers whose first axis is the domain axis are listed in ``domain_indexed`` (the domain
table, towers, gates, STAR's per-domain weights, partitioned-norm statistics...). They are only ever read
by indexing dim 0 with the per-sample domain tensor, so export can slice them to one row ``[1, ...]``
and feed domain 0 (see :meth:`CTRModel.domain_slice`), and :meth:`CTRModel.grow_domains` can onboard
a domain without rebuilding the model.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from typing import Any, ClassVar

import torch
from torch import nn


@dataclass
class ModelConfig:
    """Everything needed to rebuild a model without the trainer (stored in manifests)."""

    n_users: int
    n_items: int
    n_domains: int
    emb_dim: int = 128
    hidden: tuple[int, ...] = (256, 128, 64)
    dropout: float = 0.5
    user_dim: int | None = None  # defaults to emb_dim; differs for pretrained vectors
    item_dim: int | None = None
    freeze_user_item: bool = False  # True when user/item vectors are fixed pretrained features
    extra: dict[str, Any] = field(default_factory=dict)  # model-specific knobs (experts, heads, ...)

    @property
    def udim(self) -> int:
        return self.user_dim or self.emb_dim

    @property
    def idim(self) -> int:
        return self.item_dim or self.emb_dim

    def to_json(self) -> dict[str, Any]:
        data = asdict(self)
        data["hidden"] = list(self.hidden)
        return data

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> ModelConfig:
        data = dict(data)
        data["hidden"] = tuple(data.get("hidden", (256, 128, 64)))
        return cls(**data)


def resolve_knobs(config: ModelConfig, defaults: Mapping[str, Any]) -> dict[str, Any]:
    """``config.extra`` over a model's knob defaults; an unknown knob is an error (typos fail loudly).

    Lists become tuples, since JSON manifests turn tuples into lists.
    """
    from contracts.errors import ConfigError

    unknown = sorted(set(config.extra) - set(defaults))
    if unknown:
        raise ConfigError(
            f"unknown model knob(s) {', '.join(unknown)} in ModelConfig.extra; "
            f"this model accepts {', '.join(sorted(defaults)) or 'none'}"
        )
    knobs = {**defaults, **config.extra}
    return {k: tuple(v) if isinstance(v, list) else v for k, v in knobs.items()}


class DomainIndexedModule(nn.Module):
    """A submodule holding tensors whose dim 0 is the domain axis (discovered by ``domain_indexed``).

    ``domain_tensors`` names its own parameters/buffers of that kind. ``new_domain_rows`` says what a
    newly onboarded domain starts with; the default is the mean of the existing rows.
    """

    domain_tensors: ClassVar[tuple[str, ...]] = ()

    def new_domain_rows(self, name: str, tensor: torch.Tensor, n_new: int) -> torch.Tensor:
        return mean_rows(tensor, n_new)


def mean_rows(tensor: torch.Tensor, n_new: int) -> torch.Tensor:
    """``n_new`` copies of the mean over dim 0 (a new domain starts as the average domain)."""
    return tensor.detach().mean(0, keepdim=True).expand(n_new, *tensor.shape[1:]).clone()


class CTRModel(nn.Module):
    """Base class: embedding tables plus an abstract ``score`` head."""

    name: ClassVar[str] = "base"
    # Parameters that stay shared (never get a per-domain delta) by default.
    SHARED_TABLES: ClassVar[tuple[str, ...]] = ("user_embedding.weight", "item_embedding.weight")
    # Domain-axis tensors owned directly by the model (not by a DomainIndexedModule).
    STATIC_DOMAIN_INDEXED: ClassVar[tuple[str, ...]] = ("domain_embedding.weight",)
    # Glob patterns of the layers that turn the last hidden features into the logit: θi's scope under
    # ``specific="head"`` (the continual trainer's default, docs/streaming.md "θi over the head"). Empty:
    # the model declares none, and "head" falls back to every dense parameter (the paper's scope).
    HEAD: ClassVar[tuple[str, ...]] = ()

    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        self.config = config
        self.user_embedding = nn.Embedding(config.n_users, config.udim)
        self.item_embedding = nn.Embedding(config.n_items, config.idim)
        self.domain_embedding = nn.Embedding(config.n_domains, config.emb_dim)
        for table in (self.user_embedding, self.item_embedding, self.domain_embedding):
            nn.init.normal_(table.weight, std=0.01)
        if config.freeze_user_item:
            self.user_embedding.weight.requires_grad_(False)
            self.item_embedding.weight.requires_grad_(False)

    @property
    def in_dim(self) -> int:
        """Width of the concatenated [user, item, domain] input most heads start from."""
        return self.config.udim + self.config.idim + self.config.emb_dim

    def score(self, user_emb: torch.Tensor, item_emb: torch.Tensor, domain: torch.Tensor) -> torch.Tensor:
        """Logits of shape [B] from user vectors [B, Du], item vectors [B, Di] and domain ids [B]."""
        raise NotImplementedError

    def forward(self, user: torch.Tensor, item: torch.Tensor, domain: torch.Tensor) -> torch.Tensor:
        return self.score(self.user_embedding(user), self.item_embedding(item), domain)

    @property
    def domain_indexed(self) -> tuple[str, ...]:
        """Names (as in named_parameters()/named_buffers()) of every tensor whose dim 0 is the domain."""
        names = list(self.STATIC_DOMAIN_INDEXED)
        for prefix, module in self.named_modules():
            if isinstance(module, DomainIndexedModule):
                names += [f"{prefix}.{n}" if prefix else n for n in module.domain_tensors]
        return tuple(names)

    def domain_tensor(self, name: str) -> torch.Tensor:
        """The parameter or buffer called ``name``."""
        module_name, _, attr = name.rpartition(".")
        return getattr(self.get_submodule(module_name), attr)

    def domain_slice(self, domain: int) -> dict[str, torch.Tensor]:
        """Row ``domain`` (shape ``[1, ...]``) of every domain-indexed tensor.

        ``functional_call(model, model.domain_slice(d), (user, item, zeros))`` scores domain ``d``:
        the form export uses to build a one-domain graph.
        """
        from contracts.errors import ConfigError

        if not 0 <= domain < self.config.n_domains:
            raise ConfigError(
                f"domain index {domain} out of range; the model has {self.config.n_domains} domains")
        return {n: self.domain_tensor(n)[domain:domain + 1] for n in self.domain_indexed}

    @torch.no_grad()
    def grow_domains(self, n_new: int) -> None:
        """Append ``n_new`` domains in place: new rows in every domain-indexed tensor.

        Parameters keep their identity (``.data`` is replaced) so references held elsewhere stay
        valid, but their shapes change: drop their ``.grad`` (done here) and any optimizer state or
        per-domain deltas shaped like the old tensors. Existing domains score exactly as before.
        """
        from contracts.errors import ConfigError

        if n_new < 0:
            raise ConfigError(f"cannot grow by {n_new} domains; pass a positive count")
        if n_new == 0:
            return
        grown_tensors = {}
        for name in self.domain_indexed:  # all new rows first: they may read each other's old rows
            module_name, _, attr = name.rpartition(".")
            module = self.get_submodule(module_name)
            tensor = getattr(module, attr)
            if isinstance(module, DomainIndexedModule):
                rows = module.new_domain_rows(attr, tensor, n_new)
            else:
                rows = mean_rows(tensor, n_new)
            grown_tensors[name] = (module, attr, tensor, torch.cat([tensor.detach(), rows.to(tensor)], dim=0))
        for module, attr, tensor, grown in grown_tensors.values():
            if isinstance(tensor, nn.Parameter):
                tensor.data = grown
                tensor.grad = None
            else:
                setattr(module, attr, grown)
        self.domain_embedding.num_embeddings += n_new
        self.config = dataclasses.replace(self.config, n_domains=self.config.n_domains + n_new)

    def l2_embeddings(self, user: torch.Tensor, item: torch.Tensor, domain: torch.Tensor) -> torch.Tensor:
        """L2 of the embedding rows a batch touched (the paper's 1e-5 regulariser)."""
        parts = [self.domain_embedding(domain)]
        if self.user_embedding.weight.requires_grad:
            parts.append(self.user_embedding(user))
        if self.item_embedding.weight.requires_grad:
            parts.append(self.item_embedding(item))
        return sum((p.pow(2).sum() for p in parts), torch.zeros(())) / user.shape[0]
