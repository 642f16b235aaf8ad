"""The chaos runner, small: replicas killed, paused and stopped, Redis killed and its clients
disconnected, a faulty and hostile API, poison intake messages -- and not one violation."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
FAULT_KINDS = ("kill_daemon", "pause_daemon", "term_daemon", "kill_redis", "client_kill")


@pytest.mark.slow
@pytest.mark.timeout(420)
def test_small_chaos_run_has_no_violations_and_finishes_every_job(tmp_path: Path) -> None:
    report_path = tmp_path / "report.json"
    argv = [
        sys.executable, str(ROOT / "bench" / "chaos.py"),
        "--replicas", "3", "--jobs", "40", "--duration", "40", "--settle", "60",
        "--faults-each", "3", "--seed", "7",
        "--report", str(report_path), "--workdir", str(tmp_path / "run"),
    ]  # fmt: skip

    result = subprocess.run(
        argv, cwd=ROOT, capture_output=True, text=True, timeout=360, check=False
    )

    assert report_path.exists(), result.stderr[-3000:]
    report = json.loads(report_path.read_text())
    summary = result.stdout + result.stderr[-2000:]
    assert report["violations"]["count"] == 0, summary
    assert report["jobs"]["finished"] == report["jobs"]["valid"] == 40, summary
    assert report["poison"]["sent"] == report["poison"]["dead_letters"] == 6, summary
    assert all(report["faults"][kind] >= 1 for kind in FAULT_KINDS), report["faults"]
    assert report["api"]["by_fault"]["deep_json"] >= 1, report["api"]
    assert report["problems"] == [], summary
    assert result.returncode == 0, summary
