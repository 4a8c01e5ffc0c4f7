"""The quickstart's parts without servers: holdout requests, report, workdir safety, settings, process stop."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import pytest

from contracts.errors import ConfigError
from mamdr import devstack
from mamdr import quickstart_report as report
from mamdr.quickstart import MARKER, QuickstartConfig, prepare_workdir, settings_for


def _event(domain: str, user: str, item: str, clicked: int) -> dict[str, object]:
    return {"domain": domain, "user_id": user, "item_id": item, "clicked": clicked}


def test_holdout_requests_group_by_domain_and_user_and_split_long_lists() -> None:
    events = [_event("a", "u1", f"i{k}", k % 2) for k in range(5)] + [_event("b", "u1", "i9", 1)]
    requests = report.holdout_requests(events, max_requests=10, max_items=2)
    assert requests == [("a", "u1", ["i0", "i1"], [0, 1]), ("a", "u1", ["i2", "i3"], [0, 1]),
                        ("a", "u1", ["i4"], [0]), ("b", "u1", ["i9"], [1])]
    capped = report.holdout_requests(events, max_requests=2, max_items=2, seed=3)
    assert len(capped) == 2 and capped == report.holdout_requests(events, 2, 2, seed=3)


def test_holdout_auc_scores_every_request_and_needs_both_labels() -> None:
    requests = [("a", "u", ["x", "y"], [1, 0]), ("a", "v", ["z"], [0]), ("b", "u", ["x"], [1])]
    seen = []

    def score(domain: str, user: str, items: list[str]) -> list[float]:
        seen.append((domain, user))
        return [0.9 if i == "x" else 0.2 for i in items]

    figures = report.holdout_auc(requests, score)
    assert len(seen) == 3
    assert figures["a"] == {"auc": 1.0, "n": 3} and figures["b"] == {"auc": None, "n": 1}


def _summary() -> dict[str, object]:
    domains = {d: {"name": d, "events": 10, "prequential_auc": 0.6, "holdout_auc": 0.7, "holdout_n": 4,
                   "delta": "v000002", "onboarded": d == "new"} for d in ("old", "new")}
    return {"mode": "short", "dataset": "toy", "model": "mlp", "rounds": 2, "live_version": "v000002",
            "seconds": 1.0, "domains": domains, "mean": {"prequential_auc": 0.6, "holdout_auc": 0.7},
            "onboarding": {"domain": "new", "theta_s_version": "v000001", "theta_s_scores": [0.5],
                           "delta_version": "v000002", "delta_scores": [0.4], "events": 3},
            "endpoints": {"serving": "http://127.0.0.1:1"},
            "round_log": [{"version": "v000001", "events": 5, "domains_trained": 1, "seconds": 0.5,
                           "prequential_mean_auc": None},
                          {"version": "v000002", "events": 5, "domains_trained": 2, "seconds": 0.5,
                           "prequential_mean_auc": 0.6}]}


def test_report_writes_json_markdown_and_a_plot(tmp_path: Path) -> None:
    paths = report.write_report(_summary(), tmp_path / "r")
    data = json.loads(paths["json"].read_text())
    assert data["report"]["plot"] == str(paths["plot"])
    md = paths["markdown"].read_text()
    assert "| new (new) | 10 | 0.6000 | 0.7000 | 4 | v000002 |" in md and "| v000001 | 5 | 1 | 0.5 | — |" in md
    assert paths["plot"].read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_workdir_refuses_a_foreign_folder_and_resets_its_own(tmp_path: Path) -> None:
    foreign = tmp_path / "mine"
    foreign.mkdir()
    (foreign / "thesis.tex").write_text("x")
    with pytest.raises(ConfigError, match="not made by the quickstart"):
        prepare_workdir(foreign)
    assert (foreign / "thesis.tex").exists()
    ours = prepare_workdir(tmp_path / "qs")
    (ours / "artifacts" / "v000001").mkdir(parents=True)
    (ours / "registry.db").write_text("old")
    (ours / "notes.txt").write_text("kept")
    again = prepare_workdir(ours)
    assert (again / MARKER).exists() and (again / "notes.txt").exists()
    assert not (again / "artifacts").exists() and not (again / "registry.db").exists()


def test_settings_default_to_embedded_backends_in_the_workdir(tmp_path: Path) -> None:
    s = settings_for(QuickstartConfig(workdir=tmp_path), tmp_path, "tok")
    assert s.stream.url == f"file://{tmp_path}/stream/clicks"
    assert s.registry.url == f"sqlite://{tmp_path}/registry.db"
    assert s.feature_store.url == f"file://{tmp_path}/feature_store"
    assert s.registry.admin_token.get_secret_value() == "tok"
    real = settings_for(QuickstartConfig(workdir=tmp_path, stream="kafka://h:1/t", feature_store="redis://h:2/0",
                                         registry="redis://h:2/1"), tmp_path, "t")
    assert (real.stream.url, real.registry.url, real.feature_store.url) == ("kafka://h:1/t", "redis://h:2/1",
                                                                             "redis://h:2/0")
    # a URL of the wrong kind fails where every backend URL fails: the one resolver, naming the schemes
    from feature_store import open_store
    from stream import open_stream

    with pytest.raises(ConfigError, match="kafka://"):
        open_stream(settings_for(QuickstartConfig(workdir=tmp_path, stream="localhost:9092"), tmp_path, "t").stream.url)
    with pytest.raises(ConfigError, match="redis://"):
        bad = settings_for(QuickstartConfig(workdir=tmp_path, feature_store="http://x"), tmp_path, "t")
        open_store(bad.feature_store.url, bad.feature_store)


def test_stop_terminates_then_kills_a_process_that_ignores_sigterm(tmp_path: Path) -> None:
    polite = devstack.start_process("polite", [sys.executable, "-c", "import time; time.sleep(60)"], tmp_path)
    stubborn = devstack.start_process("stubborn", [sys.executable, "-c", (
        "import signal, sys, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); print('ready', flush=True); "
        "time.sleep(60)")], tmp_path)
    devstack.wait_until(lambda: "ready" in devstack.log_file(tmp_path, "stubborn").read_text(), 20, "stubborn")
    assert devstack.read_pid(tmp_path, "polite") == polite.pid
    assert devstack.stop_process(tmp_path, "polite", timeout_s=10) == "stopped"
    t0 = time.monotonic()
    assert devstack.stop_process(tmp_path, "stubborn", timeout_s=0.5) == "killed"
    assert time.monotonic() - t0 < 10
    assert not devstack.alive(polite.pid) and not devstack.alive(stubborn.pid)
    assert not devstack.pid_file(tmp_path, "polite").exists()
    assert devstack.stop_process(tmp_path, "polite") == "not running"


def test_wait_until_reports_a_dead_process_with_its_log(tmp_path: Path) -> None:
    proc = devstack.start_process("dies", [sys.executable, "-c", "print('boom: bad config'); raise SystemExit(3)"],
                                  tmp_path)
    with pytest.raises(Exception, match="boom: bad config"):
        devstack.wait_until(lambda: False, 20, "dies", tmp_path, "dies", proc)


def test_stack_commands_import_no_torch() -> None:
    code = ("import sys, mamdr.cli, mamdr.commands.stack, mamdr.devstack; mamdr.cli.build_parser(); "
            "print('torch' in sys.modules)")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert done.stdout.strip() == "False", done.stderr
