"""Separate: one independent copy of the whole model per domain, trained only on that domain.

Full copies (not θi over a frozen θS): the user/item tables are learned too, so a domain model
is what a team without multi-domain training would ship. Memory is n_domains × the model.
"""

from __future__ import annotations

import copy

import torch

from trainer.frameworks.base import Framework, make_optimizer


class Separate(Framework):
    name = "separate"

    def __init__(self, *args, **kwargs) -> None:  # type: ignore[no-untyped-def]
        super().__init__(*args, **kwargs)
        self.models = {d: copy.deepcopy(self.model) for d in self.domains}
        self.optimizers = {d: make_optimizer(self.config.inner, m.parameters(), self.config.inner_lr)
                           for d, m in self.models.items()}

    def train_epoch(self, epoch: int, rng: torch.Generator) -> None:
        shared = self.model
        try:
            for d in self.shuffled_domains(rng):
                self.model = self.models[d]  # loss() and update() use self.model
                self.update(self.optimizers[d], self.domain_batches(d, rng, self.config.inner_steps))
        finally:
            self.model = shared

    @torch.no_grad()
    def score(self, user: torch.Tensor, item: torch.Tensor, domain: torch.Tensor) -> torch.Tensor:
        out = torch.empty(user.shape[0], dtype=torch.float32, device=self.device)
        for d in torch.unique(domain).tolist():
            idx = (domain == d).nonzero(as_tuple=True)[0]
            model = self.models[int(d)].eval()
            dev = self.device
            out[idx] = model(user[idx].to(dev), item[idx].to(dev), domain[idx].to(dev))
        return out

    def snapshot(self) -> dict[str, torch.Tensor]:
        return {f"{d}/{k}": v.detach().clone()
                for d, m in self.models.items() for k, v in m.state_dict().items()}

    def restore(self, state: dict[str, torch.Tensor]) -> None:  # type: ignore[override]
        for d, m in self.models.items():
            prefix = f"{d}/"
            m.load_state_dict({k[len(prefix):]: v for k, v in state.items() if k.startswith(prefix)})
