"""``poller demo`` as a newcomer runs it: one command, a private Redis, every job to its end."""

from __future__ import annotations

import os
import re
import subprocess
import sys

from poller.demo import sample_jobs
from poller.localredis import LocalRedis

EXPECTED = {
    "deploy web (succeeds)": "SUCCEEDED",
    "upgrade api (fails)": "FAILED",
    "rolling batch (partially fails)": "PARTIALLY_FAILED",
    "canary (rolls back)": "ROLLBACKED",
    "teardown (cancelled)": "CANCELLED",
    "slow to appear (404 first)": "SUCCEEDED",
    "fleet of 120 tasks (paged)": "SUCCEEDED",
    "mistyped job (never found)": "abandoned: not_found",
}


def test_demo_runs_every_sample_job_to_its_end_and_exits_zero() -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("POLLER_")}
    result = subprocess.run(
        [sys.executable, "-m", "poller", "demo", "--scale", "0.3", "--timeout", "90"],
        capture_output=True, text=True, env=env, timeout=150, check=False,
    )  # fmt: skip
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    out = result.stdout
    assert "Started a private redis-server" in out
    assert f"All {len(sample_jobs())} jobs finished" in out
    for label, outcome in EXPECTED.items():
        assert re.search(rf"^  {re.escape(label)}\s+JOB\S+\s+{re.escape(outcome)}\s", out, re.M), (
            label
        )
    terminal_lines = [line for line in out.splitlines() if "(terminal)" in line]
    assert len(terminal_lines) == 7  # every job but the never-found one ends with a terminal event
    assert "JOB abandoned (not_found" in out


def test_ctrl_c_stops_the_demo_and_its_redis_server() -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("POLLER_")}
    proc = subprocess.Popen(
        [sys.executable, "-m", "poller", "demo", "--scale", "5"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env,
    )  # fmt: skip
    assert proc.stdout is not None
    pid = None
    for line in proc.stdout:  # reading blocks until the demo says it has started
        found = re.search(r"private redis-server \(pid (\d+)\)", line)
        if found:
            pid = int(found.group(1))
        if line.startswith("Queued"):
            break
    assert pid is not None
    proc.send_signal(2)  # SIGINT, as Ctrl-C
    rest, _ = proc.communicate(timeout=30)
    assert proc.returncode == 130
    assert "Interrupted" in rest
    try:
        os.kill(pid, 0)
        alive = True
    except ProcessLookupError:
        alive = False
    assert not alive, "the demo's redis-server outlived it"


def test_demo_uses_poller_redis_url_under_its_own_prefix(redis_server: LocalRedis) -> None:
    import redis

    env = {k: v for k, v in os.environ.items() if not k.startswith("POLLER_")}
    env["POLLER_REDIS_URL"] = redis_server.url
    result = subprocess.run(
        [sys.executable, "-m", "poller", "demo", "--scale", "0.3", "--timeout", "90"],
        capture_output=True, text=True, env=env, timeout=150, check=False,
    )  # fmt: skip
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
    assert "Started a private redis-server" not in result.stdout
    found = re.search(r"key prefix (poller-demo-\w+)", result.stdout)
    assert found
    client = redis.Redis.from_url(redis_server.url)
    try:
        assert client.xlen(f"{found.group(1)}:events") > 0  # the events went to that Redis
    finally:
        client.close()
