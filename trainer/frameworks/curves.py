"""Per-epoch validation curves: each domain's log loss and AUC, and their means over domains.

The mean validation AUC that early stopping watches can hide over-fitting: a few domains' losses may climb
right after the first epoch while the others still improve (issue 14: why WL, PCGrad, MAML and MLDG fall
below Alternate on Amazon). The curves are made from the scores the epoch's validation pass already
computed, so they cost a sigmoid and a log per validation row, not a second scoring pass.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from trainer.evaluation import log_losses
from trainer.frameworks.telemetry import MAX_DOMAINS

if TYPE_CHECKING:
    from trainer.data.base import Split

# Per-domain curves are kept for the first CURVE_DOMAINS domains (by index) only, so a result with
# hundreds of domains stays small; the mean curves are always over every domain. The same bound as DN's
# conflict telemetry, so both per-domain records cover the same domains.
CURVE_DOMAINS = MAX_DOMAINS


def mean_log_loss(labels: np.ndarray, logits: np.ndarray) -> float:
    """Mean of ``log_losses`` (the project's one definition) for a scorer's logits; NaN for no rows."""
    if len(labels) == 0:
        return float("nan")
    probs = np.exp(-np.logaddexp(0.0, -np.asarray(logits, dtype=np.float64)))  # sigmoid without overflow
    return float(log_losses(np.asarray(labels, dtype=np.float64), probs).mean())


def _nanmean(values: Sequence[float]) -> float:
    finite = [v for v in values if not math.isnan(v)]
    return float(np.mean(finite)) if finite else float("nan")


@dataclass
class ValCurves:
    """One entry per epoch run: per domain (the first ``CURVE_DOMAINS``) and the mean over all domains
    (each domain weighs the same, as in the mean AUC early stopping watches)."""

    loss: dict[int, list[float]] = field(default_factory=dict)
    auc: dict[int, list[float]] = field(default_factory=dict)
    mean_loss: list[float] = field(default_factory=list)
    n_domains: int = 0

    def record(self, splits: Mapping[int, Split], scores: Mapping[int, np.ndarray],
               aucs: Mapping[int, float]) -> None:
        """This epoch's figures from its validation ``scores`` (logits) and the AUCs made from them."""
        losses = {d: mean_log_loss(splits[d].label, s) for d, s in scores.items()}
        epochs = len(self.mean_loss)
        for d in sorted(losses)[:CURVE_DOMAINS]:  # a domain first seen now is padded with NaN (epochs before)
            self.loss.setdefault(d, [float("nan")] * epochs).append(losses[d])
            self.auc.setdefault(d, [float("nan")] * epochs).append(float(aucs.get(d, float("nan"))))
        self.mean_loss.append(_nanmean(list(losses.values())))
        self.n_domains = max(self.n_domains, len(losses))

    def concat(self, later: ValCurves) -> ValCurves:
        """These epochs, then ``later``'s (a guarded run lists both runs' epochs, as its val_history does)."""
        before, after = len(self.mean_loss), len(later.mean_loss)
        pad_a, pad_b = [float("nan")] * before, [float("nan")] * after
        domains = sorted(set(self.loss) | set(later.loss))
        return ValCurves(
            loss={d: self.loss.get(d, pad_a) + later.loss.get(d, pad_b) for d in domains},
            auc={d: self.auc.get(d, pad_a) + later.auc.get(d, pad_b) for d in domains},
            mean_loss=self.mean_loss + later.mean_loss, n_domains=max(self.n_domains, later.n_domains))

    def to_json(self, names: Sequence[str]) -> dict[str, Any]:
        """Keyed by domain name, as results.json's per-domain AUCs are."""
        return {"loss": {names[d]: list(v) for d, v in self.loss.items()},
                "auc": {names[d]: list(v) for d, v in self.auc.items()},
                "mean_loss": list(self.mean_loss), "n_domains": self.n_domains, "max_domains": CURVE_DOMAINS}
