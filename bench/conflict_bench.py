"""MAMDR / DN / DR vs Alternate on the synthetic conflict benchmark (``make_conflict``) as the conflict
knob grows: paired per-seed test-AUC margins and wall time to the best validation AUC.

    PYTHONPATH=$PWD python bench/conflict_bench.py --out runs/conflict --png docs/conflict_margin.png

Every framework runs at FrameworkConfig's defaults (only seed, batch size 256 and the model size are set);
the data are make_conflict(n_domains=4, n_users=100, n_items=50, rows_per_domain=1500), the scale of the
unit test tests/unit/test_frameworks_conflict_bench.py; "oracle" is the Bayes-optimal AUC.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch

from trainer.data.synthetic import make_conflict
from trainer.frameworks import FrameworkConfig, build_framework, fit
from trainer.models import ModelConfig, build_model


def run_one(conflict: float, seed: int, frameworks: list[str], emb_dim: int, rows: int,
            overrides: dict | None = None) -> dict[str, dict]:
    ds = make_conflict(n_domains=4, n_users=100, n_items=50, rows_per_domain=rows, conflict=conflict, seed=seed)
    out: dict[str, dict] = {"oracle": {"test": oracle_auc(ds)}}
    stage_one = {}
    for name in frameworks:
        torch.manual_seed(seed)
        model = build_model("mlp", ModelConfig(n_users=ds.n_users, n_items=ds.n_items, n_domains=ds.n_domains,
                                               emb_dim=emb_dim, hidden=(16, 8), dropout=0.0))
        cfg = FrameworkConfig(seed=seed, batch_size=256, **(overrides or {}))
        fw = build_framework(name, model, ds, cfg)
        resume = stage_one.get({"mamdr": "dn", "dr": "alternate"}.get(name, "")) if cfg.schedule == "staged" else None
        start = time.perf_counter()
        res = fit(fw, resume_shared=resume)
        if name in ("dn", "alternate"):
            stage_one[name] = res.state
        out[name] = {"test": res.test_auc, "val": res.best_val_auc, "epochs": res.epochs,
                     "best_epoch": res.best_epoch + 1, "to_best_s": res.time_to_best_s,
                     "wall_s": time.perf_counter() - start, "capped": res.capped,
                     "val_history": res.val_history, "epoch_times": res.epoch_times,
                     "conflict_cos": float(np.nanmean(np.asarray(res.conflict)[..., 0, 1:]))
                     if res.conflict else None}
    return out


def oracle_auc(ds) -> float:  # type: ignore[no-untyped-def]
    from trainer.data.synthetic import conflict_true_logit
    from trainer.evaluation import auc

    return float(np.mean([auc(s.label, conflict_true_logit(ds, s.user, s.item, np.full(len(s), d)))
                          for d, s in ds.test.items()]))


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--conflicts", default="0,0.25,0.5,0.75,1")
    ap.add_argument("--seeds", type=int, default=3)
    ap.add_argument("--frameworks", default="alternate,dn,dr,mamdr")
    ap.add_argument("--emb-dim", type=int, default=8)
    ap.add_argument("--rows", type=int, default=1500)
    ap.add_argument("--out", type=Path, default=Path("runs/conflict"))
    ap.add_argument("--png", type=Path, default=None)
    ap.add_argument("--set", action="append", default=[], help="FrameworkConfig override KEY=VALUE (tuning)")
    args = ap.parse_args()
    torch.set_num_threads(1)
    overrides = {}
    for kv in args.set:
        k, v = kv.split("=", 1)
        overrides[k] = None if v == "None" else type(getattr(FrameworkConfig(), k) or 0)(v) if not v.replace(
            ".", "").isalpha() else v
    fws = args.frameworks.split(",")
    args.out.mkdir(parents=True, exist_ok=True)
    rows = []
    for c in [float(x) for x in args.conflicts.split(",")]:
        for s in range(args.seeds):
            r = run_one(c, s, fws, args.emb_dim, args.rows, overrides)
            rows.append({"conflict": c, "seed": s, **{k: v for k, v in r.items()}})
            line = " ".join(f"{k} {v['test']:.4f}({v['best_epoch']}/{v['epochs']},{v['to_best_s']:.1f}s)"
                            if k != "oracle" else f"oracle {v['test']:.4f}" for k, v in r.items())
            print(f"c={c} seed={s}: {line}", flush=True)
    (args.out / "results.json").write_text(json.dumps({"overrides": overrides, "rows": rows}, indent=2))
    print(summarise(rows, fws))
    if args.png:
        plot(rows, fws, args.png)


def summarise(rows: list[dict], fws: list[str]) -> str:
    lines = ["| conflict | " + " | ".join(f"{f} − alt (per seed)" for f in fws if f != "alternate")
             + " | time to best ×alt (" + ", ".join(f for f in fws if f != "alternate") + ") |"
             + " time to reach Alternate's best val ×alt's time to best, per seed |",
             "|---|" + "---|" * (len(fws) + 1)]
    for c in sorted({r["conflict"] for r in rows}):
        rs = [r for r in rows if r["conflict"] == c]
        cells = []
        for f in fws:
            if f == "alternate":
                continue
            d = [r[f]["test"] - r["alternate"]["test"] for r in rs]
            cells.append(f"{np.mean(d):+.4f} ± {np.std(d, ddof=1) if len(d) > 1 else 0:.4f} "
                         f"({' / '.join(f'{x:+.4f}' for x in d)})")
        ratio = ", ".join(f"{np.mean([r[f]['to_best_s'] / r['alternate']['to_best_s'] for r in rs]):.2f}"
                          for f in fws if f != "alternate")
        match = ", ".join("/".join(_match(r, f) for r in rs) for f in fws if f != "alternate")
        lines.append(f"| {c} | " + " | ".join(cells) + f" | {ratio} | {match} |")
    return "\n".join(lines)


def _match(row: dict, f: str) -> str:
    """Wall time until f's validation AUC first reaches Alternate's best, over Alternate's time to it."""
    target, alt = row["alternate"]["val"], row["alternate"]["to_best_s"]
    times = row[f]["epoch_times"]
    for k, v in enumerate(row[f]["val_history"]):
        if v >= target:
            return f"{sum(times[: k + 1]) / alt:.2f}"
    return "never"


def plot(rows: list[dict], fws: list[str], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    cs = sorted({r["conflict"] for r in rows})
    fig, ax = plt.subplots(figsize=(6, 4))
    for f in fws:
        if f == "alternate":
            continue
        d = [[r[f]["test"] - r["alternate"]["test"] for r in rows if r["conflict"] == c] for c in cs]
        ax.errorbar(cs, [np.mean(x) for x in d], yerr=[np.std(x, ddof=1) if len(x) > 1 else 0 for x in d],
                    marker="o", capsize=3, label=f"{f} − alternate")
    ax.axhline(0, color="grey", lw=0.8)
    ax.set_xlabel("conflict knob c (make_conflict)")
    ax.set_ylabel("paired test-AUC margin over Alternate")
    ax.set_title("synthetic conflict benchmark (mean ± std over seeds)")
    ax.legend()
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)


if __name__ == "__main__":
    main()
