"""The epoch loop: train, validate on mean AUC over domains, stop early, keep the best state,
report per-domain test AUC (and after the optional per-domain finetune)."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field

import torch

from trainer.evaluation import EarlyStopping, domain_auc, mean_auc
from trainer.frameworks.base import Framework
from trainer.frameworks.finetune import finetune_deltas


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

    @property
    def test_auc(self) -> float:
        return mean_auc(self.test)

    @property
    def mean_epoch_time(self) -> float:
        return sum(self.epoch_times) / max(1, len(self.epoch_times))


def fit(fw: Framework, progress: Callable[[int, float], None] | None = None) -> FitResult:
    """Train ``fw`` until early stopping (patience on mean validation AUC) or ``epochs``."""
    cfg = fw.config
    torch.manual_seed(cfg.seed)  # dropout draws
    rng = torch.Generator().manual_seed(cfg.seed)
    stopper = EarlyStopping(cfg.patience)
    best_state = fw.snapshot()
    times: list[float] = []
    history: list[float] = []
    phases: list[str] = []
    for epoch in range(cfg.epochs):
        start = time.perf_counter()
        fw.train_epoch(epoch, rng)
        times.append(time.perf_counter() - start)
        phases.append(str(getattr(fw, "phase", fw.name)))
        value = mean_auc(domain_auc(fw.score, fw.dataset.val, cfg.eval_batch_size))
        history.append(value)
        if progress is not None:
            progress(epoch, value)
        stop = stopper.step(value, epoch)
        if stopper.best_epoch == epoch:
            best_state = fw.snapshot()
        if stop:
            next_phase = getattr(fw, "next_phase", None)
            if next_phase is not None and next_phase():
                fw.restore(best_state)  # the next phase starts from the best θS
                stopper.bad = 0
                continue
            break
    fw.restore(best_state)
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
    return FitResult(fw.name, stopper.best_epoch, len(times), stopper.best, times, history, test, tuned,
                     phases)
