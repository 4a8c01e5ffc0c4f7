"""The epoch loop: train, validate on mean AUC over domains (recording each domain's validation loss and
AUC per epoch, curves.py), stop early, keep the best state,
report per-domain test AUC (and after the optional per-domain finetune).

``FitState`` is everything the loop carries (RNG states included), so a ``staged`` DR/MAMDR run can
resume from the finished Alternate/DN run whose trajectory its first stage would repeat exactly.
"""

from __future__ import annotations

import copy
import logging
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import torch

from trainer.evaluation import EarlyStopping, aucs_of, domain_auc, domain_scores, mean_auc, paired_auc_z
from trainer.frameworks.alternate import Alternate
from trainer.frameworks.base import Framework
from trainer.frameworks.config import SAFETY_EPOCHS, FrameworkConfig
from trainer.frameworks.curves import ValCurves
from trainer.frameworks.dn import DomainNegotiation
from trainer.frameworks.finetune import finetune_deltas

log = logging.getLogger(__name__)


@dataclass
class DeltaSelection:
    """``dr_select="domain"``: per domain, the DR epoch whose θi beats θS alone on that domain's
    validation rows, or none (epoch -1: the domain serves θS alone).

    With many domains, picking each domain's best epoch on its own noisy validation AUC is optimistic
    (the winner's curse: some θi win by chance and lose on test). So θi must beat θS alone by
    ``dr_select_se`` standard errors of the paired AUC difference (DeLong): as in the one-standard-error
    rule of model selection, the simpler model (θS) is kept unless the richer one is better beyond noise
    (two by default, since every domain, at every DR epoch where it rose, is a separate test).
    """

    best: dict[int, float]
    epoch: dict[int, int]
    baseline: dict[int, np.ndarray]  # θS alone: each domain's validation scores
    deltas: dict[int, dict[str, torch.Tensor]] = field(default_factory=dict)

    @classmethod
    def start(cls, fw: Framework, epoch: int) -> DeltaSelection:
        saved = dict(fw.params.deltas)
        fw.params.deltas.clear()
        try:
            scores = domain_scores(fw.score, fw.dataset.val, fw.config.eval_batch_size)
        finally:
            fw.params.deltas.update(saved)
        base = aucs_of(fw.dataset.val, scores)
        return cls(best=base, epoch={d: epoch for d in base}, baseline=scores)

    def observe(self, fw: Framework, scores: dict[int, np.ndarray], per_domain: dict[int, float],
                epoch: int) -> None:
        """``scores``/``per_domain``: this epoch's validation scores and AUCs (computed once, by the caller)."""
        risen = {d for d, value in per_domain.items() if value == value and value > self.best.get(d, -float("inf"))}
        val = fw.dataset.val
        for d in risen:
            if not paired_auc_z(val[d].label, scores[d], self.baseline[d]) >= fw.config.dr_select_se:
                continue  # not better than θS alone beyond noise (or too few rows of a class to tell)
            self.best[d], self.epoch[d] = per_domain[d], epoch
            self.deltas[d] = {n: t.detach().clone() for n, t in fw.params.delta(d).items()}

    def install(self, fw: Framework) -> None:
        fw.params.deltas.clear()
        fw.params.deltas.update({d: {n: t.clone() for n, t in delta.items()} for d, delta in self.deltas.items()})


@dataclass
class FitState:
    stopper: EarlyStopping
    best_state: dict[str, torch.Tensor]
    rng_state: torch.Tensor
    torch_rng_state: torch.Tensor
    times: list[float] = field(default_factory=list)
    history: list[float] = field(default_factory=list)
    phases: list[str] = field(default_factory=list)
    capped: list[str] = field(default_factory=list)  # phases that hit a budget while still improving
    selection: DeltaSelection | None = None
    conflict: list[list[list[float]]] = field(default_factory=list)  # DN: per-epoch domain cosine matrix
    guard: str | None = None  # dn_guard: whose θS was kept ("dn" or "alternate")
    curves: ValCurves = field(default_factory=ValCurves)  # per-epoch validation loss and AUC per domain


@dataclass
class FitResult:
    framework: str
    best_epoch: int
    epochs: int
    best_val_auc: float
    epoch_times: list[float]
    val_history: list[float]
    test: dict[int, float]
    test_finetuned: dict[int, float] | None = None
    phases: list[str] = field(default_factory=list)
    state: FitState | None = field(default=None, repr=False)
    capped: list[str] = field(default_factory=list)
    conflict: list[list[list[float]]] = field(default_factory=list)
    kept_deltas: int | None = None  # dr_select="domain": domains that keep their θi
    guard: str | None = None  # dn_guard: whose θS was kept ("dn" or "alternate")
    val_curves: ValCurves = field(default_factory=ValCurves)  # aligned with val_history

    @property
    def time_to_best_s(self) -> float:
        """Wall time of every epoch up to and including the best one (a staged run counts its first stage)."""
        return float(sum(self.epoch_times[: self.best_epoch + 1]))

    @property
    def test_auc(self) -> float:
        return mean_auc(self.test)

    @property
    def mean_epoch_time(self) -> float:
        return sum(self.epoch_times) / max(1, len(self.epoch_times))


