"""``mamdr stream produce | tail | replay`` over the embedded file:// stream."""

from __future__ import annotations

import contextlib
import io
import json
import os
import re
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

from contracts.events import ClickEvent, DeadLetter
from contracts.settings import StreamSettings
from mamdr.cli import main
from stream import drain, open_stream

REPO = Path(__file__).resolve().parents[2]


@dataclass
class Run:
    returncode: int
    stdout: str
    stderr: str


def mamdr(*args: str, stdin: str | None = None) -> Run:
    """Runs the real ``mamdr`` entry point in this process (a subprocess costs seconds on a busy machine)."""
    out, err = io.StringIO(), io.StringIO()
    saved = sys.stdin
    sys.stdin = io.TextIOWrapper(io.BytesIO((stdin or "").encode()))
    try:
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            code = main(list(args))
    finally:
        sys.stdin = saved
    return Run(code, out.getvalue(), err.getvalue())


@pytest.fixture(autouse=True)
def _no_fsync(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MAMDR_STREAM__FSYNC", "false")


def _line(i: int, domain: str = "comedy") -> str:
    return json.dumps(
        {"event_id": f"e{i}", "ts": 1.0 + i, "domain": domain, "user_id": "u", "item_id": "i", "clicked": i % 2}
    )


def test_produce_validates_sends_and_reports_invalid_lines_with_numbers(tmp_path: Path) -> None:
    url = f"file://{tmp_path}/clicks"
    lines = [_line(0), "", "{broken", _line(1, "drama"), '{"event_id": "x"}', "x" * 20_000, _line(2)]
    proc = mamdr("stream", "produce", "--stream", url, "--partitions", "2", "--create-topics",
                 stdin="\n".join(lines) + "\n")
    assert proc.returncode == 1
    assert "sent 3 events" in proc.stdout and "3 invalid lines" in proc.stdout
    assert [re.match(r"mamdr stream produce: line (\d+):", e).group(1) for e in proc.stderr.splitlines()] == [
        "3",
        "5",
        "6",
    ]
    with open_stream(url, StreamSettings(url=url, create_topics=True)) as stream:
        with stream.consumer(None) as consumer:
            ids = sorted(ClickEvent.model_validate_json(r.value).event_id for r in drain(consumer, 3, 5))
        with stream.dead_letter_stream().consumer(None) as dlq:
            letters = [DeadLetter.model_validate_json(r.value) for r in drain(dlq, 3, 5)]
    assert ids == ["e0", "e1", "e2"]
    assert [d.source_offset for d in letters] == [3, 5, 6]
    assert "exceeds the limit" in letters[2].reason

    clean = mamdr("stream", "produce", "--stream", url, stdin=_line(3) + "\n")
    assert clean.returncode == 0 and "sent 1 events" in clean.stdout


def test_tail_prints_records_and_commits_a_group(tmp_path: Path) -> None:
    url = f"file://{tmp_path}/clicks"
    assert (
        mamdr(
            "stream", "produce", "--stream", url, "--partitions", "1", "--create-topics",
            stdin="".join(_line(i) + "\n" for i in range(4))
        ).returncode
        == 0
    )
    first = mamdr("stream", "tail", "--stream", url, "--group", "ops", "--limit", "3", "--commit")
    assert first.returncode == 0, first.stderr
    assert [line.split(" ", 2)[0] for line in first.stdout.splitlines()] == ["0:0", "0:1", "0:2"]
    assert json.loads(first.stdout.splitlines()[0].split(" ", 2)[2])["event_id"] == "e0"
    rest = mamdr("stream", "tail", "--stream", url, "--group", "ops", "--idle-timeout", "0.2")
    assert [line.split(" ", 1)[0] for line in rest.stdout.splitlines()] == ["0:3"]
    bad = mamdr("stream", "tail", "--stream", url, "--commit")
    assert bad.returncode == 2 and "--commit needs --group" in bad.stderr


def test_bad_stream_urls_give_one_line_errors(tmp_path: Path) -> None:
    proc = mamdr("stream", "tail", "--stream", "ftp://x/y")
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines() == [
        "mamdr: error: stream URL scheme 'ftp' is not supported; use one of kafka://, file://"
    ]


def test_replay_sends_a_benchmark_in_time_order_with_labels_at_a_bounded_rate(
    tmp_path: Path, shared_data: Path
) -> None:
    if not (shared_data / "ml_latest_small").is_dir():
        pytest.skip("ml_latest_small not in the shared data")
    url = f"file://{tmp_path}/clicks"
    proc = subprocess.run(  # a subprocess: the dataset code pulls in heavy modules
        [
            sys.executable,
            "-m",
            "mamdr.cli",
            "stream",
            "replay",
            "--dataset",
            "ml-latest-small",
            "--data-dir",
            str(shared_data),
            "--stream",
            url,
            "--create-topics",
            "--partitions",
            "1",
            "--limit",
            "3000",
            "--rate",
            "10000",
            "--no-progress",
        ],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=REPO,
        env={**os.environ, "MAMDR_STREAM__FSYNC": "false"},
    )
    assert proc.returncode == 0, proc.stderr
    m = re.search(r"replayed 3000 events .* in ([\d.]+) s \((\d+)/s\)", proc.stdout)
    assert m, proc.stdout
    assert float(m.group(1)) >= 0.25 and int(m.group(2)) <= 11_000  # the rate bound held
    with open_stream(url, StreamSettings(url=url, create_topics=True)) as stream, stream.consumer(None) as consumer:
        events = [ClickEvent.model_validate_json(r.value) for r in drain(consumer, 3000, 10)]
        assert consumer.poll(timeout_s=0.05) == []
    assert len(events) == 3000
    ts = [e.ts for e in events]
    assert ts == sorted(ts)
    assert {e.clicked for e in events} == {0, 1}
    assert len({e.domain for e in events}) > 1
