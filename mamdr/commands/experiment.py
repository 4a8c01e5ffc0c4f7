"""Trainer subcommands: ``experiment`` (frameworks × seeds → Tables V/VI-style summary). ``mamdr quickstart``
lives in ``mamdr.commands.stack``. Torch is imported inside the commands only, so ``mamdr --help`` stays fast."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from contracts.errors import ConfigError
from mamdr.commands import deprecated_alias

# The framework's choices, spelled here so `mamdr --help` needs no torch; tests/unit/test_cli_vocabulary.py
# fails if they drift from trainer/frameworks/config.py.
INNER_OPTIMIZERS = ("adam", "sgd")
OUTER_OPTIMIZERS = ("interp", "sgd", "adagrad", "adam")
BETA_SCHEDULES = ("constant", "anneal")
SCHEDULES = ("interleaved", "staged")
DR_BUDGETS = ("pass", "half")
DELTA_INITS = ("zeros", "random")
DOMAIN_SAMPLINGS = ("balanced", "proportional")


def _add_framework_flags(p: argparse.ArgumentParser) -> None:
    """Flags default to None = FrameworkConfig's default (one source of truth for the defaults)."""
    p.add_argument("--epochs", type=int, default=None,
                   help="hard epoch budget per phase (default: none, train until early stopping; a run that "
                        "hits a budget while still improving is flagged CAPPED)")
    p.add_argument("--patience", type=int, default=3,
                   help="early-stopping patience on mean val AUC, in epochs of Alternate-equivalent progress "
                        "(DN waits patience/β epochs; default 3)")
    p.add_argument("--min-delta", type=float, default=0.0,
                   help="a rise of the mean val AUC counts as improvement only above this (default 0)")
    p.add_argument("--patience-unit", default="progress", choices=("progress", "epoch"),
                   help="progress: patience scaled by β; epoch: plain epochs")
    p.add_argument("--batch-size", type=int, default=1024, help="rows per mini-batch")
    p.add_argument("--inner", default="adam", choices=INNER_OPTIMIZERS, help="inner optimizer")
    p.add_argument("--lr", type=float, default=1e-3, help="inner learning rate α (default 1e-3)")
    p.add_argument("--outer", default="interp", choices=OUTER_OPTIMIZERS,
                   help="outer step: interp is Θ ← Θ + β(Θ̃ − Θ), the others are fed (Θ − Θ̃)")
    p.add_argument("--outer-lr", type=float, default=0.1, help="outer optimizer lr (not used by interp)")
    p.add_argument("--beta", type=float, default=None, help="DN outer step β (default 0.5; paper 0.1)")
    p.add_argument("--beta-schedule", default="constant", choices=BETA_SCHEDULES,
                   help="anneal: β_e = max(β, 1/(1+e))")
    p.add_argument("--gamma", type=float, default=None, help="DR step γ (default 1: staged; paper 0.1)")
    p.add_argument("--dr-k", dest="k", type=int, default=None,
                   help="DR: other domains sampled per target (default 3)")
    deprecated_alias(p, "--k", "--dr-k", "k", type=int)
    p.add_argument("--inner-batches", dest="inner_steps", type=int, default=None,
                   help="mini-batches per inner update (default: a full pass over the domain)")
    deprecated_alias(p, "--inner-steps", "--inner-batches", "inner_steps", type=int)
    p.add_argument("--dr-steps", type=int, default=None,
                   help="mini-batches per DR update (default: a full pass)")
    p.add_argument("--dr-budget", default=None, choices=DR_BUDGETS,
                   help="DR update size without --dr-steps: pass (paper) | half (default: a DR epoch ≈ (k+1)× "
                        "an Alternate epoch)")
    p.add_argument("--schedule", default=None, choices=SCHEDULES,
                   help="DR/MAMDR: staged (default: θS to convergence, then DR) | interleaved (Alg. 3)")
    p.add_argument("--dr-epochs", type=int, default=None, help="staged: DR-phase epoch budget (default --epochs)")
    p.add_argument("--dr-patience", type=int, default=None, help="staged: DR-phase patience (default 1)")
    p.add_argument("--dr-select", default=None, choices=("domain", "mean"),
                   help="staged: domain (default: each domain keeps θi from its best DR epoch, or none) | mean")
    p.add_argument("--no-dn-guard", dest="dn_guard", action="store_false", default=None,
                   help="keep DN's θS even where plain alternate training (run from the same start) beats it on "
                        "validation (default: the better of the two)")
    p.add_argument("--dr-select-se", type=float, default=None,
                   help="domain: θi is kept only if it beats θS alone on the domain's validation by this many "
                        "standard errors of the paired AUC difference (default 2; 0: any rise)")
    p.add_argument("--domain-sampling", default=None, choices=DOMAIN_SAMPLINGS,
                   help="weighted_loss, pcgrad, maml, mldg: rows of each domain per step; balanced = "
                        "⌈batch/n⌉ of every domain (small domains repeated within an epoch) | proportional = a "
                        "share ∝ the domain's training rows, every row once per epoch (default: balanced)")
    p.add_argument("--delta-init", default="zeros", choices=DELTA_INITS, help="θi start")
    p.add_argument("--l2", type=float, default=1e-5, help="L2 on embeddings (default 1e-5)")
    p.add_argument("--specific", default=None,
                   help="domain-specific parameters: all (default) | default (all but user/item tables) | head "
                        "(the model's output layers) | globs")
    p.add_argument("--device", default="cpu", help="torch device (cpu, cuda, ...)")
    p.add_argument("--threads", type=int, default=None, help="torch intra-op threads")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser("experiment", help="compare learning frameworks on a multi-domain dataset",
                              description="Train frameworks × seeds; print a Tables V/VI-style summary.")
    p.add_argument("--dataset", required=True, help="ml-latest-small, amazon, or a preprocessed folder path")
    p.add_argument("--data-dir", type=Path, default=None, help="where the named dataset's files live")
    p.add_argument("--model", default="mlp", help="CTR model: mlp, wdl, deepfm, neurfm, autoint, shared_bottom, "
                   "mmoe, ple or star (an unknown name is refused with the list)")
    p.add_argument("--frameworks", default="alternate,dn,dr,mamdr",
                   help="comma list; NAME+finetune adds the final per-domain finetune")
    p.add_argument("--seeds", type=int, default=3, help="number of seeds (0..N-1)")
    p.add_argument("--seed-offset", type=int, default=0, help="first seed (seeds are OFFSET..OFFSET+N-1)")
    p.add_argument("--emb-dim", type=int, default=128, help="user/item/domain embedding size")
    p.add_argument("--out", type=Path, required=True, help="folder for results.json and the plots")
    p.add_argument("--grid", action="store_true",
                   help="models × frameworks × seeds, resumable; writes Tables V, VI, X to --out")
    p.add_argument("--report-only", action="store_true",
                   help="grid: train nothing; tables from the finished cells (missing ones left out)")
    p.add_argument("--models", default=None, help="grid: comma list of models (default: --model)")
    p.add_argument("--lrs", default=None,
                   help="comma list of inner learning rates: every method runs each, and per method and seed the "
                        "one with the best validation AUC is reported (the same tuning budget for all; "
                        "not with --grid)")
    _add_framework_flags(p)
    p.set_defaults(func=cmd_experiment)


