"""``mamdr experiment``: frameworks × seeds on one dataset and model, summarised like the paper's
Tables V/VI (mean ± std over seeds of average AUC and average RANK), with per-domain AUCs.

Methods are framework names; ``NAME+finetune`` reports NAME after the final per-domain finetune
(the framework is trained once and reported both ways when both are asked for).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

import numpy as np
import torch

from contracts.errors import ConfigError
from trainer.data.base import MultiDomainDataset
from trainer.evaluation import average_rank, mean_auc
from trainer.frameworks import FRAMEWORKS, FitResult, FrameworkConfig, build_framework, fit
from trainer.frameworks.fit import FitState
from trainer.frameworks.multitask import StepFramework
from trainer.models import MODELS, ModelConfig, build_model
from trainer.research.report import (
    conflict_lines,
    format_table,
    plot_per_domain,
    plot_val_loss,
    sampling_line,
    val_loss_lines,
)

log = logging.getLogger(__name__)
FINETUNE_SUFFIX = "+finetune"
# With ``schedule=staged`` the first stage of DR is exactly an Alternate run and that of MAMDR a DN run
# (same seed, same draws): when both are in the table, the second resumes from the first.
STAGED_FIRST = {"dr": "alternate", "mamdr": "dn"}


@dataclass(frozen=True, kw_only=True)
class RunSpec:
    """What an experiment and a grid share: the data, the methods and seeds, where results go, how to train."""

    dataset: str
    methods: tuple[str, ...]
    seeds: tuple[int, ...]
    out: Path
    framework: FrameworkConfig = field(default_factory=FrameworkConfig)
    data_dir: Path | None = None
    model_extra: dict[str, Any] = field(default_factory=dict)
    emb_dim: int = 128
    dataset_options: dict[str, Any] = field(default_factory=dict)  # passed to load_dataset

    def spec(self) -> dict[str, Any]:
        """The shared fields only, as keywords (e.g. to derive an ExperimentConfig from a GridConfig)."""
        return {f.name: getattr(self, f.name) for f in fields(RunSpec)}


@dataclass(frozen=True, kw_only=True)
class ExperimentConfig(RunSpec):
    """One model: every method for every seed.

    ``lrs``: the same learning-rate grid for every method; per method and seed, the rate with the best
    validation AUC is kept (the others' runs only cost time). Empty: ``framework.inner_lr`` alone.
    """

    model: str
    lrs: tuple[float, ...] = ()


def parse_methods(spec: str) -> tuple[str, ...]:
    methods = tuple(m.strip().lower() for m in spec.split(",") if m.strip())
    if not methods:
        raise ConfigError("--frameworks is empty; name at least one, e.g. alternate,dn,dr,mamdr")
    for m in methods:
        base = m.removesuffix(FINETUNE_SUFFIX)
        FRAMEWORKS.check(base, hint=f" (append {FINETUNE_SUFFIX} for the final per-domain finetune)")
        if m.endswith(FINETUNE_SUFFIX) and base == "separate":
            raise ConfigError("separate has no shared model to finetune from; drop separate+finetune")
    return methods


def load(dataset: str, seed: int, data_dir: Path | None, options: dict[str, Any] | None = None
         ) -> MultiDomainDataset:
    """The dataset by name or folder path (the data package decides what names exist)."""
    try:
        from trainer.data import load_dataset
    except ImportError as exc:  # the loaders are another package's; fail with one line
        raise ConfigError(f"dataset loaders are not available ({exc})") from exc
    return load_dataset(dataset, seed=seed, data_dir=data_dir, **(options or {}))


def model_config(ds: MultiDomainDataset, cfg: ExperimentConfig) -> ModelConfig:
    pretrained = ds.user_vectors is not None and ds.item_vectors is not None
    return ModelConfig(
        n_users=ds.n_users, n_items=ds.n_items, n_domains=ds.n_domains, emb_dim=cfg.emb_dim,
        user_dim=int(ds.user_vectors.shape[1]) if pretrained else None,  # type: ignore[union-attr]
        item_dim=int(ds.item_vectors.shape[1]) if pretrained else None,  # type: ignore[union-attr]
        freeze_user_item=pretrained, extra=dict(cfg.model_extra),
    )


def build(ds: MultiDomainDataset, cfg: ExperimentConfig, seed: int):  # type: ignore[no-untyped-def]
    torch.manual_seed(seed)
    model = build_model(cfg.model, model_config(ds, cfg))
    if ds.user_vectors is not None and ds.item_vectors is not None:
        with torch.no_grad():
            model.user_embedding.weight.copy_(torch.from_numpy(np.asarray(ds.user_vectors, dtype=np.float32)))
            model.item_embedding.weight.copy_(torch.from_numpy(np.asarray(ds.item_vectors, dtype=np.float32)))
    return model


def run_experiment(cfg: ExperimentConfig,
                   progress: Callable[[str], None] | None = None) -> dict[str, Any]:
    """Train every method for every seed; write results.json and the plots; return the results."""
    MODELS.check(cfg.model)
    torch.use_deterministic_algorithms(True, warn_only=True)
    bases = list(dict.fromkeys(m.removesuffix(FINETUNE_SUFFIX) for m in cfg.methods))
    per_seed: list[dict[str, dict[str, Any]]] = []
    domains: list[str] = []
    summary = ""
    for seed in cfg.seeds:
        ds = load(cfg.dataset, seed, cfg.data_dir, cfg.dataset_options)
        domains, summary = ds.domains, ds.summary()
        by_lr = {lr: _run_seed(cfg, ds, seed, bases, lr, progress) for lr in (cfg.lrs or (cfg.framework.inner_lr,))}
        cells = _pick_lr(by_lr) if cfg.lrs else by_lr[cfg.framework.inner_lr]
        ranks = average_rank({m: c["per_domain"] for m, c in cells.items()})
        for m, c in cells.items():
            c["avg_auc"], c["avg_rank"] = mean_auc(c["per_domain"]), ranks[m]
        per_seed.append(cells)
    results = aggregate(cfg, per_seed, domains, summary)
    cfg.out.mkdir(parents=True, exist_ok=True)
    (cfg.out / "results.json").write_text(json.dumps(results, indent=2, sort_keys=True))
    plot_per_domain(results, cfg.out / "per_domain_auc.png")
    plot_val_loss(results, cfg.out / "per_domain_val_loss.png")
    return results


def _run_seed(cfg: ExperimentConfig, ds: MultiDomainDataset, seed: int, bases: list[str], lr: float,
              progress: Callable[[str], None] | None) -> dict[str, dict[str, Any]]:
    """Every method on one seed at one inner learning rate (staged DR/MAMDR resume from Alternate/DN)."""
    cells: dict[str, dict[str, Any]] = {}
    first_stages: dict[str, FitState] = {}  # finished Alternate/DN runs a staged DR/MAMDR resumes from
    finished: dict[str, FitResult] = {}  # this seed's results: DN's guard compares with Alternate's run
    tag = f" lr {lr:g}" if cfg.lrs else ""
    # the runs others reuse go first (Alternate: DN's guard and DR's first stage; DN: MAMDR's); the table
    # keeps the order the user gave
    for base in sorted(bases, key=lambda b: {"alternate": 0, "dn": 1}.get(b, 2)):
        finetune = f"{base}{FINETUNE_SUFFIX}" in cfg.methods
        fcfg = cfg.framework.with_(seed=seed, finetune=finetune, inner_lr=lr)
        fw = build_framework(base, build(ds, cfg, seed), ds, fcfg)

        def report(epoch: int, value: float, base: str = base) -> None:
            if progress is not None:
                progress(f"seed {seed}{tag} {base} epoch {epoch + 1}: val AUC {value:.4f}")

        resume = first_stages.get(STAGED_FIRST.get(base, "")) if fcfg.schedule == "staged" else None
        result = fit(fw, report, resume_shared=resume, reference=finished.get("alternate"))
        finished[base] = result
        if base in STAGED_FIRST.values() and result.state is not None:
            first_stages[base] = result.state
        info = {"epochs": result.epochs, "best_epoch": result.best_epoch + 1, "phases": result.phases,
                "epoch_times_s": result.epoch_times,
                "epoch_time_s": result.mean_epoch_time, "train_time_s": sum(result.epoch_times),
                "best_val_auc": result.best_val_auc, "val_history": result.val_history,
                "time_to_best_s": result.time_to_best_s, "capped": result.capped,
                "conflict": result.conflict, "lr": lr, "guard": result.guard,
                "kept_deltas": result.kept_deltas, "val_curves": result.val_curves.to_json(ds.domains),
                "domain_sampling": fcfg.domain_sampling if isinstance(fw, StepFramework) else None}
        if base in cfg.methods:
            cells[base] = {"per_domain": result.test, **info}
        if finetune and result.test_finetuned is not None:
            cells[f"{base}{FINETUNE_SUFFIX}"] = {"per_domain": result.test_finetuned, **info}
        if progress is not None:
            progress(f"seed {seed}{tag} {base}: test AUC {result.test_auc:.4f} after {result.epochs} epochs")
    return cells


def _pick_lr(by_lr: dict[float, dict[str, dict[str, Any]]]) -> dict[str, dict[str, Any]]:
    """Per method, the run whose learning rate gave the best validation AUC (test AUC never looked at)."""
    methods = next(iter(by_lr.values()))
    picked: dict[str, dict[str, Any]] = {}
    for m in methods:
        best = max(by_lr, key=lambda lr: by_lr[lr][m]["best_val_auc"])
        picked[m] = {**by_lr[best][m], "lr_val_auc": {f"{lr:g}": by_lr[lr][m]["best_val_auc"] for lr in by_lr}}
    return picked


def _ms(values: Sequence[float]) -> tuple[float, float]:
    arr = np.asarray(values, dtype=float)
    return float(arr.mean()), float(arr.std(ddof=1)) if arr.size > 1 else 0.0


def _time_to_reach(cell: dict[str, Any], target: float) -> float | None:
    """Wall time until the validation AUC first reaches ``target``; a guarded DN/MAMDR run's own Alternate
    epochs count as time but not as reaching it (they are Alternate's run, not the method's)."""
    times = cell.get("epoch_times_s", [])
    phases = cell.get("phases", [])
    for k, value in enumerate(cell.get("val_history", [])):
        own = cell.get("guard") is None or k >= len(phases) or phases[k] != "alternate"
        if own and value >= target:
            return float(sum(times[: k + 1]))
    return None


def aggregate(cfg: ExperimentConfig, per_seed: list[dict[str, dict[str, Any]]], domains: list[str],
              summary: str) -> dict[str, Any]:
    methods: dict[str, Any] = {}
    alt_time = alt_best = None
    if all("alternate" in cells for cells in per_seed):
        alt_time = float(np.mean([cells["alternate"]["epoch_time_s"] for cells in per_seed]))
        alt_best = [cells["alternate"]["time_to_best_s"] for cells in per_seed]
    for m in cfg.methods:
        cells = [s[m] for s in per_seed]
        auc_m, auc_s = _ms([c["avg_auc"] for c in cells])
        rank_m, rank_s = _ms([c["avg_rank"] for c in cells])
        epoch_time = float(np.mean([c["epoch_time_s"] for c in cells]))
        to_best = [c["time_to_best_s"] for c in cells]
        # wall time to the best validation AUC, paired with Alternate's on the same seed
        ratios = [t / a for t, a in zip(to_best, alt_best, strict=True)] if alt_best and all(alt_best) else None
        deltas = ([c["avg_auc"] - s["alternate"]["avg_auc"] for c, s in zip(cells, per_seed, strict=True)]
                  if alt_best is not None else None)
        # wall time until the validation AUC first reaches Alternate's best on the same seed (None: never):
        # the fair cost when a method's own best is much higher and later than Alternate's
        match = ([_time_to_reach(c, s["alternate"]["best_val_auc"]) for c, s in zip(cells, per_seed, strict=True)]
                 if alt_best is not None else None)
        methods[m] = {
            "avg_auc": auc_m, "avg_auc_std": auc_s, "avg_rank": rank_m, "avg_rank_std": rank_s,
            "per_domain": {domains[d]: float(np.mean([c["per_domain"][d] for c in cells]))
                           for d in range(len(domains))},
            "epochs": [c["epochs"] for c in cells], "best_epoch": [c["best_epoch"] for c in cells],
            "epoch_time_s": epoch_time,
            "epoch_time_vs_alternate": epoch_time / alt_time if alt_time else None,
            "train_time_s": float(np.mean([c["train_time_s"] for c in cells])),
            "time_to_best_s": float(np.mean(to_best)),
            "time_to_best_vs_alternate": float(np.mean(ratios)) if ratios else None,
            "time_to_best_vs_alternate_per_seed": ratios,
            "delta_vs_alternate_per_seed": deltas,
            "time_to_alternate_best_s_per_seed": match,
            "capped": [sorted(set(c["capped"])) for c in cells],
            "lr_per_seed": [c.get("lr") for c in cells],
            "domain_sampling": cells[0].get("domain_sampling"),
            "per_seed": [{"avg_auc": c["avg_auc"], "avg_rank": c["avg_rank"], "val_history": c["val_history"],
                          "phases": c.get("phases", []), "epoch_times_s": c.get("epoch_times_s", []),
                          "capped": c["capped"], "conflict": c["conflict"], "lr": c.get("lr"),
                          "lr_val_auc": c.get("lr_val_auc"), "guard": c.get("guard"),
                          "kept_deltas": c.get("kept_deltas"), "best_epoch": c["best_epoch"],
                          "val_curves": c.get("val_curves"),
                          "per_domain": {domains[d]: v for d, v in c["per_domain"].items()}} for c in cells],
        }
    table = format_table(methods)
    sampling = sampling_line(methods)
    if sampling:
        table += "\n" + sampling
    if cfg.lrs:
        grid = ", ".join(f"{lr:g}" for lr in cfg.lrs)
        table += (f"\nevery method ran at each learning rate in {{{grid}}}; per method and seed the one with the "
                  "best validation AUC is shown:\n" + "\n".join(
                      f"  {m:<20} {' '.join(f'{lr:g}' for lr in info['lr_per_seed'])}" for m, info in methods.items()))
    losses = val_loss_lines(methods)
    if losses:
        table += "\n" + "\n".join(losses)
    conflict = conflict_lines({"methods": methods})
    if conflict:
        table += "\n" + "\n".join(conflict)
    return {"dataset": cfg.dataset, "summary": summary, "model": cfg.model, "seeds": list(cfg.seeds),
            "domains": domains, "framework_config": cfg.framework.to_json(), "methods": methods,
            "lrs": list(cfg.lrs), "table": table}
