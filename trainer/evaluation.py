"""The paper's evaluation: exact per-domain AUC, average AUC over domains, average RANK of methods.

Torch is imported only by ``domain_auc``, so the torch-free quickstart report and the streaming trainer's
prequential figures use the same ``auc``.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING

import numpy as np
from sklearn.metrics import roc_auc_score

if TYPE_CHECKING:
    import torch

    from trainer.data.base import Split

    # A scorer maps (user, item, domain) index tensors to click probabilities or logits.
    Scorer = Callable[[torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor]


LOSS_EPS = 1e-7  # probabilities are clipped to [eps, 1 - eps] before the log


def log_losses(labels: np.ndarray, probs: np.ndarray) -> np.ndarray:
    """Each click's log loss (the prequential figure's running mean and graduation's comparison)."""
    p = np.clip(np.asarray(probs, dtype=np.float64), LOSS_EPS, 1 - LOSS_EPS)
    return -(labels * np.log(p) + (1 - labels) * np.log1p(-p))


def auc(labels: np.ndarray, scores: np.ndarray) -> float:
    """Exact ROC AUC (ties counted half); NaN when there are no labels or only one class.

    The Mann-Whitney form over average ranks, in numpy: what ``roc_auc_score`` gives for binary labels
    (the larger label is the positive class), without its ~1 ms of input checks per call (the trainer
    calls it twice per domain per round for graduation)."""
    labels, scores = np.asarray(labels), np.asarray(scores)
    if len(labels) == 0 or labels.min() == labels.max():
        return float("nan")
    if len(np.unique(labels)) != 2:
        return float(roc_auc_score(labels, scores))  # not binary: sklearn says what is wrong
    positive = labels == labels.max()
    _, inverse, counts = np.unique(scores, return_inverse=True, return_counts=True)
    ends = np.cumsum(counts)
    ranks = (ends - (counts - 1) / 2.0)[inverse.reshape(-1)]  # average rank of each score, ties shared
    n_pos = int(positive.sum())
    n_neg = len(labels) - n_pos
    return float((ranks[positive.reshape(-1)].sum() - n_pos * (n_pos + 1) / 2.0) / (n_pos * n_neg))


def paired_auc_z(labels: np.ndarray, a: np.ndarray, b: np.ndarray) -> float:
    """(AUC(a) − AUC(b)) / its standard error, for two scorings of the same rows (DeLong et al. 1988).

    The AUC is the mean of ψ(x_i, y_j) over positive/negative pairs; its variance follows from each
    row's mean ψ against the other class (the "structural components"), which are ranks: O(n log n).
    Paired, so what the two scorings share (the rows' difficulty) cancels. NaN when a class has fewer than
    two rows; ±inf when the difference is certain (zero variance, nonzero difference).
    """
    labels = np.asarray(labels).astype(bool)
    pos, neg = labels.sum(), (~labels).sum()
    if pos < 2 or neg < 2:  # a class of one row has no variance estimate: no evidence either way
        return float("nan")
    comps = []
    for s in (np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)):
        x, y = np.sort(s[labels]), np.sort(s[~labels])
        # mean over negatives of ψ(x_i, ·) = (#y < x_i + ½ #y == x_i) / n, and symmetrically for y_j
        v10 = (np.searchsorted(y, s[labels], "left") + np.searchsorted(y, s[labels], "right")) / (2.0 * neg)
        v01 = 1.0 - (np.searchsorted(x, s[~labels], "left") + np.searchsorted(x, s[~labels], "right")) / (2.0 * pos)
        comps.append((v10, v01))
    d10, d01 = comps[0][0] - comps[1][0], comps[0][1] - comps[1][1]
    diff = float(d10.mean())  # = AUC(a) − AUC(b)
    var = d10.var(ddof=1) / pos + d01.var(ddof=1) / neg
    if var <= 0.0:
        return 0.0 if diff == 0.0 else math.copysign(math.inf, diff)
    return diff / math.sqrt(var)


def domain_scores(scorer: Scorer, splits: Mapping[int, Split], batch_size: int = 8192) -> dict[int, np.ndarray]:
    """Each domain's scores on its own split, in the split's row order."""
    import torch

    out: dict[int, np.ndarray] = {}
    with torch.no_grad():
        for d, split in splits.items():
            scores = [scorer(u, i, dom).float().cpu() for u, i, dom, _ in split.batches(d, batch_size, shuffle=False)]
            out[d] = torch.cat(scores).numpy() if scores else np.zeros(0, dtype=np.float32)
    return out


def aucs_of(splits: Mapping[int, Split], scores: Mapping[int, np.ndarray]) -> dict[int, float]:
    """AUC of each domain's ``scores`` against its split's labels."""
    return {d: auc(splits[d].label, s) for d, s in scores.items()}


def domain_auc(scorer: Scorer, splits: Mapping[int, Split], batch_size: int = 8192) -> dict[int, float]:
    """AUC of each domain on its own split."""
    return aucs_of(splits, domain_scores(scorer, splits, batch_size))


def mean_auc(per_domain: Mapping[int, float]) -> float:
    values = [v for v in per_domain.values() if not np.isnan(v)]
    return float(np.mean(values)) if values else float("nan")


def average_rank(per_method: Mapping[str, Mapping[int, float]]) -> dict[str, float]:
    """Rank methods within each domain by AUC (1 = best, ties share the mean rank), then average."""
    methods = list(per_method)
    domains = sorted(set.intersection(*(set(v) for v in per_method.values()))) if methods else []
    ranks = {m: [] for m in methods}
    for d in domains:
        values = np.array([per_method[m][d] for m in methods], dtype=float)
        order = (-values).argsort(kind="stable")
        r = np.empty(len(methods))
        r[order] = np.arange(1, len(methods) + 1)
        for v in np.unique(values):  # mean rank for ties
            mask = values == v
            r[mask] = r[mask].mean()
        for m, rank in zip(methods, r, strict=True):
            ranks[m].append(rank)
    return {m: float(np.mean(rs)) if rs else float("nan") for m, rs in ranks.items()}


class EarlyStopping:
    """Stop when the monitored value has not improved for ``patience`` checks; remembers the best."""

    def __init__(self, patience: int = 3, min_delta: float = 0.0) -> None:
        self.patience = patience
        self.min_delta = min_delta
        self.best = -float("inf")
        self.best_epoch = -1
        self.bad = 0

    def step(self, value: float, epoch: int) -> bool:
        """Record a value; True means stop."""
        if value > self.best + self.min_delta:
            self.best, self.best_epoch, self.bad = value, epoch, 0
            return False
        self.bad += 1
        return self.bad >= self.patience