def _framework_config(args: argparse.Namespace):  # type: ignore[no-untyped-def]
    from trainer.frameworks import FrameworkConfig

    given = {
        "beta": args.beta, "gamma": args.gamma, "k": args.k, "dr_budget": args.dr_budget,
        "schedule": args.schedule, "dr_patience": args.dr_patience, "dr_select": args.dr_select,
        "dr_select_se": args.dr_select_se, "dn_guard": args.dn_guard, "specific": args.specific,
        "domain_sampling": args.domain_sampling,
    }
    return FrameworkConfig(
        epochs=args.epochs, patience=args.patience, min_delta=args.min_delta,
        patience_unit=args.patience_unit, batch_size=args.batch_size, inner=args.inner,
        inner_lr=args.lr, outer=args.outer, outer_lr=args.outer_lr,
        beta_schedule=args.beta_schedule, inner_steps=args.inner_steps,
        dr_steps=args.dr_steps, dr_epochs=args.dr_epochs, delta_init=args.delta_init, l2=args.l2,
        device=args.device, **{k: v for k, v in given.items() if v is not None},
    )


def _run(cfg, threads: int | None, show: bool = True) -> int:  # type: ignore[no-untyped-def]
    import torch
    from tqdm import tqdm

    from trainer.research.experiment import FINETUNE_SUFFIX, run_experiment

    if threads:
        torch.set_num_threads(threads)
    # a run = one framework on one seed; epochs per run are not known ahead (early stopping), runs are: the
    # bar counts runs (total and ETA) and shows the current epoch beside them
    runs = len(cfg.seeds) * len({m.removesuffix(FINETUNE_SUFFIX) for m in cfg.methods})
    bar = tqdm(total=runs, desc="experiment", unit="run", file=sys.stderr, dynamic_ncols=True, delay=1.0,
               disable=not show)

    def progress(message: str) -> None:
        bar.set_postfix_str(message)
        if "test AUC" in message:  # a framework finished on a seed
            bar.update(1)

    try:
        results = run_experiment(cfg, progress)
    finally:
        bar.close()
    print(results["summary"])
    print(results["table"])
    print(f"wrote {cfg.out / 'results.json'}, {cfg.out / 'per_domain_auc.png'} and "
          f"{cfg.out / 'per_domain_val_loss.png'}")
    return 0


