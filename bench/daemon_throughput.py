"""How many polls per second one daemon replica sustains, and what each poll costs in CPU.

Starts a private redis-server, the emulator (a subprocess) with N long-running jobs, then runs
one `poller run` replica, then two, each for a fixed window, and prints for each phase:
polls/s completed, CPU seconds each daemon process spent per 1,000 polls, and the poll-lag
percentiles (how late polls start after falling due).  Everything shares this machine's cores,
so compare the phases of one run with each other, not absolute figures across machines.

    .venv/bin/python bench/daemon_throughput.py --jobs 2000 --interval 1 --seconds 15
"""

from __future__ import annotations

import argparse
import json
import os
import re
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

from poller.localredis import LocalRedis, free_port

PROJECT = "bench-project"


def scenario(jobs: int, tasks: int, lifetime: float) -> dict[str, object]:
    """Jobs that run for ``lifetime`` seconds, each task changing every few seconds."""
    specs = []
    for j in range(jobs):
        steps = []
        for i in range(1, tasks + 1):
            start = (i - 1) * lifetime / tasks
            steps.append(
                {
                    "task_name": f"T{i}",
                    "task_index": i,
                    "steps": [[start, "RUNNING"], [start + lifetime / tasks, "SUCCEEDED"]],
                }
            )
        specs.append(
            {
                "job_id": f"JOB-bench-{j:05d}",
                "job_type": "PROVISION",
                "job_status": [[0, "RUNNING"], [lifetime, "SUCCEEDED"]],
                "tasks": steps,
            }
        )
    return {"project_id": PROJECT, "jobs": specs}


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def scrape(port: int) -> str:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as resp:
        return str(resp.read().decode())


def _wait_for_metrics(port: int, within: float = 60.0) -> None:
    deadline = time.monotonic() + within
    while True:
        try:
            scrape(port)
            return
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.1)


def total(text: str, name: str) -> float:
    return sum(float(v) for v in re.findall(rf"^{name}(?:{{[^}}]*}})? (\S+)$", text, re.M))


def lag_buckets(text: str) -> list[tuple[float, float]]:
    rows = re.findall(r'^poller_poll_lag_seconds_bucket\{le="([^"]+)"\} (\S+)$', text, re.M)
    return [(float(le), float(n)) for le, n in rows]


def percentile(buckets: list[tuple[float, float]], q: float) -> str:
    count = buckets[-1][1] if buckets else 0
    for le, n in buckets:
        if count and n >= q * count:
            return f"<={le:g}s"
    return "n/a"


