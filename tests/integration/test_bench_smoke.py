"""``bench/compare.py`` at a tiny size: it runs to the end and reports a figure for each
contender it ran (the figures themselves are not checked: this is not a speed test)."""

from __future__ import annotations

import importlib.util
import json
import math
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
ALL = ("floor", "daemon-token", "daemon-aksk", "sdk")


def _number(value: object) -> bool:
    return isinstance(value, int | float) and math.isfinite(value)


@pytest.mark.slow
@pytest.mark.timeout(240)
def test_compare_runs_small_and_reports_every_contender(tmp_path: Path) -> None:
    has_sdk = importlib.util.find_spec("huaweicloudsdkservicestage") is not None
    contenders = [name for name in ALL if has_sdk or name != "sdk"]
    report = tmp_path / "compare.json"
    argv = [
        sys.executable, str(ROOT / "bench" / "compare.py"),
        "--jobs", "20", "--seconds", "1", "--warmup", "0.5",
        "--only", ",".join(contenders), "--json", str(report),
    ]  # fmt: skip

    result = subprocess.run(
        argv, cwd=ROOT, capture_output=True, text=True, timeout=200, check=False
    )

    summary = result.stdout + result.stderr[-3000:]
    assert result.returncode == 0, summary
    rows = {r["contender"]: r for r in json.loads(report.read_text())["results"]}
    assert sorted(rows) == sorted(contenders), summary
    for name, row in rows.items():
        assert not row["skipped"], (name, summary)
        assert row["polls"] > 0, (name, summary)
        for key in ("polls_per_s", "polls_per_cpu_s", "cpu_ms_per_poll", "rss_mib"):
            assert _number(row[key]), (name, key, row)
        assert _number(row["vs_floor"]), (name, row)
        assert f"| {name} | " in result.stdout, summary
    for name in ("daemon-token", "daemon-aksk"):
        row = rows[name]
        for key in ("redis_commands_per_poll", "redis_cpu_ms_per_poll"):
            assert _number(row[key]), (name, key, row)
        if shutil.which("ss"):
            assert _number(row["redis_round_trips_per_poll"]), (name, row)
