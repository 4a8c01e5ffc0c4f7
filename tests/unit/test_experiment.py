"""``mamdr experiment``: results.json + plot on a small synthetic run, determinism, one-line errors."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from mamdr.cli import main
from trainer.frameworks import FrameworkConfig
from trainer.research.experiment import ExperimentConfig, run_experiment


def _run(out: Path) -> dict:
    cfg = ExperimentConfig(
        dataset="synthetic", model="mlp", methods=("alternate", "mamdr", "mamdr+finetune"),
        seeds=(0, 1), out=out, emb_dim=8,
        framework=FrameworkConfig(epochs=1, batch_size=64, k=1, finetune_epochs=1),
        dataset_options={"n_domains": 3, "n_users": 40, "n_items": 30, "rows_per_domain": 100},
    )
    return run_experiment(cfg)


def test_experiment_writes_results_and_plot_reproducibly(tmp_path: Path) -> None:
    first = _run(tmp_path / "a")
    saved = json.loads((tmp_path / "a" / "results.json").read_text())
    assert (tmp_path / "a" / "per_domain_auc.png").stat().st_size > 1000
    assert set(saved["methods"]) == {"alternate", "mamdr", "mamdr+finetune"}
    for m in saved["methods"].values():
        assert 0.0 <= m["avg_auc"] <= 1.0 and 1.0 <= m["avg_rank"] <= 3.0
        assert len(m["per_domain"]) == 3 and len(m["epochs"]) == 2 and m["epoch_time_s"] > 0
    ranks = [m["avg_rank"] for m in saved["methods"].values()]
    assert sum(ranks) == pytest.approx(1 + 2 + 3)  # RANK is taken across the table's methods
    assert "avg AUC" in first["table"] and "mamdr+finetune" in first["table"]
    assert (tmp_path / "a" / "per_domain_val_loss.png").stat().st_size > 1000
    for name, m in saved["methods"].items():  # one curve entry per epoch run, per domain and the mean
        for s in m["per_seed"]:
            curves, epochs = s["val_curves"], len(s["val_history"])
            assert set(curves["loss"]) == set(curves["auc"]) == set(saved["domains"]), name
            assert epochs >= 1 and len(curves["mean_loss"]) == epochs, name
            assert all(len(v) == epochs for v in [*curves["loss"].values(), *curves["auc"].values()]), name
            assert all(0.0 < v < 5.0 for v in curves["mean_loss"]), name
            assert 1 <= s["best_epoch"] <= epochs
    assert "lowest mean val loss at epoch" in first["table"]
    second = _run(tmp_path / "b")
    for name, m in first["methods"].items():
        assert m["per_domain"] == second["methods"][name]["per_domain"], name


def test_a_learning_rate_grid_keeps_each_methods_best_rate_on_validation(tmp_path: Path) -> None:
    """--lrs: every method runs at each rate; the reported run is the one with the best validation AUC,
    and it is exactly the single-rate run at that rate (the grid changes nothing else)."""
    base = dict(dataset="synthetic", model="mlp", methods=("alternate", "mamdr"), seeds=(0,), emb_dim=8,
                framework=FrameworkConfig(epochs=2, batch_size=64, k=1),
                dataset_options={"n_domains": 3, "n_users": 40, "n_items": 30, "rows_per_domain": 100})
    grid = run_experiment(ExperimentConfig(out=tmp_path / "grid", lrs=(1e-3, 1e-2), **base))
    for m, info in grid["methods"].items():
        (seed,) = info["per_seed"]
        assert set(seed["lr_val_auc"]) == {"0.001", "0.01"}
        assert seed["lr"] == max((1e-3, 1e-2), key=lambda lr: seed["lr_val_auc"][f"{lr:g}"])
        single = run_experiment(ExperimentConfig(
            out=tmp_path / m, **{**base, "framework": base["framework"].with_(inner_lr=seed["lr"])}))
        assert single["methods"][m]["per_domain"] == info["per_domain"], m
    assert "best validation AUC is shown" in grid["table"]


@pytest.mark.parametrize(("argv", "needle", "exit_code"), [
    (["--dataset", "no-such-data"], "no-such-data", 2),
    (["--dataset", "/nonexistent/folder/x"], "/nonexistent/folder/x", 3),  # not found
    (["--dataset", "synthetic", "--model", "nope"], "unknown model 'nope'", 2),
    (["--dataset", "synthetic", "--frameworks", "alternate,nope"], "unknown framework 'nope'", 2),
    (["--dataset", "synthetic", "--beta", "0"], "beta", 2),
    (["--dataset", "synthetic", "--lrs", "1e-3,fast"], "--lrs", 2),
    (["--dataset", "synthetic", "--lrs", "0,1e-3"], "--lrs", 2),
])
def test_bad_input_is_one_error_line(argv: list[str], needle: str, exit_code: int, tmp_path: Path,
                                     capsys: pytest.CaptureFixture[str]) -> None:
    code = main(["experiment", *argv, "--seeds", "1", "--epochs", "1", "--out", str(tmp_path)])
    err = capsys.readouterr().err.strip()
    assert code == exit_code  # 2 usage, 3 not found or invalid
    lines = [line for line in err.splitlines() if line.startswith("mamdr: error:")]
    assert len(lines) == 1 and needle in lines[0], err
    assert "Traceback" not in err


def test_an_unknown_optimizer_is_a_usage_error_listing_the_choices(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as done:
        main(["experiment", "--dataset", "synthetic", "--inner", "rmsprop", "--out", "x"])
    assert done.value.code == 2 and "invalid choice: 'rmsprop'" in capsys.readouterr().err


def test_time_to_reach_alternates_best_skips_a_guarded_runs_own_alternate_epochs() -> None:
    from trainer.research.experiment import _time_to_reach

    cell = {"epoch_times_s": [1.0, 1.0, 2.0, 2.0, 4.0], "val_history": [0.6, 0.8, 0.7, 0.79, 0.81],
            "phases": ["alternate", "alternate", "dn", "dn", "dr"], "guard": "dn"}
    assert _time_to_reach(cell, 0.8) == 10.0  # the DR epoch: DN never got there; the guard's Alternate is not it
    assert _time_to_reach(cell, 0.75) == 6.0  # DN reaches 0.75 at its second epoch (0.79)
    assert _time_to_reach(cell, 0.9) is None
    staged_dr = {**cell, "phases": ["alternate", "alternate", "dr", "dr", "dr"], "guard": None}
    assert _time_to_reach(staged_dr, 0.8) == 2.0  # a staged DR's first stage is its own training


def test_val_loss_lines_count_the_domains_whose_loss_rose_before_the_best_auc_epoch(tmp_path: Path) -> None:
    from trainer.research.report import plot_val_loss, risen_by, val_loss_lines

    curves = {"loss": {"a": [0.5, 0.6, 0.7], "b": [0.6, 0.5, 0.4], "c": [0.7, 0.6, 0.65], "d": [0.4, 0.4, 0.4]},
              "mean_loss": [0.55, 0.525, 0.5375], "n_domains": 4}
    assert risen_by(curves, 3) == (["a", "c"], 4)  # a turned up after epoch 1, c after 2; d flat is not a rise
    assert risen_by(curves, 1) == ([], 4)
    assert risen_by(curves, 4) == ([], 0)  # no figure at that epoch
    methods = {"wl": {"per_seed": [{"best_epoch": 3, "val_curves": curves},
                                   {"best_epoch": 1, "val_curves": {**curves, "n_domains": 70}}]},
               "old": {"per_seed": [{"best_epoch": 1}]}}  # a result from before the curves: left out
    lines = val_loss_lines(methods)
    assert len(lines) == 2 and "first 4 of 70 domains" in lines[0]
    assert "epoch 2, 2;" in lines[1] and "(3, 1) 2/4, 0/4 domains" in lines[1]
    results = {"dataset": "toy", "model": "mlp", "seeds": [0], "domains": list(curves["loss"]), "methods": methods}
    plot_val_loss(results, tmp_path / "loss.png")
    assert (tmp_path / "loss.png").stat().st_size > 1000
