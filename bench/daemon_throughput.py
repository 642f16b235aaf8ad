"""How many polls per second daemon replicas sustain, what each poll costs in CPU (the
daemons' and Redis's), and how evenly the replicas share the work.

Starts a private Redis (one redis-server, or a local 3-primary + 3-replica cluster with
``--topology cluster``), the emulator (a subprocess) with N long-running jobs, then for each
replica count (``--replicas 1,2,3``) and each ``--wait-replicas`` value runs that many
`poller run` replicas for a fixed window and prints: polls/s completed, each replica's share
of them, daemon CPU seconds per 1,000 polls (and polls per daemon CPU-second), Redis CPU
seconds per 1,000 polls (summed over the primaries of a cluster), and the poll-lag
percentiles.  Everything shares this machine's cores, so compare the phases of one run with
each other, not absolute figures across machines.

    .venv/bin/python bench/daemon_throughput.py --jobs 2000 --interval 1 --seconds 15
    .venv/bin/python bench/daemon_throughput.py --replicas 1,2,3
    .venv/bin/python bench/daemon_throughput.py --topology cluster --shards 3 --replicas 3 \
        --wait-replicas 0,1
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

from poller.localredis import LocalCluster, LocalRedis, free_port

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
    replicas: int,
    args: argparse.Namespace,
    redis_url: str,
    api: str,
    prefix: str,
    redis_pids: list[int],
    wait_replicas: int = 0,
) -> dict[str, float | str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("POLLER_")}
    env.update({
        "POLLER_REDIS_URL": redis_url, "POLLER_KEY_PREFIX": prefix, "POLLER_API_ENDPOINT": api,
        "POLLER_PROJECT_ID": PROJECT, "POLLER_AUTH_TOKEN": "sim-token",
        "POLLER_POLL_INTERVAL": str(args.interval), "POLLER_POLL_INTERVAL_MAX": str(args.interval),
        "POLLER_CONCURRENCY": str(args.concurrency), "POLLER_LOG_LEVEL": "warning",
        "POLLER_JOB_TIMEOUT": "3600", "POLLER_SHARDS": str(args.shards),
        "POLLER_REDIS_WAIT_REPLICAS": str(wait_replicas),
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
        redis_before = sum(cpu_seconds(pid) for pid in redis_pids)
        t0 = time.monotonic()
        time.sleep(args.seconds)
        elapsed = time.monotonic() - t0
        after = [(scrape(p), cpu_seconds(proc.pid)) for p, proc in zip(ports, procs, strict=True)]
        redis_cpu = sum(cpu_seconds(pid) for pid in redis_pids) - redis_before
    finally:
        for proc in procs:
            proc.send_signal(signal.SIGTERM)
        for proc in procs:
            proc.wait(30)
    each = [
        total(a[0], "poller_polls_total") - total(b[0], "poller_polls_total")
        for a, b in zip(after, before, strict=True)
    ]
    polls = sum(each)
    cpu = sum(a[1] - b[1] for a, b in zip(after, before, strict=True))
    lag: dict[float, float] = {}
    for a, b in zip(after, before, strict=True):
        for (le, n_after), (_, n_before) in zip(lag_buckets(a[0]), lag_buckets(b[0]), strict=True):
            lag[le] = lag.get(le, 0.0) + n_after - n_before
    lag_rows = sorted(lag.items())
    return {
        "replicas": replicas,
        "wait": wait_replicas,
        "polls_per_s": polls / elapsed,
        "shares": "/".join(f"{n / polls:.0%}" for n in each) if polls else "-",
        "cpu_s_per_1000_polls": 1000 * cpu / polls if polls else float("nan"),
        "polls_per_cpu_s": polls / cpu if cpu else float("nan"),
        "redis_cpu_s_per_1000_polls": 1000 * redis_cpu / polls if polls else float("nan"),
        "lag_p50": percentile(lag_rows, 0.5),
        "lag_p99": percentile(lag_rows, 0.99),
    }


def redis_pids(topology: LocalRedis | LocalCluster) -> list[int]:
    """The processes whose CPU is Redis's cost: the server, or a cluster's primaries."""
    servers = topology.primaries() if isinstance(topology, LocalCluster) else [topology]
    return [s.pid for s in servers if s.pid is not None]


def enqueue(topology: LocalRedis | LocalCluster, prefix: str, ids: list[str]) -> None:
    from redis import Redis
    from redis.cluster import ClusterNode, RedisCluster

    client: Redis | RedisCluster
    if isinstance(topology, LocalCluster):
        port = topology.primaries()[0].port
        client = RedisCluster(startup_nodes=[ClusterNode("127.0.0.1", port)])
    else:
        client = Redis.from_url(topology.url)
    client.lpush(f"{prefix}:jobs", *ids)
    client.close()


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
    parser.add_argument("--replicas", default="1,2", help="replica counts, one phase each")
    parser.add_argument("--topology", choices=("single", "cluster"), default="single")
    parser.add_argument("--shards", type=int, default=1, help="POLLER_SHARDS")
    parser.add_argument("--wait-replicas", default="0", help="POLLER_REDIS_WAIT_REPLICAS values")
    args = parser.parse_args()
    counts = [int(n) for n in args.replicas.split(",")]
    waits = [int(n) for n in args.wait_replicas.split(",")]
    lifetime = 3 * (args.warmup + args.seconds) + 60
    topology: LocalRedis | LocalCluster = (
        LocalCluster(primaries=3, replicas_per_primary=1)
        if args.topology == "cluster"
        else LocalRedis()
    )
    with topology as redis, tempfile.TemporaryDirectory() as tmp:
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
            api = f"http://127.0.0.1:{sim_port}"
            results = []
            for replicas in counts:
                for wait in waits:
                    prefix = f"{{bench{replicas}w{wait}}}"
                    enqueue(redis, prefix, [f"JOB-bench-{j:05d}" for j in range(args.jobs)])
                    results.append(run_phase(replicas, args, redis.url, api, prefix,
                                             redis_pids(redis), wait))  # fmt: skip
        finally:
            sim.send_signal(signal.SIGTERM)
            sim.wait(30)
    demand = args.jobs / args.interval
    print(
        f"{args.jobs} jobs x {args.tasks} tasks, fixed interval {args.interval:g}s "
        f"=> demand {demand:.0f} polls/s; Redis: {args.topology}, {args.shards} shard(s); "
        f"{os.cpu_count()} CPUs shared by redis, emulator, daemons"
    )
    print(
        f"{'replicas':>8} {'wait':>4} {'polls/s':>9} {'of demand':>9} {'shares':>14} "
        f"{'daemon CPU s/1k':>15} {'polls/CPU-s':>11} {'redis CPU s/1k':>14} "
        f"{'lag p50':>8} {'lag p99':>8}"
    )
    for r in results:
        print(
            f"{r['replicas']:>8} {r['wait']:>4} {r['polls_per_s']:>9.0f} "
            f"{float(r['polls_per_s']) / demand:>9.0%} {r['shares']:>14} "
            f"{r['cpu_s_per_1000_polls']:>15.3f} {r['polls_per_cpu_s']:>11.0f} "
            f"{r['redis_cpu_s_per_1000_polls']:>14.3f} {r['lag_p50']:>8} {r['lag_p99']:>8}"
        )
    base = results[0]
    for r in results[1:]:
        print(
            f"{r['replicas']} replicas, wait {r['wait']} / {base['replicas']} replica(s), wait "
            f"{base['wait']}: {float(r['polls_per_s']) / float(base['polls_per_s']):.2f}x polls/s, "
            f"{float(r['polls_per_cpu_s']) / float(base['polls_per_cpu_s']):.2f}x polls/CPU-s"
        )


if __name__ == "__main__":
    main()
