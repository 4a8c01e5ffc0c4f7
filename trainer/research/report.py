"""The text table (like the paper's Tables V/VI) and the per-domain AUC plot of an experiment."""

from __future__ import annotations

from pathlib import Path
from typing import Any


def format_table(methods: dict[str, Any]) -> str:
    head = f"{'method':<20} {'avg AUC':>17} {'avg RANK':>13} {'epochs':>7} {'s/epoch':>8} {'× alt':>6}"
    lines = [head, "-" * len(head)]
    for name, m in methods.items():
        rel = m.get("epoch_time_vs_alternate")
        epochs = sum(m["epochs"]) / len(m["epochs"])
        lines.append(
            f"{name:<20} {m['avg_auc']:.4f} ± {m['avg_auc_std']:.4f}"
            f" {m['avg_rank']:5.2f} ± {m['avg_rank_std']:4.2f}"
            f" {epochs:7.1f} {m['epoch_time_s']:8.2f} {(f'{rel:.2f}' if rel else '-'):>6}"
        )
    return "\n".join(lines)


def plot_per_domain(results: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    domains = results["domains"]
    methods = results["methods"]
    fig, ax = plt.subplots(figsize=(max(6.0, 0.5 * len(domains) + 2), 4.5))
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
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
