"""Which θi should serving use? Every serving policy, evaluated exactly on one recorded quickstart run.

The continual trainer scores every streamed click with θS *and* with Θi = θS + θi before training on it
(graduation needs both), and what it trains does not depend on which of the two serving used. So one run,
with both scores recorded per click, gives the exact prequential figures of any policy that picks θS or Θi
per domain and round from the clicks seen so far: "never" (θS only: plain online training, `alternate`,
to the last digit), "always" (every trained θi), graduation by the window's AUC or by its log loss. Each
policy is reported by the cumulative prequential AUC (the mean over domains of each domain's AUC pooled
over all its rounds: the quickstart's figure), the mean of each round's own AUC (from round 2), and the
log loss of every scored click.

    MAMDR_SHARED_DATA=../shared/data PYTHONPATH=$PWD ~/.cache/mamdr/venv/bin/python \\
        bench/graduation_policies.py --seeds 0,1,2 [--dataset amazon --new-domain gift_cards --round-events 5000]

Extra trainer settings come from the environment as usual (e.g. ``MAMDR_TRAINER__DR_LR=0.1``). The run's own
policy is the configured one (``trainer.graduation_metric``); its figures are printed as "served" and must
equal the simulated row of that policy.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
from collections import defaultdict, deque
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from mamdr.quickstart import QuickstartConfig, run_quickstart
from trainer.evaluation import auc, log_losses
from trainer.service.graduation import Graduation
from trainer.service.prequential import Prequential


@dataclass
class Recording:
    """Per (round, domain): labels, θS's scores, Θi's scores (θS's where the domain has no θi yet), served."""

    blocks: dict[tuple[int, str], list[tuple[np.ndarray, ...]]] = field(default_factory=lambda: defaultdict(list))
    round_no: int = 0
    _pending: dict[str, tuple[np.ndarray, np.ndarray]] = field(default_factory=dict)


@contextmanager
def recording() -> Iterator[Recording]:
    """Record every scored click of the runs inside (the trainer runs in this process)."""
    rec = Recording()
    observe, update_many, decide = Graduation.observe, Prequential.update_many, Graduation.decide

    def _observe(self: Graduation, domain: str, labels: np.ndarray, p_shared: np.ndarray,
                 p_specific: np.ndarray) -> np.ndarray:
        rec._pending[domain] = (p_shared.copy(), p_specific.copy())
        return observe(self, domain, labels, p_shared, p_specific)

    def _update_many(self: Prequential, domains: list[str], codes: np.ndarray, labels: np.ndarray,
                     probs: np.ndarray) -> None:
        for k, d in enumerate(domains):
            mine = codes == k
            shared, specific = rec._pending.pop(d, (probs[mine], probs[mine]))
            rec.blocks[(rec.round_no, d)].append((labels[mine].copy(), shared, specific, probs[mine].copy()))
        rec._pending.clear()
        update_many(self, domains, codes, labels, probs)

    def _decide(self: Graduation) -> dict[str, dict[str, float | bool]]:
        rec.round_no += 1
        return decide(self)

    Graduation.observe, Prequential.update_many, Graduation.decide = _observe, _update_many, _decide  # type: ignore[method-assign]
    try:
        yield rec
    finally:
        Graduation.observe, Prequential.update_many, Graduation.decide = observe, update_many, decide  # type: ignore[method-assign]


Policy = Callable[[np.ndarray, np.ndarray, np.ndarray], bool]  # (labels, θS, Θi) of the window -> serve Θi


def _by_auc(y: np.ndarray, s: np.ndarray, t: np.ndarray) -> bool:
    return auc(y, t) > auc(y, s)


def _by_loss(y: np.ndarray, s: np.ndarray, t: np.ndarray) -> bool:
    return float(log_losses(y, t).mean()) < float(log_losses(y, s).mean())


POLICIES: dict[str, Policy | bool] = {"never (θS: alternate)": False, "always Θi": True,
                                      "graduation by AUC": _by_auc, "graduation by log loss": _by_loss}


def _figures(served: dict[str, list[tuple[np.ndarray, np.ndarray]]], per_round: list[float]) -> tuple[float, ...]:
    domains = list(served)
    y = np.concatenate([a for parts in served.values() for a, _ in parts])
    p = np.concatenate([b for parts in served.values() for _, b in parts])
    codes = np.repeat(np.arange(len(domains)), [sum(len(a) for a, _ in served[d]) for d in domains])
    figures = Prequential()  # the trainer's own figure, so "never" equals alternate's to the last digit
    figures.update_many(domains, codes, y, p)
    return (figures.mean_auc(), float(np.mean(per_round)) if per_round else float("nan"),
            float(log_losses(y, p).mean()))


def simulate(rec: Recording, policy: Policy | bool, window: int = 5000, min_clicks: int = 200) -> tuple[float, ...]:
    """The policy's figures: decisions at each round's end from the domain's last ``window`` clicks, as
    ``Graduation.decide`` takes them (too little evidence keeps the last decision)."""
    merged = {k: tuple(np.concatenate([b[i] for b in v]) for i in range(4)) for k, v in rec.blocks.items()}
    rounds, domains = sorted({r for r, _ in merged}), sorted({d for _, d in merged})
    seen = {d: (deque(maxlen=window), deque(maxlen=window), deque(maxlen=window)) for d in domains}
    use = dict.fromkeys(domains, False)
    served: dict[str, list[tuple[np.ndarray, np.ndarray]]] = defaultdict(list)
    per_round = []
    for r in rounds:
        aucs = []
        for d in domains:
            if (r, d) not in merged:
                continue
            y, s, t, _ = merged[(r, d)]
            has_delta = not np.array_equal(s, t)
            p = t if has_delta and (policy is True or (policy is not False and use[d])) else s
            served[d].append((y, p))
            if 0 < y.sum() < len(y):
                aucs.append(auc(y, p))
            if has_delta:
                for q, values in zip(seen[d], (y, s, t), strict=True):
                    q.extend(values.tolist())
        if r > 0 and aucs:
            per_round.append(float(np.mean(aucs)))
        if callable(policy):
            for d, (ys, ss, ts) in seen.items():
                y = np.fromiter(ys, dtype=np.float64)
                if len(y) >= min_clicks and 0 < y.sum() < len(y):
                    use[d] = policy(y, np.fromiter(ss, dtype=np.float64), np.fromiter(ts, dtype=np.float64))
    return _figures(served, per_round)


def served_figures(rec: Recording) -> tuple[float, ...]:
    merged: dict[str, list[tuple[np.ndarray, np.ndarray]]] = defaultdict(list)
    per_round: dict[int, list[float]] = defaultdict(list)
    for (r, d), blocks in sorted(rec.blocks.items()):
        y, p = np.concatenate([b[0] for b in blocks]), np.concatenate([b[3] for b in blocks])
        merged[d].append((y, p))
        if r > 0 and 0 < y.sum() < len(y):
            per_round[r].append(auc(y, p))
    return _figures(merged, [float(np.mean(v)) for _, v in sorted(per_round.items())])


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seeds", default="0,1,2")
    ap.add_argument("--dataset", default="ml-latest-small")
    ap.add_argument("--new-domain", default=None)
    ap.add_argument("--round-events", type=int, default=None)
    ap.add_argument("--short", action="store_true")
    args = ap.parse_args(argv)
    seeds = [int(s) for s in args.seeds.split(",")]
    table: dict[str, list[tuple[float, ...]]] = defaultdict(list)
    for seed in seeds:
        extra = {"new_domain": args.new_domain} if args.new_domain else {}
        with recording() as rec, tempfile.TemporaryDirectory(prefix="mamdr-graduation-") as tmp:
            run_quickstart(QuickstartConfig(workdir=Path(tmp), short=args.short, framework="mamdr", seed=seed,
                                            dataset=args.dataset, round_events=args.round_events, progress=False,
                                            **extra))
        table["served (this run)"].append(served_figures(rec))
        for name, policy in POLICIES.items():
            table[name].append(simulate(rec, policy))
        print(f"seed {seed} recorded: {sum(len(b[0]) for v in rec.blocks.values() for b in v)} scored clicks",
              file=sys.stderr, flush=True)
    base = table["never (θS: alternate)"]
    print(f"\nserving policies on the recorded runs ({args.dataset}, seeds {args.seeds}); paired differences to "
          "never (θS: plain online training), per seed:\n")
    print("| policy | cumulative AUC | Δ | mean round AUC | Δ | log loss | Δ |")
    print("|---|---:|---|---:|---|---:|---|")
    for name, rows in table.items():
        cells = []
        for k in range(3):
            mean = statistics.mean(r[k] for r in rows)
            diffs = " ".join(f"{r[k] - b[k]:+.4f}" for r, b in zip(rows, base, strict=True))
            cells += [f"{mean:.4f}", diffs]
        print(f"| {name} | " + " | ".join(cells) + " |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
