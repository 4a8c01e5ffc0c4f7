"""The quickstart's evaluation and report: holdout AUC scored over HTTP, JSON + Markdown + a PNG plot.

Holdout AUC is measured the way a client sees the model: the held-out (``test`` split) events of each
domain, grouped by user, are scored by the running service, so it covers export, the feature store
and composition, not just the torch model. Torch-free on purpose.
"""

from __future__ import annotations

import json
import math
import random
from collections import defaultdict
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import numpy as np

from trainer.evaluation import auc as exact_auc

Score = Callable[[str, str, list[str]], list[float]]  # (domain, user, items) -> probabilities


def auc(labels: Iterable[float], scores: Iterable[float]) -> float | None:
    """``trainer.evaluation.auc`` with None (JSON null) instead of NaN for a one-class or empty domain."""
    value = exact_auc(np.asarray(list(labels), dtype=np.float64), np.asarray(list(scores), dtype=np.float64))
    return None if math.isnan(value) else value


def holdout_requests(events: Iterable[dict[str, Any]], max_requests: int, max_items: int,
                     seed: int = 0) -> list[tuple[str, str, list[str], list[int]]]:
    """Held-out events as (domain, user, items, labels) requests, at most ``max_requests`` (sampled)."""
    groups: dict[tuple[str, str], tuple[list[str], list[int]]] = defaultdict(lambda: ([], []))
    for e in events:
        items, labels = groups[(e["domain"], e["user_id"])]
        items.append(e["item_id"])
        labels.append(int(e["clicked"]))
    requests = []
    for (domain, user), (items, labels) in sorted(groups.items()):
        for start in range(0, len(items), max_items):
            requests.append((domain, user, items[start:start + max_items], labels[start:start + max_items]))
    if len(requests) > max_requests:
        requests = sorted(random.Random(seed).sample(requests, max_requests))
    return requests


def holdout_auc(requests: list[tuple[str, str, list[str], list[int]]], score: Score,
                progress: Callable[[int], None] | None = None) -> dict[str, dict[str, float | int | None]]:
    """Per-domain AUC of the served scores over the held-out requests."""
    labels: dict[str, list[int]] = defaultdict(list)
    scores: dict[str, list[float]] = defaultdict(list)
    for domain, user, items, ys in requests:
        labels[domain].extend(ys)
        scores[domain].extend(score(domain, user, items))
        if progress is not None:
            progress(1)
    return {d: {"auc": auc(labels[d], scores[d]), "n": len(labels[d])} for d in sorted(labels)}


def _fmt(value: float | None) -> str:
    return "—" if value is None or (isinstance(value, float) and math.isnan(value)) else f"{value:.4f}"


def domain_table(summary: dict[str, Any]) -> str:
    """The per-domain Markdown table of the summary (also printed at the end of the run)."""
    rows = ["| domain | streamed events | prequential AUC | holdout AUC (served) | holdout events | delta |",
            "|---|---:|---:|---:|---:|---|"]
    for d, r in summary["domains"].items():
        rows.append(f"| {d}{' (new)' if r.get('onboarded') else ''} | {r['events']} | {_fmt(r['prequential_auc'])} "
                    f"| {_fmt(r['holdout_auc'])} | {r['holdout_n']} | {r['delta'] or 'θS only'} |")
    means = summary["mean"]
    rows.append(f"| **mean** | {sum(r['events'] for r in summary['domains'].values())} "
                f"| {_fmt(means['prequential_auc'])} | {_fmt(means['holdout_auc'])} | | |")
    return "\n".join(rows)


def markdown(summary: dict[str, Any]) -> str:
    lines = [f"# MAMDR quickstart ({summary['mode']})", "",
             f"Dataset `{summary['dataset']}`, model `{summary['model']}`, {summary['rounds']} trainer rounds, "
             f"live version `{summary['live_version']}`, {summary['seconds']:.0f} s.", "",
             domain_table(summary), "", "## Onboarding", ""]
    ob = summary["onboarding"]
    lines += [f"- `{ob['domain']}` created through `POST /v1/domains`; served at once by θS "
              f"(version `{ob['theta_s_version']}`): scores {ob['theta_s_scores']}",
              f"- after {ob['events']} of its clicks and one round: version `{ob['delta_version']}` with its own "
              f"delta: scores {ob['delta_scores']}", "", "## Endpoints", ""]
    lines += [f"- {k}: `{v}`" for k, v in summary["endpoints"].items()]
    lines += ["", "## Rounds", "", "Prequential AUC of a round: that round's clicks, each scored by the model live "
              "when it arrived (trained on the earlier rounds only); cumulative: every click so far.", "",
              "| version | events | domains trained | seconds | prequential AUC of the round | cumulative |",
              "|---|---:|---:|---:|---:|---:|"]
    lines += [f"| {r['version']} | {r['events']} | {r['domains_trained']} | {r['seconds']:.1f} "
              f"| {_fmt(r.get('prequential_round_auc'))} | {_fmt(r['prequential_mean_auc'])} |"
              for r in summary["round_log"]]
    return "\n".join(lines) + "\n"


def plot(summary: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = list(summary["domains"])
    pre = [summary["domains"][d]["prequential_auc"] or np.nan for d in names]
    hold = [summary["domains"][d]["holdout_auc"] or np.nan for d in names]
    fig, (ax, ax2) = plt.subplots(1, 2, figsize=(13, 4.5), gridspec_kw={"width_ratios": [3, 1]})
    x = np.arange(len(names))
    ax.bar(x - 0.2, pre, 0.4, label="prequential (test-then-train)")
    ax.bar(x + 0.2, hold, 0.4, label="holdout, scored over HTTP")
    ax.axhline(0.5, color="grey", lw=0.8, ls="--")
    ax.set_xticks(x, names, rotation=60, ha="right")
    ax.set_ylim(0.4, 1.0)
    ax.set_ylabel("AUC")
    ax.set_title("per-domain AUC")
    ax.legend(loc="upper left", fontsize=8)
    rounds = summary["round_log"]
    x_rounds = range(1, len(rounds) + 1)
    ax2.plot(x_rounds, [r.get("prequential_round_auc") or np.nan for r in rounds], marker="o", label="round")
    ax2.plot(x_rounds, [r["prequential_mean_auc"] or np.nan for r in rounds], ls="--", color="grey",
             label="cumulative")
    ax2.set_xticks(x_rounds)
    ax2.set_xlabel("round")
    ax2.set_title("prequential mean AUC")
    ax2.legend(loc="lower right", fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def write_report(summary: dict[str, Any], out: Path) -> dict[str, Path]:
    out.mkdir(parents=True, exist_ok=True)
    paths = {"json": out / "summary.json", "markdown": out / "summary.md", "plot": out / "auc.png"}
    summary["report"] = {k: str(v) for k, v in paths.items()}
    paths["json"].write_text(json.dumps(summary, indent=2, sort_keys=False) + "\n")
    paths["markdown"].write_text(markdown(summary))
    plot(summary, paths["plot"])
    return paths
