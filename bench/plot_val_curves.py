"""Validation AUC per epoch per framework (one panel per seed) for docs/benchmarks.md.

Reads the merged ``frameworks_bench.py`` results (``--bench``) and ``dn_plateau_bench.py`` outputs
(``--run LABEL=DIR``; each DIR holds seed_N.json). A second stage is drawn after its first stage's
epochs, from the first stage's best epoch, as the staged trainers run it.

    python bench/plot_val_curves.py --bench runs/bench2/results.json --run "DN β=0.5=runs/dnp/b05" \
        --png docs/benchmarks_val_auc.png
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--bench", type=Path)
    p.add_argument("--run", action="append", default=[])
    p.add_argument("--seeds", default="0,1")
    p.add_argument("--png", type=Path, required=True)
    args = p.parse_args()
    seeds = [int(s) for s in args.seeds.split(",")]
    fig, axes = plt.subplots(1, len(seeds), figsize=(7 * len(seeds), 6.5), sharey=True, squeeze=False)
    palette, colors = list(plt.get_cmap("tab20").colors), {}

    def color(label: str):  # type: ignore[no-untyped-def]
        return colors.setdefault(label, palette[len(colors) % len(palette)])

    for ax, seed in zip(axes[0], seeds, strict=True):
        if args.bench:
            res = json.loads(args.bench.read_text())
            for m, r in res["methods"].items():
                if seed < len(r["per_seed"]):
                    h = r["per_seed"][seed]["val_history"]
                    phases = r["per_seed"][seed].get("phases") or ["?"] * len(h)
                    start = phases.index("dr") if "dr" in phases else 0  # stage 2 only: stage 1 is drawn
                    ax.plot(range(start + 1, len(h) + 1), h[start:], ls="--", lw=1, color=color(m),
                            label=f"earlier: {m}{' stage 2' if start else ''} (β anneal→0.1, p3, ≤20)")
        for spec in args.run:
            label, _, folder = spec.rpartition("=")
            path = Path(folder) / f"seed_{seed}.json"
            if not path.exists():
                continue
            out = json.loads(path.read_text())
            names = [n for n in ("dn", "alternate") if n in out]
            for first in names:
                h = out[first]["val_history"]
                if not label.startswith("+"):  # "+LABEL": stage 1 repeats another run; draw stage 2 only
                    ax.plot(range(1, len(h) + 1), h, lw=1.5, color=color(f"{label}: {first}"),
                            label=f"{label}: {first}")
                for second in [k for k in out if k.startswith(("mamdr", "dr"))]:
                    h2 = out[second]["val_history"]
                    ax.plot(range(len(h) + 1, len(h) + len(h2) + 1), h2, lw=1.5, color=color(f"{label}: +{second}"),
                            label=f"{label}: +{second}")
        ax.set_title(f"ml-latest-small, emb 32, seed {seed}")
        ax.set_xlabel("epoch (stage 2 continues the count)")
        ax.set_ylim(0.835, 0.872)
        ax.grid(alpha=0.3)
    axes[0][0].set_ylabel("mean validation AUC over 19 domains")
    handles = {}
    for ax in axes[0]:
        for h, lab in zip(*ax.get_legend_handles_labels(), strict=True):
            handles.setdefault(lab, h)
    fig.legend(list(handles.values()), list(handles), fontsize=8, loc="lower center", ncol=3)
    fig.tight_layout(rect=(0, 0.16, 1, 1))
    args.png.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(args.png, dpi=110)
    print(f"wrote {args.png}")


if __name__ == "__main__":
    main()
