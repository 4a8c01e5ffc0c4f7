"""``mamdr experiment --grid``: every cell written, resume skips finished cells, tables complete, RANK bounded."""

from __future__ import annotations

import importlib
import json
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch

from contracts.errors import ConfigError
from mamdr.cli import main
from trainer.frameworks import FrameworkConfig
from trainer.research.grid import GridConfig, cell_path, run_grid

MODELS = ("mlp", "star")
METHODS = ("alternate", "dn", "mamdr", "mamdr+finetune")
SEEDS = (0, 1)
OPTIONS = {"n_domains": 3, "n_users": 40, "n_items": 30, "rows_per_domain": 100}


def _cfg(out: Path, epochs: int = 1) -> GridConfig:
    return GridConfig(dataset="synthetic", models=MODELS, methods=METHODS, seeds=SEEDS, out=out, emb_dim=8,
                      # one run per cell (the guard adds Alternate's run to DN's; tested in test_frameworks_guard)
                      framework=FrameworkConfig(epochs=epochs, batch_size=64, k=1, finetune_epochs=1,
                                                schedule="interleaved", dn_guard=False),
                      dataset_options=OPTIONS)


@pytest.fixture(scope="module")
def grid(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Path, dict]]:
    out = tmp_path_factory.mktemp("grid")
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # tiny models: one thread is several times faster on a shared 2-core machine
    try:
        yield out, run_grid(_cfg(out))
    finally:
        torch.set_num_threads(threads)


def test_every_cell_is_written_and_tables_cover_them(grid: tuple[Path, dict]) -> None:
    out, tables = grid
    bases = ("alternate", "dn", "mamdr")
    assert len(tables["computed"]) == len(MODELS) * len(bases) * len(SEEDS) and not tables["skipped"]
    for m in MODELS:
        for b in bases:
            for s in SEEDS:
                cell = json.loads(cell_path(out, m, b, s).read_text())
                assert len(cell["per_domain"]) == 3 and cell["epochs"] == 1
                assert (cell["per_domain_finetuned"] is not None) == (b == "mamdr")
    assert not list((out / "cells").glob("*.tmp"))  # atomic writes leave no partial files
    tx = tables["table_x"]["models"]
    for m in MODELS:
        assert set(tx[m]["rows"]) == set(METHODS)
        ranks = [r["avg_rank"] for r in tx[m]["rows"].values()]
        assert all(1.0 <= r <= len(METHODS) for r in ranks)
        assert sum(ranks) == pytest.approx(sum(range(1, len(METHODS) + 1)))  # ranks taken within the table
        assert all(r["n_seeds"] == 2 and 0.0 <= r["avg_auc"] <= 1.0 for r in tx[m]["rows"].values())
    v = tables["table_v"]["rows"]
    assert set(v) == {"mlp", "star", "mlp+mamdr"}
    assert all(1.0 <= r["avg_rank"] <= 3.0 for r in v.values())
    vi = tables["table_vi"]["rows"]
    assert list(vi) == ["mlp+alternate", "mlp+dn", "mlp+mamdr", "mlp+mamdr+finetune"]
    assert all(1.0 <= r["avg_rank"] <= 4.0 for r in vi.values())
    md = (out / "tables.md").read_text()
    for needle in ("Table V", "Table VI", "Table X", "mlp+mamdr+finetune", "star AUC", "star RANK"):
        assert needle in md
    assert md.count("\n| mamdr+finetune |") == 1
    for name in ("table_v.json", "table_vi.json", "table_x.json"):
        assert json.loads((out / name).read_text())["meta"]["models"] == list(MODELS)
    assert (out / "table_x.png").stat().st_size > 1000


def test_resume_skips_finished_cells_and_redoes_missing_ones(grid: tuple[Path, dict]) -> None:
    out, first = grid
    victim = cell_path(out, "star", "dn", 1)
    mtimes = {p.name: p.stat().st_mtime_ns for p in (out / "cells").glob("*.json")}
    victim.unlink()
    again = run_grid(_cfg(out))
    assert again["computed"] == [victim.name]
    assert len(again["skipped"]) == len(mtimes) - 1
    for p in (out / "cells").glob("*.json"):
        if p != victim:
            assert p.stat().st_mtime_ns == mtimes[p.name], p.name  # not recomputed
    # deterministic training: the recomputed cell gives the same tables
    assert again["table_x"] == first["table_x"]


def test_cells_from_another_config_are_refused(grid: tuple[Path, dict]) -> None:
    out, _ = grid
    with pytest.raises(ConfigError, match="different configuration"):
        run_grid(_cfg(out, epochs=2))


@pytest.mark.parametrize(("argv", "needle"), [
    (["--models", "mlp,nope"], "unknown model 'nope'"),
    (["--models", ","], "--models is empty"),
    (["--frameworks", "alternate,nope"], "unknown framework 'nope'"),
    (["--frameworks", "separate+finetune"], "separate"),
])
def test_bad_grid_names_are_one_error_line(argv: list[str], needle: str, tmp_path: Path,
                                           capsys: pytest.CaptureFixture[str]) -> None:
    code = main(["experiment", "--grid", "--dataset", "synthetic", *argv, "--seeds", "1", "--epochs", "1",
                 "--out", str(tmp_path)])
    err = capsys.readouterr().err.strip()
    assert code == 2
    lines = [line for line in err.splitlines() if line.startswith("mamdr: error:")]
    assert len(lines) == 1 and needle in lines[0], err
    assert "Traceback" not in err
    assert not (tmp_path / "cells").exists()