def run_phase(
    replicas: int, args: argparse.Namespace, redis_url: str, api: str, prefix: str
) -> dict[str, float | str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("POLLER_")}
    env.update({
        "POLLER_REDIS_URL": redis_url, "POLLER_KEY_PREFIX": prefix, "POLLER_API_ENDPOINT": api,
        "POLLER_PROJECT_ID": PROJECT, "POLLER_AUTH_TOKEN": "sim-token",
        "POLLER_POLL_INTERVAL": str(args.interval), "POLLER_POLL_INTERVAL_MAX": str(args.interval),
        "POLLER_CONCURRENCY": str(args.concurrency), "POLLER_LOG_LEVEL": "warning",
        "POLLER_JOB_TIMEOUT": "3600",
    })  # fmt: skip
    procs = []
    ports = []
    for _ in range(replicas):
        port = free_port()
        ports.append(port)
        procs.append(
            subprocess.Popen(
                [sys.executable, "-m", "poller", "run"],
                env={**env, "POLLER_HTTP_PORT": str(port)},
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )
        )
    try:
        for port in ports:  # a loaded machine may take a while to start a daemon
            _wait_for_metrics(port)
        time.sleep(args.warmup)
        before = [(scrape(p), cpu_seconds(proc.pid)) for p, proc in zip(ports, procs, strict=True)]
        t0 = time.monotonic()
        time.sleep(args.seconds)
        elapsed = time.monotonic() - t0
        after = [(scrape(p), cpu_seconds(proc.pid)) for p, proc in zip(ports, procs, strict=True)]
    finally:
        for proc in procs:
            proc.send_signal(signal.SIGTERM)
        for proc in procs:
            proc.wait(30)
    polls = sum(
        total(a[0], "poller_polls_total") - total(b[0], "poller_polls_total")
        for a, b in zip(after, before, strict=True)
    )
    cpu = sum(a[1] - b[1] for a, b in zip(after, before, strict=True))
    lag: dict[float, float] = {}
    for a, b in zip(after, before, strict=True):
        for (le, n_after), (_, n_before) in zip(lag_buckets(a[0]), lag_buckets(b[0]), strict=True):
            lag[le] = lag.get(le, 0.0) + n_after - n_before
    lag_rows = sorted(lag.items())
    return {
        "replicas": replicas,
        "polls_per_s": polls / elapsed,
        "cpu_s_per_1000_polls": 1000 * cpu / polls if polls else float("nan"),
        "lag_p50": percentile(lag_rows, 0.5),
        "lag_p99": percentile(lag_rows, 0.99),
    }


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--jobs", type=int, default=2000)
    parser.add_argument("--tasks", type=int, default=5)
    parser.add_argument("--interval", type=float, default=1.0, help="fixed poll interval (s)")
    parser.add_argument("--concurrency", type=int, default=256)
    parser.add_argument("--seconds", type=float, default=15.0, help="measured window per phase")
    parser.add_argument("--warmup", type=float, default=5.0)
    args = parser.parse_args()
    lifetime = 3 * (args.warmup + args.seconds) + 60
    with LocalRedis() as redis, tempfile.TemporaryDirectory() as tmp:
        scenario_file = Path(tmp) / "bench.json"
        scenario_file.write_text(json.dumps(scenario(args.jobs, args.tasks, lifetime)))
        sim_port = free_port()
        sim = subprocess.Popen([sys.executable, "-m", "poller.sim", "--port", str(sim_port),
                                "--scenario", str(scenario_file)],
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)  # fmt: skip
        try:
            deadline = time.monotonic() + 30
            while True:
                try:
                    urllib.request.urlopen(f"http://127.0.0.1:{sim_port}/_sim/stats", timeout=1)
                    break
                except OSError:
                    if time.monotonic() > deadline:
                        raise
                    time.sleep(0.1)
            import redis as redis_client

            api = f"http://127.0.0.1:{sim_port}"
            results = []
            for replicas in (1, 2):
                prefix = f"bench{replicas}"
                client = redis_client.Redis.from_url(redis.url)
                client.lpush(f"{prefix}:jobs", *[f"JOB-bench-{j:05d}" for j in range(args.jobs)])
                client.close()
                results.append(run_phase(replicas, args, redis.url, api, prefix))
        finally:
            sim.send_signal(signal.SIGTERM)
            sim.wait(30)
    demand = args.jobs / args.interval
    print(
        f"{args.jobs} jobs x {args.tasks} tasks, fixed interval {args.interval:g}s "
        f"=> demand {demand:.0f} polls/s; {os.cpu_count()} CPUs shared by redis, emulator, daemons"
    )
    print(
        f"{'replicas':>8} {'polls/s':>9} {'of demand':>9} {'CPU s/1000 polls':>17} "
        f"{'lag p50':>8} {'lag p99':>8}"
    )
    for r in results:
        print(
            f"{r['replicas']:>8} {r['polls_per_s']:>9.0f} {float(r['polls_per_s']) / demand:>9.0%} "
            f"{r['cpu_s_per_1000_polls']:>17.3f} {r['lag_p50']:>8} {r['lag_p99']:>8}"
        )
    one, two = results
    print(
        "two replicas / one replica throughput: "
        f"{float(two['polls_per_s']) / float(one['polls_per_s']):.2f}x"
    )


if __name__ == "__main__":
    main()
