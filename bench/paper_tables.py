"""Our grid tables beside the paper's published ones (Luo et al., ICDE 2023), as Markdown.

    python bench/paper_tables.py runs/table_x runs/table_x_amazon > /tmp/tables.md

For each grid folder (written by ``mamdr experiment --grid``): Table X (frameworks × models) with the
paper's Table X (Taobao-10) beside it, the orderings compared (Kendall τ over the methods both have,
and the paper's claims checked one by one), then Tables V and VI beside the paper's Amazon-6 and
Taobao-10 columns. The paper's numbers are copied from its Tables V, VI and X.
"""

from __future__ import annotations

import argparse
import json
from itertools import combinations
from pathlib import Path

# Table X, Taobao-10 (average AUC). Keys are our method names.
PAPER_X = {
    "mlp": {"alternate": 0.7022, "alternate+finetune": 0.7126, "weighted_loss": 0.7157, "pcgrad": 0.7254,
            "maml": 0.6896, "reptile": 0.7117, "mldg": 0.7074, "dn": 0.7204, "dr": 0.7407, "mamdr": 0.7445},
    "wdl": {"alternate": 0.7154, "alternate+finetune": 0.7040, "weighted_loss": 0.7098, "pcgrad": 0.7153,
            "maml": 0.6945, "reptile": 0.7212, "mldg": 0.7182, "dn": 0.7295, "dr": 0.7346, "mamdr": 0.7376},
    "neurfm": {"alternate": 0.7154, "alternate+finetune": 0.7465, "weighted_loss": 0.7393, "pcgrad": 0.7526,
               "maml": 0.7479, "reptile": 0.7579, "mldg": 0.7543, "dn": 0.7572, "dr": 0.7553, "mamdr": 0.7609},
    "deepfm": {"alternate": 0.7271, "alternate+finetune": 0.7280, "weighted_loss": 0.7259, "pcgrad": 0.7562,
               "maml": 0.7237, "reptile": 0.7402, "mldg": 0.7480, "dn": 0.7352, "dr": 0.7466, "mamdr": 0.7581},
    "shared_bottom": {"alternate": 0.7197, "alternate+finetune": 0.7225, "weighted_loss": 0.7171,
                      "pcgrad": 0.7269, "maml": 0.6816, "reptile": 0.7255, "mldg": 0.7195, "dn": 0.7233,
                      "dr": 0.7244, "mamdr": 0.7339},
    "star": {"alternate": 0.7202, "alternate+finetune": 0.7303, "weighted_loss": 0.7297, "pcgrad": 0.7221,
             "maml": 0.7228, "reptile": 0.7353, "mldg": 0.7181, "dn": 0.7328, "dr": 0.7255, "mamdr": 0.7520},
}
# Table V (AUC, RANK) on Amazon-6 and Taobao-10; rows are models trained alternately, plus MLP+MAMDR.
PAPER_V = {
    "mlp": ((0.7464, 9.0), (0.7022, 11.3)), "wdl": ((0.7449, 9.0), (0.7154, 8.9)),
    "neurfm": ((0.6505, 10.7), (0.7374, 4.1)), "autoint": ((0.7531, 8.2), (0.7302, 5.8)),
    "deepfm": ((0.7333, 10.0), (0.7271, 6.6)), "shared_bottom": ((0.7794, 3.0), (0.7197, 7.7)),
    "mmoe": ((0.7816, 2.7), (0.7250, 5.9)), "ple": ((0.7801, 3.5), (0.7287, 5.3)),
    "star": ((0.7719, 5.8), (0.7202, 8.0)), "mlp+mamdr": ((0.7957, 2.5), (0.7445, 2.7)),
}
# Table VI (AUC) on Amazon-6 and Taobao-10.
PAPER_VI = {"alternate": (0.7464, 0.7022), "dn": (0.7678, 0.7204), "dr": (0.7822, 0.7407),
            "mamdr": (0.7957, 0.7445)}


def kendall_tau(a: dict[str, float], b: dict[str, float]) -> tuple[float, int]:
    """τ-a over the keys both have (ties count as neither), and that number of keys."""
    keys = sorted(set(a) & set(b))
    score = 0
    pairs = 0
    for x, y in combinations(keys, 2):
        pairs += 1
        s = (a[x] - a[y]) * (b[x] - b[y])
        score += (s > 0) - (s < 0)
    return (score / pairs if pairs else float("nan")), len(keys)


def claims(ours: dict[str, float]) -> list[str]:
    """The orderings the paper argues for, checked on our numbers (only those we can check)."""
    checks = [("mamdr", ">", "dn"), ("mamdr", ">", "dr"), ("dn", ">", "alternate"), ("dr", ">", "alternate"),
              ("pcgrad", ">", "weighted_loss"), ("alternate+finetune", ">", "alternate"),
              ("reptile", ">", "maml"), ("mldg", ">", "maml")]
    out = []
    for a, _, b in checks:
        if a in ours and b in ours:
            d = ours[a] - ours[b]
            out.append(f"{a} > {b}: {'yes' if d > 0 else 'no'} ({d:+.4f})")
    best = max(ours, key=ours.__getitem__)
    out.append(f"best: {best}" + (" (the paper: mamdr)" if best != "mamdr" else " (as in the paper)"))
    return out


