"""``mamdr experiment --grid``: models × frameworks × seeds, resumable, summarised as the paper's Tables V, VI, X.

Every (model, framework, seed) cell is trained once and written atomically to
``OUT/cells/<model>__<framework>__s<seed>.json`` the moment it finishes, so an interrupted grid resumes
where it stopped. ``NAME+finetune`` methods are read from NAME's cell (one run reports both ways).
With ``schedule=staged``, DR and MAMDR continue from the Alternate and DN runs of the same cell row
trained in this process (their first stage is that run, step for step), instead of repeating it.
RANK is computed across the methods of each table, per domain and seed, then averaged (as in the paper).
"""

from __future__ import annotations

import json
import logging
import os
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm import tqdm

from contracts.errors import ConfigError
from trainer.evaluation import average_rank, mean_auc
from trainer.frameworks import build_framework, fit
from trainer.frameworks.fit import FitResult, FitState
from trainer.models import MODELS
from trainer.research.experiment import FINETUNE_SUFFIX, ExperimentConfig, RunSpec, build, load, parse_methods

log = logging.getLogger(__name__)
PLAIN = "alternate"  # how Table V trains each base model on its own
ABLATION = ("alternate", "dn", "dr", "mamdr")  # Table VI rows (each also +finetune when asked for)
CELL_VERSION = 1
EMPTY_HINT = {"table_v": f"{PLAIN} (and mamdr, with mlp in --models)", "table_vi": ", ".join(ABLATION)}


@dataclass(frozen=True, kw_only=True)
class GridConfig(RunSpec):
    """Every model × every method × every seed; one cell file each."""

    models: tuple[str, ...]

    @property
    def bases(self) -> list[str]:
        return list(dict.fromkeys(m.removesuffix(FINETUNE_SUFFIX) for m in self.methods))

    def fingerprint(self) -> dict[str, Any]:
        """What must match for a stored cell to count as finished (seed and finetune are per cell)."""
        fw = {k: v for k, v in self.framework.to_json().items() if k not in ("seed", "finetune", "device")}
        return {"dataset": self.dataset, "data_dir": str(self.data_dir) if self.data_dir else None,
                "dataset_options": self.dataset_options, "emb_dim": self.emb_dim,
                "model_extra": self.model_extra, "framework": fw}


def parse_models(spec: str) -> tuple[str, ...]:
    models = tuple(dict.fromkeys(m.strip().lower() for m in spec.split(",") if m.strip()))
    if not models:
        raise ConfigError("--models is empty; name at least one, e.g. mlp,deepfm,star")
    for m in models:
        MODELS.check(m)
    return models


def cell_path(out: Path, model: str, framework: str, seed: int) -> Path:
    return out / "cells" / f"{model}__{framework}__s{seed}.json"


