"""The text table (like the paper's Tables V/VI), the per-domain AUC plot of an experiment, and DN's
domain-conflict heatmap beside it; the per-domain validation-loss curves that show over-fitting the mean
validation AUC hides (issue 14)."""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np


def format_table(methods: dict[str, Any]) -> str:
    """One row per method. ``to best`` = wall time to the best validation AUC, ``×alt`` its ratio to
    Alternate's on the same seed (mean over seeds); ``Δalt`` = paired AUC difference to Alternate.
    A run that hit an epoch budget while still improving is marked CAPPED (not converged)."""
    head = (f"{'method':<20} {'avg AUC':>17} {'Δalt':>8} {'avg RANK':>13} {'epochs':>7} {'s/epoch':>8}"
            f" {'× alt':>6} {'to best s':>9} {'×alt':>6}")
    lines = [head, "-" * len(head)]
    notes = []
    for name, m in methods.items():
        rel = m.get("epoch_time_vs_alternate")
        best_rel = m.get("time_to_best_vs_alternate")
        deltas = m.get("delta_vs_alternate_per_seed")
        delta = f"{np.mean(deltas):+.4f}" if deltas else "-"
        epochs = sum(m["epochs"]) / len(m["epochs"])
        capped = [k for k, c in enumerate(m.get("capped", [])) if c]
        lines.append(
            f"{name:<20} {m['avg_auc']:.4f} ± {m['avg_auc_std']:.4f} {delta:>8}"
            f" {m['avg_rank']:5.2f} ± {m['avg_rank_std']:4.2f}"
            f" {epochs:7.1f} {m['epoch_time_s']:8.2f} {(f'{rel:.2f}' if rel else '-'):>6}"
            f" {m.get('time_to_best_s', float('nan')):9.1f} {(f'{best_rel:.2f}' if best_rel else '-'):>6}"
            + ("  CAPPED" if capped else "")
        )
        if capped:
            notes.append(f"CAPPED: {name} hit its epoch budget while the validation AUC was still improving "
                         f"(seed index {', '.join(map(str, capped))}): not converged, raise --epochs or drop it")
    return "\n".join(lines + notes)


def sampling_line(methods: dict[str, Any]) -> str:
    """Which domain sampling the step baselines used: it moves their AUC (balanced repeats a small domain many
    times per epoch), so a table without it cannot be compared with another run."""
    used: dict[str, list[str]] = {}
    for name, m in methods.items():
        if m.get("domain_sampling"):
            used.setdefault(m["domain_sampling"], []).append(name)
    if not used:
        return ""
    what = {"balanced": "⌈batch/n⌉ rows of every domain per step",
            "proportional": "each domain's rows per step ∝ its training rows, every row once per epoch"}
    return "domain sampling: " + "; ".join(f"{kind} for {', '.join(names)} ({what.get(kind, kind)})"
                                           for kind, names in used.items())


def conflict_lines(results: dict[str, Any]) -> list[str]:
    """Per method that recorded domain conflict (DN: cosine of the domains' inner updates; PCGrad: of their
    gradients), the mean off-diagonal cosine and the share of domain pairs pulling against each other."""
    lines = []
    for method in results["methods"]:
        mat = mean_conflict(results, method)
        if mat is None or len(mat) < 2:
            continue
        off = mat[~np.eye(len(mat), dtype=bool)]
        off = off[np.isfinite(off)]
        if len(off):
            lines.append(f"  {method:<20} mean pairwise cosine {off.mean():+.3f}, {np.mean(off < 0):.0%} of "
                         "domain pairs negative")
    return ["domain conflict (mean over epochs and seeds):", *lines] if lines else []