def cmd_experiment(args: argparse.Namespace) -> int:
    from trainer.research.experiment import ExperimentConfig, parse_methods

    if args.seeds < 1:
        raise ConfigError("--seeds must be >= 1")
    lrs = _parse_lrs(args.lrs)
    if args.grid:
        if lrs:
            raise ConfigError("--lrs is for a single experiment; run the grid at one --lr")
        return _run_grid(args)
    cfg = ExperimentConfig(
        dataset=args.dataset, model=args.model.lower(), methods=parse_methods(args.frameworks),
        seeds=tuple(range(args.seed_offset, args.seed_offset + args.seeds)), out=args.out,
        framework=_framework_config(args), data_dir=args.data_dir, emb_dim=args.emb_dim, lrs=lrs,
    )
    return _run(cfg, args.threads, show=not args.no_progress)


def _parse_lrs(spec: str | None) -> tuple[float, ...]:
    """``--lrs``: distinct rates in (0, 1], at most 8 (each multiplies the experiment's time)."""
    if not spec:
        return ()
    try:
        lrs = tuple(dict.fromkeys(float(x) for x in spec.split(",") if x.strip()))
    except ValueError as exc:
        raise ConfigError(f"--lrs {spec!r}: a comma list of numbers, e.g. 5e-4,1e-3,2e-3") from exc
    if not lrs or any(not 0 < lr <= 1 for lr in lrs) or len(lrs) > 8:
        raise ConfigError(f"--lrs {spec!r}: 1 to 8 learning rates in (0, 1]")
    return lrs



def _run_grid(args: argparse.Namespace) -> int:
    import torch

    from trainer.research.experiment import parse_methods
    from trainer.research.grid import GridConfig, parse_models, run_grid

    cfg = GridConfig(
        dataset=args.dataset, models=parse_models(args.models or args.model),
        methods=parse_methods(args.frameworks),
        seeds=tuple(range(args.seed_offset, args.seed_offset + args.seeds)), out=args.out,
        framework=_framework_config(args), data_dir=args.data_dir, emb_dim=args.emb_dim,
    )
    if args.threads:
        torch.set_num_threads(args.threads)
    tables = run_grid(cfg, show_progress=not (args.report_only or args.no_progress), report_only=args.report_only)
    print(f"{len(tables['computed'])} cells trained, {len(tables['skipped'])} resumed from {args.out / 'cells'}"
          + (f", {len(tables['missing'])} not finished (left out)" if tables["missing"] else ""))
    print((args.out / "tables.md").read_text())
    print(f"wrote tables.md, table_v.json, table_vi.json, table_x.json and table_x.png to {args.out}")
    return 0
