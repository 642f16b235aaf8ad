"""The throughput benchmarks at a tiny size, so they cannot rot: each runs to the end and
prints its figures (which are not checked: this is not a speed test)."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def _run(*argv: str) -> str:
    result = subprocess.run(
        [sys.executable, *argv], cwd=ROOT, capture_output=True, text=True, timeout=200,
        check=False,
    )  # fmt: skip
    assert result.returncode == 0, result.stdout + result.stderr[-3000:]
    return result.stdout


@pytest.mark.slow
@pytest.mark.timeout(240)
def test_sim_throughput_runs_small_and_reports_requests_per_second() -> None:
    out = _run("bench/sim_throughput.py", "--jobs", "20", "--seconds", "1", "--connections",
               "4", "--tool", "aiohttp", "--max-requests", "2000")  # fmt: skip
    client = re.search(r"^client: (\d+) requests, (\d+) requests/s, errors: 0$", out, re.M)
    assert client is not None, out
    assert int(client.group(1)) > 0
    assert re.search(r"^server: \d+ requests, by status \{'200': \d+\}", out, re.M), out


@pytest.mark.slow
@pytest.mark.timeout(240)
def test_daemon_throughput_runs_small_and_reports_both_phases() -> None:
    out = _run("bench/daemon_throughput.py", "--jobs", "50", "--seconds", "1", "--warmup", "1",
               "--concurrency", "16")  # fmt: skip
    rows = re.findall(r"^\s+([12])\s+0\s+(\d+)\s", out, re.M)
    assert [replicas for replicas, _ in rows] == ["1", "2"], out
    assert all(int(polls) > 0 for _, polls in rows), out
    assert re.search(r"^2 replicas, wait 0 / 1 replica\(s\), wait 0: [\d.]+x polls/s", out, re.M)


@pytest.mark.slow
@pytest.mark.timeout(240)
def test_daemon_throughput_runs_on_a_cluster_with_shards_and_wait() -> None:
    out = _run("bench/daemon_throughput.py", "--jobs", "30", "--seconds", "1", "--warmup", "1",
               "--concurrency", "16", "--topology", "cluster", "--shards", "3",
               "--wait-replicas", "0,1", "--replicas", "1")  # fmt: skip
    rows = re.findall(r"^\s+1\s+([01])\s+(\d+)\s.*\s([\d.]+)\s+\S+\s+\S+$", out, re.M)
    assert [wait for wait, _, _ in rows] == ["0", "1"], out
    assert all(int(polls) > 0 and float(redis_cpu) >= 0 for _, polls, redis_cpu in rows), out