def paired_deltas(folder: Path, model: str, methods: list[str], seeds: list[int]) -> dict[str, list[float]]:
    """Per seed, mean test AUC of each method minus Alternate's on the same split (from the cells)."""
    def mean_auc(method: str, seed: int) -> float | None:
        base, _, ft = method.partition("+")
        path = folder / "cells" / f"{model}__{base}__s{seed}.json"
        if not path.exists():
            return None
        cell = json.loads(path.read_text())
        values = cell["per_domain_finetuned"] if ft else cell["per_domain"]
        return None if values is None else sum(values) / len(values)

    out: dict[str, list[float]] = {}
    for meth in methods:
        deltas = []
        for seed in seeds:
            a, b = mean_auc(meth, seed), mean_auc("alternate", seed)
            if a is not None and b is not None:
                deltas.append(a - b)
        out[meth] = deltas
    return out


def _fmt_deltas(deltas: list[float]) -> str:
    if not deltas:
        return "-"
    mean = sum(deltas) / len(deltas)
    wins = sum(d > 0 for d in deltas)
    return f"{mean:+.4f} ({wins}/{len(deltas)})"


def table_x(folder: Path) -> list[str]:
    tx = json.loads((folder / "table_x.json").read_text())
    meta = dict(tx["meta"])  # Table X only for models trained with several frameworks (not Table V's extras)
    meta["models"] = [m for m in meta["models"] if len(tx["models"][m]["rows"]) > 1]
    lines = [f"### Table X on {meta['dataset']} ({len(meta['seeds'])} seeds; paper: Taobao-10)", "",
             "| framework | " + " | ".join(f"{m} (ours) | {m} (paper)" for m in meta["models"]) + " |",
             "|---|" + "---:|---:|" * len(meta["models"])]
    for meth in meta["methods"]:
        cells = []
        for m in meta["models"]:
            row = tx["models"][m]["rows"].get(meth)
            cells.append(f"{row['avg_auc']:.4f} ± {row['avg_auc_std']:.4f} (R {row['avg_rank']:.2f})" if row else "-")
            paper = PAPER_X.get(m, {}).get(meth)
            cells.append(f"{paper:.4f}" if paper is not None else "-")
        lines.append(f"| {meth} | " + " | ".join(cells) + " |")
    lines += ["", "Paired Δ test AUC vs Alternate on the same split, mean over seeds (seeds where it is > 0):", "",
              "| framework | " + " | ".join(meta["models"]) + " |", "|---|" + "---:|" * len(meta["models"])]
    deltas = {m: paired_deltas(folder, m, meta["methods"], meta["seeds"]) for m in meta["models"]}
    for meth in meta["methods"]:
        if meth != "alternate":
            lines.append(f"| {meth} | " + " | ".join(_fmt_deltas(deltas[m][meth]) for m in meta["models"]) + " |")
    lines.append("")
    for m in meta["models"]:
        ours = {k: r["avg_auc"] for k, r in tx["models"][m]["rows"].items()}
        if not ours:
            continue
        tau, n = kendall_tau(ours, PAPER_X.get(m, {}))
        lines.append(f"* **{m}**: Kendall τ with the paper's ordering {tau:+.2f} over {n} methods; "
                     + "; ".join(claims(ours)))
    return [*lines, ""]


def table_v_vi(folder: Path) -> list[str]:
    lines = []
    for key, paper, title in (("table_v", PAPER_V, "Table V"), ("table_vi", PAPER_VI, "Table VI")):
        t = json.loads((folder / f"{key}.json").read_text())
        lines += [f"### {title} on {t['meta']['dataset']}", "",
                  "| row | ours AUC | ours RANK | paper Amazon-6 AUC | paper Taobao-10 AUC |",
                  "|---|---:|---:|---:|---:|"]
        for label, row in t["rows"].items():
            name = label.split("+", 1)[1] if key == "table_vi" else label
            ref = paper.get(name)
            amazon, taobao = (ref if ref is not None else (None, None))
            if key == "table_v" and ref is not None:
                amazon, taobao = ref[0][0], ref[1][0]
            a_txt = "-" if amazon is None else f"{amazon:.4f}"
            t_txt = "-" if taobao is None else f"{taobao:.4f}"
            lines.append(f"| {label} | {row['avg_auc']:.4f} ± {row['avg_auc_std']:.4f} | {row['avg_rank']:.2f} | "
                         f"{a_txt} | {t_txt} |")
        lines.append("")
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("folders", nargs="+", type=Path, help="grid output folders")
    args = parser.parse_args()
    out: list[str] = []
    for folder in args.folders:
        out += table_x(folder) + table_v_vi(folder)
    print("\n".join(out))


if __name__ == "__main__":
    main()
