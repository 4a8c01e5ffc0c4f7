"""Domain Regularization (Algorithm 2) and the frameworks built on it (DR, MAMDR).

For target domain i, each j in (k sampled other domains + i itself, as the authors ran it):
θ̃i ← θi (eq. 5); an update on T_j (eq. 6) then on T_i (eq. 7), all at Θ = θS + θ̃i with θS fixed;
θi ← θi + γ(θ̃i − θi) (eq. 8). The live specific parameters are used as Θ̃ (θS is parked in a buffer
and put back), so any model runs at full speed with its ordinary optimizer.

A domain-indexed tensor's θi is its row i (``DomainParameters.row_names``): on T_j's batches the model
reads row j of θS, and what eq. 6 does to row j is dropped, since no score of domain i reads it. The
dense parameters carry what T_j teaches domain i, as in the paper.
"""

from __future__ import annotations

from collections.abc import Iterable

import torch

from trainer.frameworks.base import Batch, Framework, make_optimizer, only_trainable
from trainer.frameworks.dn import DomainNegotiation


class DomainRegularization(Framework):
    """θS trained by alternate passes; θi by DR each epoch (or after θS converged: ``staged``)."""

    name = "dr"
    uses_deltas = True

    def __init__(self, *args, **kwargs) -> None:  # type: ignore[no-untyped-def]
        super().__init__(*args, **kwargs)
        spec = list(self.params.shared_specific().values())
        self._theta_s = [p.detach().clone() for p in spec]
        self._diff = [torch.zeros_like(p) for p in spec]
        self._dr_opt: torch.optim.Optimizer | None = None
        self.phase = "shared+dr" if self.config.schedule == "interleaved" else "shared"
        gen = torch.Generator().manual_seed(self.config.seed + 7919)
        for d in self.domains:
            delta = self.params.delta(d)
            if self.config.delta_init == "random":  # the authors' independent initialisation
                for n, t in delta.items():
                    std = float(self.params.shared()[n].detach().float().std()) if t.numel() > 1 else 0.01
                    t.copy_(torch.randn(t.shape, generator=gen) * std)

    # -- one DR round (streaming calls this with its own batches) ---------------------------------
    def dr_optimizer(self) -> torch.optim.Optimizer:
        if self._dr_opt is None or not self.config.persist_inner_state:
            self._dr_opt = make_optimizer(self.config.inner, self.params.shared_specific().values(),
                                          self.config.inner_lr)
        return self._dr_opt

    def sample_sequence(self, target: int, rng: torch.Generator) -> list[int]:
        """k other domains without replacement, then the target itself."""
        others = [d for d in self.domains if d != target]
        picked = torch.randperm(len(others), generator=rng)[: self.config.k].tolist()
        return [others[i] for i in picked] + [target]

    def regularize(self, target: int, pairs: Iterable[tuple[Iterable[Batch], Iterable[Batch]]]) -> None:
        """Eqs. 5-8 for each (batches of T_j, batches of T_i) pair, with θS fixed."""
        names = self.params.specific_names
        delta = self.params.delta(target)
        delta_list = [delta[n] for n in names]
        optimizer = self.dr_optimizer()
        with only_trainable(self.params) as spec, torch.no_grad():
            live = [p.detach() for p in spec]
            torch._foreach_copy_(self._theta_s, live)
            try:
                for batches_j, batches_i in pairs:
                    torch._foreach_copy_(live, self._theta_s)
                    self.params.add_delta_(target, live)  # Θ̃ = θS + θi  (eq. 5)
                    with torch.enable_grad():
                        self.update(optimizer, batches_j)  # eq. 6
                        self.update(optimizer, batches_i)  # eq. 7
                    torch._foreach_copy_(self._diff, live)
                    torch._foreach_sub_(self._diff, self._theta_s)  # θ̃i
                    # eq. 8 (a domain-indexed tensor's θi is its row `target`: the only one T_i reads)
                    torch._foreach_lerp_(delta_list, self.params.cut(target, self._diff), self.config.gamma)
            finally:
                torch._foreach_copy_(live, self._theta_s)

    def dr_round(self, target: int, rng: torch.Generator) -> None:
        steps = self.config.dr_steps
        if steps is None and self.config.dr_budget == "half":
            batches = -(-len(self.dataset.train[target]) // self.config.batch_size)
            steps = max(1, -(-batches // 2))
        pairs = [(self.domain_batches(j, rng, steps), self.domain_batches(target, rng, steps))
                 for j in self.sample_sequence(target, rng)]
        self.regularize(target, pairs)

    # -- the epoch --------------------------------------------------------------------------------
    def train_shared_epoch(self, epoch: int, rng: torch.Generator) -> None:
        optimizer = self.inner_optimizer()
        for d in self.shuffled_domains(rng):
            self.update(optimizer, self.domain_batches(d, rng, self.config.inner_steps))

    def train_epoch(self, epoch: int, rng: torch.Generator) -> None:
        if self.phase in ("shared", "shared+dr"):
            self.train_shared_epoch(epoch, rng)
        if self.phase in ("dr", "shared+dr"):
            for d in self.shuffled_domains(rng):
                self.dr_round(d, rng)

    def progress_rate(self, epoch: int) -> float:
        """The shared phase moves θS like its base (Alternate 1, DN β); the DR phase has its own patience."""
        return 1.0 if self.phase == "dr" else super().progress_rate(epoch)

    def next_phase(self) -> bool:
        """``staged``: after θS converged, continue with DR rounds only. False when nothing is left."""
        if self.phase == "shared":
            self.phase = "dr"
            return True
        return False


class MAMDR(DomainRegularization, DomainNegotiation):
    """Algorithm 3: DN on θS, then DR on every θi, each epoch."""

    name = "mamdr"
    train_shared_epoch = DomainNegotiation.train_shared_epoch
