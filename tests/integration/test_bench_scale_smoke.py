"""``bench/scale.py --smoke``: every section runs to the end and reports its figures (the
figures themselves are not checked against their targets: this is not a speed test)."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
SECTIONS = ("intake", "memory", "lateness", "delay")
# Per section, the start of each figure that must come with a finite number.
FIGURES = {
    "intake": ("admitted/s", "meanwhile: polls completed", "admitted by the daemon's count"),
    "memory": ("daemon RSS, no job", "job hash", "per-job stream", "global stream share",
               "INFO used_memory delta"),
    "lateness": ("polls/s", "poll lag p50", "poll lag p99"),
    "delay": ("change -> event p50", "change -> event p99"),
}  # fmt: skip


def _number(value: object) -> bool:
    return isinstance(value, int | float) and math.isfinite(value)


@pytest.mark.slow
@pytest.mark.timeout(240)
def test_scale_smoke_runs_every_section_and_reports_numbers(tmp_path: Path) -> None:
    report = tmp_path / "scale.json"
    argv = [sys.executable, str(ROOT / "bench" / "scale.py"), "--smoke", "--json", str(report)]

    result = subprocess.run(
        argv, cwd=ROOT, capture_output=True, text=True, timeout=200, check=False
    )

    summary = result.stdout + result.stderr[-3000:]
    assert result.returncode == 0, summary
    document = json.loads(report.read_text())
    assert document["sections"] == list(SECTIONS), summary
    assert document["failed"] == [], summary
    rows = document["rows"]
    assert not [r for r in rows if r["figure"] == "error"], summary
    for section, figures in FIGURES.items():
        mine = [r for r in rows if r["section"] == section]
        for figure in figures:
            found = [r for r in mine if r["figure"].startswith(figure)]
            assert found, (section, figure, summary)
            assert all(_number(r["number"]) for r in found), (section, figure, found)
        assert f"| {section} | " in result.stdout, summary
    targets = {r["section"] for r in rows if r["target"] and r["met"]}
    assert targets == set(SECTIONS), rows  # every section judged at least one figure
    admitted = next(r for r in rows if r["figure"].startswith("admitted by"))
    assert admitted["value"].startswith("500 of 500"), admitted