def _enter_next_phase(stopper: EarlyStopping, cfg: FrameworkConfig) -> None:
    stopper.bad = 0
    if cfg.dr_patience is not None:
        stopper.patience = cfg.dr_patience


def patience_at(fw: Framework, epoch: int, second_phase: bool) -> int:
    """Patience in epochs for this epoch: ``patience`` (``dr_patience`` in a staged second phase) in units
    of Alternate-equivalent progress, i.e. divided by the framework's ``progress_rate`` (DN: β)."""
    cfg = fw.config
    base = cfg.dr_patience if second_phase and cfg.dr_patience is not None else cfg.patience
    if cfg.patience_unit == "epoch":
        return base
    rate = min(1.0, max(1e-6, fw.progress_rate(epoch)))
    return max(base, math.ceil(base / rate - 1e-9))


def fit(fw: Framework, progress: Callable[[int, float], None] | None = None,
        resume_shared: FitState | None = None, reference: FitResult | None = None) -> FitResult:
    """Train ``fw`` until early stopping (patience on mean validation AUC) or ``epochs``.

    ``resume_shared``: the state of a finished run of this framework's first stage (same seed and
    config); its best θS is loaded and training continues with the next phase.
    ``reference``: with ``dn_guard``, a finished Alternate run of the same seed and config (it is run
    here when not given; passing it only saves that time).
    """
    if resume_shared is None and _guarded(fw):
        return _fit_guarded(fw, progress, reference)
    return _fit(fw, progress, resume_shared)


def _guarded(fw: Framework) -> bool:
    """DN and staged MAMDR, when they negotiate at all: with β = 1 and interpolation DN is Alternate."""
    cfg = fw.config
    negotiates = cfg.outer != "interp" or cfg.beta < 1 or cfg.beta_schedule != "constant"
    staged = fw.name == "dn" or (fw.name == "mamdr" and cfg.schedule == "staged")
    return cfg.dn_guard and negotiates and staged and isinstance(fw, DomainNegotiation)


def _fit_guarded(fw: Framework, progress: Callable[[int, float], None] | None,
                 reference: FitResult | None) -> FitResult:
    """DN's θS is kept only where it beats plain alternate training on validation (``dn_guard``).

    Negotiation moves θS β of the way per epoch; on data where the best model comes after a few large
    steps (a small set that over-fits within 2-3 epochs) that costs more than eq. 18's term gains, and
    DN ends below Alternate. Both runs start from the same initial model and seed; DN's θS is kept only
    if its best validation AUC is higher (a tie keeps the simpler rule's), and for MAMDR it is the θS its
    DR phase starts from. The time is both runs'.
    """
    if reference is not None and (reference.framework != "alternate" or reference.state is None):
        raise ValueError(f"dn_guard needs a finished Alternate run as reference, not {reference.framework!r}")
    start = copy.deepcopy(fw.model)  # untouched: the framework was just built
    negotiated = _train(DomainNegotiation(copy.deepcopy(start), fw.dataset, fw.config), progress, None)
    plain = reference.state if reference is not None else _train(
        Alternate(copy.deepcopy(start), fw.dataset, fw.config), progress, None)
    assert plain is not None  # checked above; for the type checker
    keep_dn = negotiated.stopper.best > plain.stopper.best
    first, second = (plain, negotiated) if keep_dn else (negotiated, plain)
    state = copy.deepcopy(second)  # the kept run is put last, so its epochs are the ones "up to the best"
    offset = len(first.times)
    state.times, state.history = list(first.times) + state.times, list(first.history) + state.history
    state.phases = list(first.phases) + state.phases
    state.curves = first.curves.concat(state.curves)
    state.conflict = list(negotiated.conflict)
    state.stopper.best_epoch += offset
    state.guard = "dn" if keep_dn else "alternate"
    if fw.name == "dn":
        torch.set_rng_state(state.torch_rng_state)  # a finetune draws as after the kept run
        return _result(fw, state)
    return _fit(fw, progress, state)  # MAMDR: the DR phase from the kept θS


def _fit(fw: Framework, progress: Callable[[int, float], None] | None,
         resume_shared: FitState | None) -> FitResult:
    return _result(fw, _train(fw, progress, resume_shared))


