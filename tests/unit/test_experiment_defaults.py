"""`mamdr experiment` with no framework flags trains with FrameworkConfig's defaults (one source of truth)."""

from __future__ import annotations

from mamdr.cli import build_parser
from mamdr.commands.experiment import _framework_config
from trainer.frameworks import FrameworkConfig


def test_cli_defaults_are_the_framework_defaults() -> None:
    args = build_parser().parse_args(["experiment", "--dataset", "ml-latest-small", "--out", "runs/x"])
    assert _framework_config(args) == FrameworkConfig()


def test_defaults_have_no_hard_budget_and_scale_patience_by_beta() -> None:
    cfg = FrameworkConfig()
    assert cfg.epochs is None and cfg.patience_unit == "progress"
    assert (cfg.beta, cfg.schedule, cfg.specific, cfg.dr_select) == (0.5, "staged", "all", "domain")
