"""``mamdr quickstart --short`` as a user runs it (the same code path as the full run, fewer users)."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import pytest

pytestmark = pytest.mark.timeout(600)


def test_quickstart_short_runs_the_whole_product(tmp_path: Path) -> None:
    workdir = tmp_path / "qs"
    t0 = time.monotonic()
    done = subprocess.run([sys.executable, "-m", "mamdr.cli", "quickstart", "--short", "--no-progress",
                           "--workdir", str(workdir)], capture_output=True, text=True, timeout=540)
    seconds = time.monotonic() - t0
    assert done.returncode == 0, done.stderr[-3000:]
    summary = json.loads((workdir / "report" / "summary.json").read_text())
    domains = summary["domains"]
    assert len(domains) == 19 and summary["mode"] == "short"
    # every domain was scored over HTTP on held-out clicks; the mean is clearly better than chance
    assert all(r["holdout_n"] > 0 for r in domains.values())
    assert summary["mean"]["holdout_auc"] > 0.6
    assert all(r["delta"] is not None for r in domains.values())
    ob = summary["onboarding"]
    assert domains[ob["domain"]]["onboarded"] and domains[ob["domain"]]["delta"] == ob["delta_version"]
    assert ob["theta_s_version"] != ob["delta_version"] and ob["theta_s_scores"] != ob["delta_scores"]
    assert summary["rounds"] >= 2 and summary["live_version"] == ob["delta_version"]
    # the printed summary names the table, the endpoints and where the report and plot are
    for text in ("| domain |", "prequential AUC", "endpoints", str(workdir / "report" / "auc.png")):
        assert text in done.stdout
    assert (workdir / "report" / "auc.png").stat().st_size > 10_000
    assert "[8/8]" in done.stderr  # progress lines
    # serving was stopped at the end
    assert not (workdir / "run" / "serving.pid").exists()
    print(f"quickstart --short took {seconds:.0f} s")