def mean_conflict(results: dict[str, Any], method: str) -> np.ndarray | None:
    """DN's domain-update cosine matrix averaged over the recorded epochs and seeds (NaN-aware)."""
    mats = [np.asarray(mat, dtype=float) for s in results["methods"].get(method, {}).get("per_seed", [])
            for mat in s.get("conflict") or []]
    if not mats:
        return None
    stack = np.stack(mats)
    with np.errstate(invalid="ignore"):
        return np.nanmean(stack, axis=0) if np.isfinite(stack).any() else None


def plot_per_domain(results: dict[str, Any], path: Path) -> None:
    """Per-domain AUC bars; beside them, when a DN-based method recorded it, the domain-conflict heatmap
    (mean cosine of the domains' inner updates, telemetry.py: negative = the domains pull θS apart)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    domains = results["domains"]
    methods = results["methods"]
    source = next((m for m in ("mamdr", "dn", "mamdr+finetune") if mean_conflict(results, m) is not None), None)
    conflict = mean_conflict(results, source) if source else None
    width_bars = max(6.0, 0.5 * len(domains) + 2)
    if conflict is not None:
        fig, (ax, hx) = plt.subplots(1, 2, figsize=(width_bars + 5.5, 4.8),
                                     gridspec_kw={"width_ratios": [width_bars, 5.0]})
    else:
        fig, ax = plt.subplots(figsize=(width_bars, 4.5))
    width = 0.8 / max(1, len(methods))
    for k, (name, m) in enumerate(methods.items()):
        xs = [d + (k - (len(methods) - 1) / 2) * width for d in range(len(domains))]
        ax.bar(xs, [m["per_domain"][name_] for name_ in domains], width=width, label=name)
    values = [v for m in methods.values() for v in m["per_domain"].values() if v == v]
    if values:
        ax.set_ylim(max(0.0, min(values) - 0.05), min(1.0, max(values) + 0.02))
    ax.set_xticks(range(len(domains)))
    ax.set_xticklabels(domains, rotation=60, ha="right", fontsize=8)
    ax.set_ylabel("test AUC")
    ax.set_title(f"{results['dataset']} / {results['model']}: per-domain AUC (mean over seeds)")
    ax.legend(fontsize=8)
    if conflict is not None:
        image = hx.imshow(conflict, cmap="RdBu", vmin=-1, vmax=1)
        hx.set_xticks(range(len(domains)))
        hx.set_yticks(range(len(domains)))
        hx.set_xticklabels(domains, rotation=90, fontsize=6)
        hx.set_yticklabels(domains, fontsize=6)
        hx.set_title(f"domain conflict ({source}): cos of inner updates", fontsize=9)
        fig.colorbar(image, ax=hx, fraction=0.046, pad=0.04)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def lowest_epoch(values: Sequence[float]) -> int | None:
    """1-based epoch of the lowest finite value (the first on a tie); None when there is none."""
    finite = [(v, k) for k, v in enumerate(values) if v == v]
    return min(finite)[1] + 1 if finite else None


def risen_by(curves: dict[str, Any], best_epoch: int) -> tuple[list[str], int]:
    """Domains whose validation loss at ``best_epoch`` (1-based) is above their lowest value before it: they
    had started to over-fit while the mean AUC had not yet peaked. Earliest turn first (then by name); with
    the number of domains that had a loss at that epoch."""
    risen: list[tuple[int, str]] = []
    counted = 0
    for name, losses in curves.get("loss", {}).items():
        upto = list(losses[:best_epoch])
        if len(upto) < best_epoch or upto[-1] != upto[-1]:
            continue  # no figure at that epoch
        counted += 1
        low = lowest_epoch(upto)
        if low is not None and upto[-1] > upto[low - 1]:
            risen.append((low, name))
    return [name for _, name in sorted(risen)], counted


def val_loss_lines(methods: dict[str, Any]) -> list[str]:
    """Per method and seed: the epoch of the lowest mean validation loss, and how many domains' validation
    loss had risen by the best-AUC epoch (the "over-fits right after epoch 1" evidence of docs/benchmarks.md)."""
    lines, capped = [], set()
    for name, info in methods.items():
        seeds = [s for s in info.get("per_seed", []) if s.get("val_curves")]
        if not seeds:
            continue
        lowest, best, risen = [], [], []
        for s in seeds:
            curves = s["val_curves"]
            if curves.get("n_domains", 0) > len(curves.get("loss", {})):
                capped.add((len(curves["loss"]), curves["n_domains"]))
            low = lowest_epoch(curves.get("mean_loss", []))
            lowest.append("-" if low is None else str(low))
            best.append(str(s["best_epoch"]))
            names, counted = risen_by(curves, int(s["best_epoch"]))
            risen.append(f"{len(names)}/{counted}")
        lines.append(f"  {name:<20} lowest mean val loss at epoch {', '.join(lowest)}; by the best-AUC epoch "
                     f"({', '.join(best)}) {', '.join(risen)} domains' val loss had risen")
    if not lines:
        return []
    note = "".join(f"; per-domain figures for the first {k} of {n} domains" for k, n in sorted(capped))
    return [f"validation log loss, per seed (risen: above the domain's lowest value before that epoch{note}):",
            *lines]


def plot_val_loss(results: dict[str, Any], path: Path) -> None:
    """One panel per method: each domain's validation log loss over the epochs of the first seed, the mean
    over domains in black, the best-AUC epoch dashed: a domain whose curve turns up before that line was
    over-fitting while the mean AUC still rose."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import MaxNLocator

    runs = {m: info["per_seed"][0] for m, info in results["methods"].items()
            if info.get("per_seed") and info["per_seed"][0].get("val_curves")}
    colour = {name: f"C{k % 10}" for k, name in enumerate(results["domains"])}  # a domain's colour in every panel
    cols = min(3, max(1, len(runs)))
    rows = max(1, math.ceil(len(runs) / cols))
    fig, axes = plt.subplots(rows, cols, figsize=(4.2 * cols + 1.8, 3.4 * rows + 0.5), squeeze=False)
    handles: dict[str, Any] = {}
    for ax, (name, run) in zip(axes.flat, runs.items(), strict=False):
        curves = run["val_curves"]
        for domain, losses in curves["loss"].items():
            (line,) = ax.plot(range(1, len(losses) + 1), losses, lw=1, marker="o", ms=2, alpha=0.85,
                              color=colour.get(domain))
            handles.setdefault(domain, line)
        mean = curves.get("mean_loss", [])
        (line,) = ax.plot(range(1, len(mean) + 1), mean, color="black", lw=2, label="mean over domains")
        handles.setdefault("mean over domains", line)
        best = run.get("best_epoch")
        if best:
            line = ax.axvline(best, color="gray", ls="--", lw=1)
            handles.setdefault("best val AUC epoch", line)
        low = lowest_epoch(mean)
        ax.set_title(f"{name}: best AUC epoch {best}, lowest mean loss epoch {low}", fontsize=8)
        ax.set_xlabel("epoch", fontsize=8)
        ax.set_ylabel("validation log loss", fontsize=8)
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.tick_params(labelsize=7)
    for ax in list(axes.flat)[len(runs):]:
        ax.axis("off")
    if not runs:
        axes.flat[0].text(0.5, 0.5, "no validation curves recorded", ha="center", va="center")
    shown = {k: v for k, v in handles.items() if k in ("mean over domains", "best val AUC epoch")
             or len(handles) <= 22}  # beyond 20 domains a legend is unreadable: the means only
    if shown:
        fig.legend(list(shown.values()), list(shown), loc="center right", fontsize=7)
    seed = results.get("seeds", [None])[0]
    fig.suptitle(f"{results['dataset']} / {results['model']}: per-domain validation log loss (seed {seed})",
                 fontsize=10)
    fig.tight_layout(rect=(0.0, 0.0, 1.0 - 1.6 / fig.get_figwidth(), 0.96))
    fig.savefig(path, dpi=120)
    plt.close(fig)
