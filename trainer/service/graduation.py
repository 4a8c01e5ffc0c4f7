"""Per-domain graduation: a domain's delta θi is served only while it beats θS on that domain's recent clicks.

DR trains θi for every domain with fresh clicks, but a delta learned from a few hundred clicks can be worse than
the shared model it is added to (the paper's θi are judged offline, on validation data; a stream has none). The
trainer therefore scores every arriving click twice before training on it (prequential, "test, then train"):
with Θi = θS + θi and with θS alone. Over each domain's last ``window`` scored clicks it compares the two,
by ``metric``; the delta is *graduated* (exported, served) only when Θi beats θS, by ``se`` standard errors of
the paired difference if set, on at least ``min_clicks`` clicks of both classes.

The default metric is the log loss, not the AUC. θi fit on a domain's history sharpen its scores (logits
~25 % wider than θS's on the quickstart) without ranking the next clicks better: judged by the window's AUC,
which sees only the ranking, graduation served many of them: 0.036 of log loss and 0.003 of cumulative AUC
lost against plain online training (3 seeds). Judged by the log loss (a proper scoring rule: it weighs
ranking and over-confidence together), θS is kept where θi only sharpen the scores, and served where θi
predict better (the Amazon stream; docs/streaming.md, "Read this first").

The default is any improvement: unlike a validation set, the window is re-judged every round on new clicks,
so a delta that won by chance loses its place at the next decision. A domain without its delta is exported
and served by θS, with its own row of the domain-indexed tensors, exactly the model the trainer scored as
"θS". The served score of a click (and so the prequential AUC the trainer reports) is the one of whichever
model its domain was served with when the click arrived.
"""

from __future__ import annotations

import math
from collections import deque
from dataclasses import dataclass, field

import numpy as np

from contracts.errors import ConfigError
from trainer.evaluation import auc, log_losses, paired_auc_z


def paired_loss_z(labels: np.ndarray, a: np.ndarray, b: np.ndarray) -> float:
    """(mean log loss of b − that of a) / its standard error, for two scorings of the same clicks: > 0 when a
    is better. Paired per click, so what the scorings share (each click's difficulty) cancels."""
    d = log_losses(labels, b) - log_losses(labels, a)
    sd = float(d.std(ddof=1)) if len(d) > 1 else 0.0
    if sd == 0.0:
        return 0.0 if float(d.mean()) == 0.0 else math.copysign(math.inf, float(d.mean()))
    return float(d.mean()) / (sd / math.sqrt(len(d)))


@dataclass
class _Window:
    labels: deque[float]
    shared: deque[float]
    specific: deque[float]


@dataclass
class Graduation:
    window: int = 5000
    min_clicks: int = 200
    se: float = 0.0
    metric: str = "logloss"
    graduated: set[str] = field(default_factory=set)
    _seen: dict[str, _Window] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.metric not in ("logloss", "auc"):
            raise ConfigError(f"graduation metric {self.metric!r}: use 'logloss' or 'auc'")

    def observe(self, domain: str, labels: np.ndarray, p_shared: np.ndarray, p_specific: np.ndarray) -> np.ndarray:
        """Record one domain's scored clicks; return the scores serving gave them (graduated or not)."""
        w = self._seen.get(domain)
        if w is None:
            w = self._seen[domain] = _Window(deque(maxlen=self.window), deque(maxlen=self.window),
                                             deque(maxlen=self.window))
        w.labels.extend(labels.tolist())
        w.shared.extend(p_shared.tolist())
        w.specific.extend(p_specific.tolist())
        return p_specific if domain in self.graduated else p_shared

    def decide(self) -> dict[str, dict[str, float | bool]]:
        """Re-decide every domain from its window; returns the per-domain figures behind the decision."""
        report: dict[str, dict[str, float | bool]] = {}
        for domain, w in self._seen.items():
            y = np.fromiter(w.labels, dtype=np.float64)
            positives = int(y.sum())
            if len(y) < self.min_clicks or positives == 0 or positives == len(y):
                report[domain] = {"graduated": domain in self.graduated, "clicks": float(len(y))}
                continue  # too little evidence: keep the last decision
            shared, specific = np.fromiter(w.shared, dtype=np.float64), np.fromiter(w.specific, dtype=np.float64)
            a_shared, a_specific = auc(y, shared), auc(y, specific)
            l_shared, l_specific = float(log_losses(y, shared).mean()), float(log_losses(y, specific).mean())
            if self.metric == "auc":
                better = a_specific > a_shared
                z = paired_auc_z(y > 0.5, specific, shared) if self.se > 0 else None  # sorts: only when asked
            else:
                better = l_specific < l_shared
                z = paired_loss_z(y, specific, shared) if self.se > 0 else None
            if better and (z is None or z >= self.se):
                self.graduated.add(domain)
            else:
                self.graduated.discard(domain)
            report[domain] = {"graduated": domain in self.graduated, "clicks": float(len(y)),
                              "auc_shared": a_shared, "auc_specific": a_specific,
                              "logloss_shared": l_shared, "logloss_specific": l_specific}
            if z is not None:
                report[domain]["z"] = z
        return report
