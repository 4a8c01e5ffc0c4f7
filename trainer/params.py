"""Shared θS and per-domain θi for any ``torch.nn.Module``: domain i is scored with Θi = θS + θi.

θS is the model's own parameters. θi exists only for the parameters chosen as domain-specific and
has the same shapes; it starts at zero, so a new domain is served by θS until it is trained.
Scoring with Θi uses ``torch.func.functional_call``: the module is never copied or mutated.

Which parameters are specific is configurable with glob patterns over parameter names; the default
is every trainable parameter except the user and item embedding tables (the feature store's).

A tensor whose dim 0 is the domain axis (``CTRModel.domain_indexed``: the domain embedding, STAR's
partitioned weights, ...) gets a *row* delta ``[1, ...]``: domain i's samples only ever read row i,
so a full-size delta per domain would cost O(n_domains²) memory for nothing (69,102 domains × a
69,102-row table). Row deltas also survive onboarding: growing the domain axis leaves them valid.
"""

from __future__ import annotations

import fnmatch
from collections.abc import Iterable, Mapping, Sequence

import torch
from torch import nn
from torch.func import functional_call

from contracts.errors import ConfigError

Params = dict[str, torch.Tensor]
STACK = "delta/stack/"  # checkpoint keys of the stacked θi (``DomainParameters.state``)


def default_specific_names(model: nn.Module) -> list[str]:
    """Every trainable parameter except the shared user/item tables."""
    shared_tables = set(getattr(model, "SHARED_TABLES", ()))
    return [n for n, p in model.named_parameters() if p.requires_grad and n not in shared_tables]


def resolve_specific(model: nn.Module, spec: str | Sequence[str] | None) -> list[str]:
    """Names of the domain-specific parameters.

    ``spec`` is ``None``/``"default"`` (see :func:`default_specific_names`), ``"head"`` (the model's
    ``HEAD`` patterns: the layers that make the logit; the default when the model declares none), ``"all"``
    (every trainable parameter), ``"none"``, a comma-separated string of glob patterns, or a list of them.
    A pattern that matches nothing is an error: a typo must not silently train nothing.
    """
    names = [n for n, p in model.named_parameters() if p.requires_grad]
    if spec == "head":
        spec = list(getattr(model, "HEAD", ())) or None
    if spec is None or spec == "default":
        return default_specific_names(model)
    if spec == "all":
        return names
    if spec == "none":
        return []
    patterns = [s.strip() for s in spec.split(",")] if isinstance(spec, str) else list(spec)
    chosen: list[str] = []
    for pattern in patterns:
        hits = [n for n in names if fnmatch.fnmatchcase(n, pattern)]
        if not hits:
            raise ConfigError(
                f"specific-parameter pattern {pattern!r} matches no trainable parameter; "
                f"names look like {', '.join(names[:4])}"
            )
        chosen += [h for h in hits if h not in chosen]
    return [n for n in names if n in chosen]