def _train(fw: Framework, progress: Callable[[int, float], None] | None,
           resume_shared: FitState | None) -> FitState:
    """The epoch loop; returns the finished state (best θS and θi selection not yet installed)."""
    cfg = fw.config
    rng = torch.Generator()
    if resume_shared is None:
        torch.manual_seed(cfg.seed)  # dropout draws
        rng.manual_seed(cfg.seed)
        state = FitState(EarlyStopping(cfg.patience, cfg.min_delta), fw.snapshot(), rng.get_state(),
                         torch.get_rng_state())
    else:
        state = copy.deepcopy(resume_shared)
        rng.set_state(state.rng_state)
        torch.set_rng_state(state.torch_rng_state)
        fw.model.load_state_dict({k[6:]: v for k, v in state.best_state.items() if k.startswith("model/")})
        state.best_state = fw.snapshot()
        next_phase = getattr(fw, "next_phase", None)
        if next_phase is None or not next_phase():
            raise ValueError(f"{fw.name} has no phase after the shared one")
        _enter_next_phase(state.stopper, cfg)
        state.selection = _selection(fw, state.stopper.best_epoch)
    stopper = state.stopper
    epoch = len(state.times)
    phase_start = epoch  # ``epochs`` is a budget per phase
    while True:
        second = phase_start > 0 or resume_shared is not None
        hard = cfg.dr_epochs if second and cfg.dr_epochs is not None else cfg.epochs
        budget = SAFETY_EPOCHS if hard is None else hard
        stop = epoch - phase_start >= budget
        if stop and stopper.bad < stopper.patience and len(state.history) > phase_start:
            phase = str(getattr(fw, "phase", fw.name))
            kind = "the hard budget" if hard is not None else f"the safety ceiling of {SAFETY_EPOCHS} epochs"
            state.capped.append(phase)
            log.warning("%s (%s phase) stopped by %s after %d epochs while the validation AUC was still "
                        "improving (best at epoch %d): the result is not converged", fw.name, phase, kind,
                        epoch - phase_start, stopper.best_epoch + 1)
        if not stop:
            start = time.perf_counter()
            fw.train_epoch(epoch, rng)
            state.times.append(time.perf_counter() - start)
            state.phases.append(str(getattr(fw, "phase", fw.name)))
            # one scoring feeds the mean AUC, the curves and DR's per-domain selection
            scores = domain_scores(fw.score, fw.dataset.val, cfg.eval_batch_size)
            per_domain = aucs_of(fw.dataset.val, scores)
            if state.selection is not None and getattr(fw, "phase", None) == "dr":
                state.selection.observe(fw, scores, per_domain, epoch)
            state.curves.record(fw.dataset.val, scores, per_domain)
            value = mean_auc(per_domain)
            state.history.append(value)
            if progress is not None:
                progress(epoch, value)
            stopper.patience = patience_at(fw, epoch, second)
            stop = stopper.step(value, epoch)
            conflict = getattr(fw, "conflict_matrix", None)
            if conflict is not None:  # DN's telemetry of this epoch (none in a DR-only epoch)
                state.conflict.append(conflict)
                fw.conflict_matrix = None  # type: ignore[attr-defined]
            if stopper.best_epoch == epoch:
                state.best_state = fw.snapshot()
            epoch += 1
        if stop:
            next_phase = getattr(fw, "next_phase", None)
            if next_phase is not None and next_phase():
                fw.restore(state.best_state)  # the next phase starts from the best θS
                _enter_next_phase(stopper, cfg)
                state.selection = _selection(fw, stopper.best_epoch)
                phase_start = epoch
                continue
            break
    state.rng_state, state.torch_rng_state = rng.get_state(), torch.get_rng_state()
    return state


def _result(fw: Framework, state: FitState) -> FitResult:
    """Install the best state (and the selected θi), then the test figures of a finished run."""
    cfg = fw.config
    fw.restore(state.best_state)
    best_epoch, best_val, kept = state.stopper.best_epoch, state.stopper.best, None
    if state.selection is not None:  # per-domain θi (or θS alone) from each domain's best DR epoch
        sel = state.selection
        state.selection.install(fw)
        best_val, kept = mean_auc(sel.best), len(sel.deltas)
        best_epoch = max(sel.epoch.values(), default=best_epoch)
    test = domain_auc(fw.score, fw.dataset.test, cfg.eval_batch_size)
    tuned = None
    if cfg.finetune and fw.name != "separate":
        deltas = finetune_deltas(fw, torch.Generator().manual_seed(cfg.seed + 1))
        saved = dict(fw.params.deltas)
        fw.params.deltas.clear()
        fw.params.deltas.update(deltas)
        tuned = domain_auc(fw.score, fw.dataset.test, cfg.eval_batch_size)
        fw.params.deltas.clear()
        fw.params.deltas.update(saved)
    return FitResult(fw.name, best_epoch, len(state.times), best_val, list(state.times),
                     list(state.history), test, tuned, list(state.phases), state, list(state.capped),
                     list(state.conflict), kept, state.guard, copy.deepcopy(state.curves))


def _selection(fw: Framework, epoch: int) -> DeltaSelection | None:
    if fw.config.dr_select != "domain" or getattr(fw, "phase", None) != "dr":
        return None
    return DeltaSelection.start(fw, epoch)