def test_staged_grid_continues_dr_and_mamdr_from_the_alternate_and_dn_cells(tmp_path: Path) -> None:
    """With schedule=staged, DR resumes from the Alternate run and MAMDR from the DN run of the same
    (model, seed): the first stage is not trained twice, and the result equals a from-scratch staged run."""
    fcfg = FrameworkConfig(epochs=2, patience=1, batch_size=64, k=1, schedule="staged", dr_epochs=1, seed=0)
    cfg = GridConfig(dataset="synthetic", models=("mlp",), methods=("dr", "alternate", "mamdr", "dn"), seeds=(0,),
                     out=tmp_path / "a", emb_dim=8, framework=fcfg, dataset_options=OPTIONS)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        tables = run_grid(cfg)
        assert tables["computed"][:2] == ["mlp__alternate__s0.json", "mlp__dn__s0.json"]  # stage one first
        run_grid(GridConfig(**{**cfg.__dict__, "methods": ("dr", "mamdr"), "out": tmp_path / "b"}))
    finally:
        torch.set_num_threads(threads)
    for base, first in (("dr", "alternate"), ("mamdr", "dn")):
        cell = json.loads(cell_path(tmp_path / "a", "mlp", base, 0).read_text())
        stage = json.loads(cell_path(tmp_path / "a", "mlp", first, 0).read_text())
        scratch = json.loads(cell_path(tmp_path / "b", "mlp", base, 0).read_text())
        assert cell["stage_one_reused"] and not scratch["stage_one_reused"]
        assert cell["val_history"][: stage["epochs"]] == stage["val_history"]
        assert cell["phases"][stage["epochs"]:] == ["dr"] and cell["epochs"] == stage["epochs"] + 1  # dr_epochs
        assert cell["per_domain"] == pytest.approx(scratch["per_domain"], abs=1e-6)


def test_dn_cells_guard_against_the_alternate_cell_of_this_process(tmp_path: Path,
                                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    """DN's guard compares with the Alternate cell of the same (model, seed) instead of training Alternate
    again; a grid resumed with the Alternate cell on disk trains it inside the guard, with the same result."""
    fit_module = importlib.import_module("trainer.frameworks.fit")  # the package exports a function `fit`
    built: list[str] = []
    original = fit_module.Alternate

    def counted(*args, **kwargs):  # type: ignore[no-untyped-def]
        built.append("alternate")
        return original(*args, **kwargs)

    monkeypatch.setattr(fit_module, "Alternate", counted)
    fcfg = FrameworkConfig(epochs=2, patience=1, batch_size=64, k=1, beta=0.5, seed=0)
    cfg = GridConfig(dataset="synthetic", models=("mlp",), methods=("dn", "alternate"), seeds=(0,),
                     out=tmp_path / "a", emb_dim=8, framework=fcfg, dataset_options=OPTIONS)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        tables = run_grid(cfg)
        assert tables["computed"] == ["mlp__alternate__s0.json", "mlp__dn__s0.json"] and built == []
        reused = json.loads(cell_path(tmp_path / "a", "mlp", "dn", 0).read_text())
        cell_path(tmp_path / "a", "mlp", "dn", 0).unlink()
        run_grid(cfg)  # the Alternate cell is read from disk: the guard trains Alternate itself
        assert built == ["alternate"]
    finally:
        torch.set_num_threads(threads)
    dn = json.loads(cell_path(tmp_path / "a", "mlp", "dn", 0).read_text())
    for key in ("per_domain", "val_history", "guard", "best_epoch"):  # the same run either way
        assert dn[key] == pytest.approx(reused[key]) if key == "per_domain" else dn[key] == reused[key], key
    history = json.loads(cell_path(tmp_path / "a", "mlp", "alternate", 0).read_text())["val_history"]
    # the guard's Alternate run is the Alternate cell's: first in DN's history when DN's θS was kept, else last
    assert dn["guard"] in ("dn", "alternate")
    assert (dn["val_history"][: len(history)] if dn["guard"] == "dn" else dn["val_history"][-len(history):]) == history


def test_report_only_tables_the_finished_cells_and_trains_nothing(grid: tuple[Path, dict], tmp_path: Path) -> None:
    out, _ = grid
    cfg = _cfg(out)
    wider = GridConfig(**{**cfg.__dict__, "models": (*MODELS, "deepfm"), "seeds": (0, 1, 2)})
    tables = run_grid(wider, report_only=True)
    assert not tables["computed"] and len(tables["missing"]) == 3 * 3 + 2 * 3  # deepfm everywhere, seed 2
    assert not list((out / "cells").glob("deepfm__*"))
    assert tables["table_x"]["models"]["deepfm"]["rows"] == {}
    assert all(r["n_seeds"] == 2 for r in tables["table_x"]["models"]["mlp"]["rows"].values())
    with pytest.raises(ConfigError, match="no finished cells"):
        run_grid(GridConfig(**{**cfg.__dict__, "out": tmp_path}), report_only=True)