class DomainParameters:
    """θS (the wrapped model's parameters) plus lazily created zero deltas θi per domain index."""

    def __init__(self, model: nn.Module, specific: str | Sequence[str] | None = None) -> None:
        self.model = model
        self.specific_names: list[str] = resolve_specific(model, specific)
        self._params = dict(model.named_parameters())
        indexed = set(getattr(model, "domain_indexed", ()))
        self.row_names: frozenset[str] = frozenset(n for n in self.specific_names if n in indexed)
        self.deltas: dict[int, Params] = {}

    # -- θS -------------------------------------------------------------------------------------
    def shared(self) -> dict[str, nn.Parameter]:
        """θS: every trainable parameter of the model, by name."""
        return {n: p for n, p in self._params.items() if p.requires_grad}

    def shared_specific(self) -> dict[str, nn.Parameter]:
        """The part of θS that has per-domain deltas."""
        return {n: self._params[n] for n in self.specific_names}

    # -- θi -------------------------------------------------------------------------------------
    def delta_shape(self, name: str) -> torch.Size:
        """Shape of θi[name]: the parameter's, or one row of it for a domain-indexed tensor."""
        shape = self._params[name].shape
        return torch.Size((1, *shape[1:])) if name in self.row_names else shape

    def delta(self, domain: int) -> Params:
        """θi, created as zeros the first time a domain is seen."""
        if domain not in self.deltas:
            self.deltas[domain] = {
                n: self._params[n].new_zeros(self.delta_shape(n)) for n in self.specific_names
            }
        return self.deltas[domain]

    def cut(self, domain: int, full: Sequence[torch.Tensor]) -> list[torch.Tensor]:
        """Views of full-size tensors (in ``specific_names`` order) shaped like θ_domain."""
        return [t[domain:domain + 1] if n in self.row_names else t
                for n, t in zip(self.specific_names, full, strict=True)]

    def add_delta_(self, domain: int, live: Sequence[torch.Tensor],
                   delta: Mapping[str, torch.Tensor] | None = None) -> None:
        """In place: ``live`` (full-size, ``specific_names`` order) += θ_domain (or ``delta``)."""
        d = self.delta(domain) if delta is None else delta
        torch._foreach_add_(self.cut(domain, live), [d[n] for n in self.specific_names])

    def has_delta(self, domain: int) -> bool:
        return domain in self.deltas

    def set_delta(self, domain: int, values: Mapping[str, torch.Tensor]) -> None:
        """Copy values in; a full-size value of a domain-indexed tensor (older checkpoints) gives its row."""
        delta = self.delta(domain)
        with torch.no_grad():
            for n, v in values.items():
                if n in self.row_names and v.dim() > 0 and v.shape[0] != 1 and v.shape[1:] == delta[n].shape[1:]:
                    if v.shape[0] <= domain:
                        raise ConfigError(f"delta {n!r} of domain {domain} has only {v.shape[0]} rows")
                    v = v[domain:domain + 1]
                delta[n].copy_(v)

    def composed(self, domain: int, delta: Mapping[str, torch.Tensor] | None = None, *,
                 detach_shared: bool = False) -> Params:
        """Θi = θS + θi for the specific names (pass ``delta`` to compose a candidate θ̃i).

        Differentiable in the delta and (unless ``detach_shared``) in θS; a row delta is added to
        row ``domain`` only."""
        d = self.delta(domain) if delta is None else delta
        out: Params = {}
        for n in self.specific_names:
            p = self._params[n].detach() if detach_shared else self._params[n]
            if n in self.row_names:
                out[n] = p.index_add(0, torch.tensor([domain], device=p.device), d[n])
            else:
                out[n] = p + d[n]
        return out

    # -- scoring --------------------------------------------------------------------------------
    def call(self, params: Mapping[str, torch.Tensor], *inputs: torch.Tensor) -> torch.Tensor:
        """Run the model with some parameters replaced (the rest are the model's own)."""
        return functional_call(self.model, dict(params), inputs, strict=False, tie_weights=True)

    def forward_domain(self, domain: int, *inputs: torch.Tensor) -> torch.Tensor:
        """Score a batch with Θ_domain (the batch's own domain column is passed through untouched)."""
        if not self.has_delta(domain):
            return self.model(*inputs)
        return self.call(self.composed(domain), *inputs)

    def forward_grouped(self, user: torch.Tensor, item: torch.Tensor, domain: torch.Tensor) -> torch.Tensor:
        """Score a mixed-domain batch, each sample with its own domain's Θi."""
        out = torch.empty(user.shape[0], dtype=torch.float32, device=user.device)
        for d in torch.unique(domain).tolist():
            idx = (domain == d).nonzero(as_tuple=True)[0]
            out[idx] = self.forward_domain(int(d), user[idx], item[idx], domain[idx])
        return out

    # -- persistence (raw tensors, never pickled objects) ----------------------------------------
    def state(self) -> dict[str, torch.Tensor]:
        """Flat tensor dict for ``torch.save`` + ``weights_only`` loading: every domain's θi stacked per
        name (``delta/stack/<name>`` [D, ...], their domains in ``delta/stack/#slots``). One tensor per
        name rather than per domain and name: pickling 7,000 small tensors took ~2 s at 1,000 domains."""
        slots = sorted(self.deltas)
        if not slots:
            return {}
        out = {f"{STACK}#slots": torch.tensor(slots, dtype=torch.long)}
        for n in self.specific_names:
            out[f"{STACK}{n}"] = torch.stack([self.deltas[d][n].detach() for d in slots])
        return out

    def load_state(self, state: Mapping[str, torch.Tensor]) -> None:
        """Either layout: stacked (``state``), or ``delta/<domain>/<name>`` per domain (older checkpoints)."""
        stacked = {k[len(STACK):]: v for k, v in state.items() if k.startswith(STACK)}
        if stacked:
            slots = stacked.pop("#slots").tolist()
            for name in stacked:
                if name not in self.specific_names:
                    raise ConfigError(f"saved delta {name!r} is not a specific parameter of this model")
            for k, d in enumerate(slots):
                self.set_delta(int(d), {name: value[k] for name, value in stacked.items()})
        for key, value in state.items():
            if key.startswith(STACK):
                continue
            _, d, name = key.split("/", 2)
            if name not in self.specific_names:
                raise ConfigError(f"saved delta {name!r} is not a specific parameter of this model")
            self.set_delta(int(d), {name: value})

    def domains(self) -> Iterable[int]:
        return sorted(self.deltas)