def _write_atomic(path: Path, text: str) -> None:
    """Write then rename, so a killed run never leaves a half cell that would be taken as finished."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w") as fh:
            fh.write(text)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _read_cell(path: Path, cfg: GridConfig, finetune: bool) -> dict[str, Any] | None:
    """The stored cell if it is finished for this grid; None if it must be (re)computed."""
    if not path.exists():
        return None
    try:
        cell = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError):
        log.warning("unreadable cell %s; recomputing it", path)
        return None
    if cell.get("config") != cfg.fingerprint():
        stored = cell.get("config", {})
        diff = sorted(k for k in set(stored) | set(cfg.fingerprint()) if stored.get(k) != cfg.fingerprint().get(k))
        raise ConfigError(f"{path} was trained with a different configuration ({', '.join(diff)}); "
                          f"use another --out or delete {path.parent}")
    if finetune and cell.get("per_domain_finetuned") is None:
        return None
    return cell


# staged DR/MAMDR first repeat exactly an Alternate/DN run (same seed, model, config): resume from it
STAGE_ONE = {"dr": "alternate", "mamdr": "dn"}


def _job_order(base: str) -> int:
    """Alternate first (DN's guard reuses its run), then DN (staged MAMDR resumes from it), then the rest."""
    return 0 if base == "alternate" else 1 if base in STAGE_ONE.values() else 2


def _run_cell(cfg: GridConfig, ds: Any, model: str, base: str, seed: int, finetune: bool,
              stage_one: FitState | None = None,
              reference: FitResult | None = None) -> tuple[dict[str, Any], FitResult]:
    ecfg = ExperimentConfig(**{**cfg.spec(), "methods": (base,), "seeds": (seed,)}, model=model)
    fcfg = cfg.framework.with_(seed=seed, finetune=finetune)
    result = fit(build_framework(base, build(ds, ecfg, seed), ds, fcfg), resume_shared=stage_one,
                 reference=reference)
    n = len(ds.domains)
    ft = result.test_finetuned if finetune else None
    return {
        "version": CELL_VERSION, "model": model, "framework": base, "seed": seed, "config": cfg.fingerprint(),
        "domains": list(ds.domains), "per_domain": [result.test[d] for d in range(n)],
        "per_domain_finetuned": [ft[d] for d in range(n)] if ft is not None else None,
        "epochs": result.epochs, "best_epoch": result.best_epoch + 1, "best_val_auc": result.best_val_auc,
        "epoch_time_s": result.mean_epoch_time, "train_time_s": sum(result.epoch_times),
        "val_history": result.val_history, "phases": result.phases,
        "time_to_best_s": result.time_to_best_s, "capped": result.capped,
        "stage_one_reused": stage_one is not None, "guard": result.guard,
    }, result


def validate(cfg: GridConfig) -> None:
    parse_models(",".join(cfg.models))
    parse_methods(",".join(cfg.methods))
    if not cfg.seeds:
        raise ConfigError("--seeds must be >= 1")


def run_grid(cfg: GridConfig, show_progress: bool = False, report_only: bool = False) -> dict[str, Any]:
    """Train every unfinished cell, then write the tables (Markdown + JSON) and the plot; return the tables.

    The result's ``computed`` and ``skipped`` list the cell files trained now and those resumed from disk;
    ``missing`` the cells ``report_only`` left out (tables of what is finished, e.g. while a grid runs).
    """
    validate(cfg)
    torch.use_deterministic_algorithms(True, warn_only=True)
    bases = sorted(cfg.bases, key=_job_order)  # stable: the stage-one runs first
    jobs = [(s, m, b) for s in cfg.seeds for m in cfg.models for b in bases]
    staged = cfg.framework.schedule == "staged"
    stage_one: dict[tuple[str, str, int], FitState] = {}  # finished Alternate/DN runs of this process
    # Alternate runs of this process, DN's guard reference (a cell read from disk has none: DN's guard
    # then trains Alternate itself, the same run)
    alternates: dict[tuple[str, int], FitResult] = {}
    cells: dict[tuple[str, str, int], dict[str, Any]] = {}
    computed: list[str] = []
    skipped: list[str] = []
    missing: list[str] = []
    datasets: dict[int, Any] = {}
    bar = tqdm(jobs, desc="grid", unit="cell", disable=not show_progress, dynamic_ncols=True)
    for seed, model, base in bar:
        finetune = f"{base}{FINETUNE_SUFFIX}" in cfg.methods
        path = cell_path(cfg.out, model, base, seed)
        bar.set_postfix_str(path.stem)
        # report-only: a cell trained without the finetune still gives its plain row
        cell = _read_cell(path, cfg, finetune and not report_only)
        if cell is None and report_only:
            missing.append(path.name)
            continue
        if cell is None:
            if seed not in datasets:
                datasets = {seed: load(cfg.dataset, seed, cfg.data_dir, cfg.dataset_options)}
            first = stage_one.pop((model, STAGE_ONE[base], seed), None) if staged and base in STAGE_ONE else None
            cell, result = _run_cell(cfg, datasets[seed], model, base, seed, finetune, first,
                                     alternates.get((model, seed)))
            if staged and base in STAGE_ONE.values() and result.state is not None:
                stage_one[(model, base, seed)] = result.state
            if base == "alternate":  # only the current (model, seed) is needed: jobs are grouped by it
                alternates = {(model, seed): result}
            _write_atomic(path, json.dumps(cell, indent=1, sort_keys=True))
            computed.append(path.name)
        else:
            skipped.append(path.name)
        cells[(model, base, seed)] = cell
    bar.close()
    if not cells:
        raise ConfigError(f"no finished cells in {cfg.out / 'cells'} for this grid")
    tables = build_tables(cfg, cells)
    write_tables(cfg.out, tables)
    return {**tables, "computed": computed, "skipped": skipped, "missing": missing}


def _per_domain(cells: dict[tuple[str, str, int], dict[str, Any]], model: str, method: str,
                seed: int) -> dict[int, float] | None:
    base = method.removesuffix(FINETUNE_SUFFIX)
    cell = cells.get((model, base, seed))
    if cell is None:
        return None
    values = cell["per_domain_finetuned"] if method.endswith(FINETUNE_SUFFIX) else cell["per_domain"]
    return None if values is None else {d: float(v) for d, v in enumerate(values)}


def _ms(values: Sequence[float]) -> tuple[float, float]:
    arr = np.asarray(values, dtype=float)
    return float(arr.mean()), float(arr.std(ddof=1)) if arr.size > 1 else 0.0


def summarise(rows: dict[str, tuple[str, str]], cells: dict[tuple[str, str, int], dict[str, Any]],
              seeds: Sequence[int], domains: list[str]) -> dict[str, Any]:
    """One table: rows label -> (model, method); RANK across these rows per domain and seed, then averaged."""
    per_seed: list[dict[str, tuple[float, float]]] = []
    for seed in seeds:
        pd = {label: _per_domain(cells, m, meth, seed) for label, (m, meth) in rows.items()}
        present = {k: v for k, v in pd.items() if v is not None}
        if not present:
            continue
        ranks = average_rank(present)
        per_seed.append({k: (mean_auc(v), ranks[k]) for k, v in present.items()})
    out: dict[str, Any] = {}
    for label, (model, method) in rows.items():
        got = [s[label] for s in per_seed if label in s]
        if not got:
            continue
        auc_m, auc_s = _ms([a for a, _ in got])
        rank_m, rank_s = _ms([r for _, r in got])
        pds = [_per_domain(cells, model, method, s) for s in seeds]
        pds_ok = [p for p in pds if p is not None]
        out[label] = {"model": model, "method": method, "avg_auc": auc_m, "avg_auc_std": auc_s,
                      "avg_rank": rank_m, "avg_rank_std": rank_s, "n_seeds": len(got),
                      "per_domain": {domains[d]: float(np.mean([p[d] for p in pds_ok])) for d in range(len(domains))}}
    return {"n_methods": len(rows), "rows": out}


def build_tables(cfg: GridConfig, cells: dict[tuple[str, str, int], dict[str, Any]]) -> dict[str, Any]:
    domains: list[str] = next(iter(cells.values()))["domains"] if cells else []
    seeds = list(cfg.seeds)
    v_rows: dict[str, tuple[str, str]] = {}
    if PLAIN in cfg.methods:
        v_rows = {m: (m, PLAIN) for m in cfg.models}
    if "mlp" in cfg.models and "mamdr" in cfg.methods:
        v_rows["mlp+mamdr"] = ("mlp", "mamdr")
    ablation_model = "mlp" if "mlp" in cfg.models else cfg.models[0]
    vi_rows = {f"{ablation_model}+{meth}": (ablation_model, meth)
               for base in ABLATION for meth in (base, f"{base}{FINETUNE_SUFFIX}") if meth in cfg.methods}
    x = {model: summarise({meth: (model, meth) for meth in cfg.methods}, cells, seeds, domains)
         for model in cfg.models}
    meta = {"dataset": cfg.dataset, "seeds": seeds, "domains": domains, "models": list(cfg.models),
            "methods": list(cfg.methods), "framework_config": cfg.framework.to_json()}
    return {"meta": meta,
            "table_v": {"title": f"Table V: models ({PLAIN} training) vs MLP+MAMDR",
                        **summarise(v_rows, cells, seeds, domains)},
            "table_vi": {"title": f"Table VI: ablation on {ablation_model}",
                         **summarise(vi_rows, cells, seeds, domains)},
            "table_x": {"title": "Table X: frameworks × models (avg AUC mean ± std; RANK within each model)",
                        "n_methods": len(cfg.methods), "models": x}}


def _fmt(r: dict[str, Any]) -> tuple[str, str]:
    return (f"{r['avg_auc']:.4f} ± {r['avg_auc_std']:.4f}", f"{r['avg_rank']:.2f} ± {r['avg_rank_std']:.2f}")


def to_markdown(tables: dict[str, Any]) -> str:
    meta = tables["meta"]
    lines = [f"# Grid on {meta['dataset']} ({len(meta['seeds'])} seeds, {len(meta['domains'])} domains)", ""]
    for key in ("table_v", "table_vi"):
        t = tables[key]
        lines += [f"## {t['title']}", "", "| method | avg AUC | avg RANK |", "|---|---|---|"]
        lines += [f"| {label} | {a} | {r} |" for label, row in t["rows"].items() for a, r in [_fmt(row)]]
        if not t["rows"]:
            lines.append(f"\n_no rows: add {EMPTY_HINT[key]} to --frameworks_")
        lines.append("")
    tx = tables["table_x"]
    models = meta["models"]
    lines += [f"## {tx['title']}", "", "| framework | " + " | ".join(f"{m} AUC | {m} RANK" for m in models) + " |",
              "|---|" + "---|---|" * len(models)]
    for meth in meta["methods"]:
        parts = []
        for m in models:
            row = tx["models"][m]["rows"].get(meth)
            parts += list(_fmt(row)) if row else ["-", "-"]
        lines.append(f"| {meth} | " + " | ".join(parts) + " |")
    return "\n".join(lines) + "\n"


def plot_table_x(tables: dict[str, Any], path: Path) -> None:
    """Heatmap of Table X: avg AUC per framework × model, annotated with its RANK."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    meta, tx = tables["meta"], tables["table_x"]
    methods, models = meta["methods"], meta["models"]
    grid = np.full((len(methods), len(models)), np.nan)
    for j, m in enumerate(models):
        for i, meth in enumerate(methods):
            row = tx["models"][m]["rows"].get(meth)
            if row:
                grid[i, j] = row["avg_auc"]
    fig, ax = plt.subplots(figsize=(2.0 + 1.4 * len(models), 1.5 + 0.45 * len(methods)))
    image = ax.imshow(grid, cmap="viridis", aspect="auto")
    middle = float(np.nanmean(grid)) if np.isfinite(grid).any() else 0.0
    for j, m in enumerate(models):
        for i, meth in enumerate(methods):
            row = tx["models"][m]["rows"].get(meth)
            if row:  # dark text on the bright (high-AUC) end of viridis, white on the dark end
                ax.text(j, i, f"{row['avg_auc']:.3f}\nR {row['avg_rank']:.2f}", ha="center", va="center",
                        fontsize=7, color="black" if row["avg_auc"] > middle else "white")
    ax.set_xticks(range(len(models)))
    ax.set_xticklabels(models)
    ax.set_yticks(range(len(methods)))
    ax.set_yticklabels(methods, fontsize=8)
    ax.set_title(f"{meta['dataset']}: avg test AUC (R = RANK within model)")
    fig.colorbar(image, ax=ax, label="avg AUC")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def write_tables(out: Path, tables: dict[str, Any]) -> None:
    out.mkdir(parents=True, exist_ok=True)
    for key in ("table_v", "table_vi", "table_x"):
        _write_atomic(out / f"{key}.json", json.dumps({"meta": tables["meta"], **tables[key]}, indent=2))
    _write_atomic(out / "tables.md", to_markdown(tables))
    plot_table_x(tables, out / "table_x.png")
