"""Scale targets of one replica, measured in one run: intake rate, memory, poll lateness, and
the delay from a status change in the emulator to its event in the stream.

Every section starts its own private redis-server (:class:`poller.localredis.LocalRedis`), the
emulator as a subprocess (``python -m poller.sim``, jobs from a scenario file written here, or
created through its admin API) and one daemon (``python -m poller run`` with ``POLLER_*``
settings), measures, and stops them by PID before the next section starts.  With two CPUs or
more, redis-server and the emulator are pinned to CPU 0 and the daemon to CPU 1 (``--no-pin``
leaves scheduling alone).  Every job of every section exists in the emulator and stays RUNNING
(or changes at known times), so no poll is a 404.

- **intake**: a daemon already polling ``--intake-background`` jobs (3 tasks, fixed interval
  ``--intake-interval``) gets ``--intake-jobs`` job IDs (one-task jobs, RUNNING for a day) in one
  ``LPUSH`` onto ``{prefix}:jobs``; measured: the time from sending that ``LPUSH`` until the
  schedule ``{prefix}:schedule`` holds every one of them (``ZCARD``, sampled every 10 ms).
  admitted/s = jobs / that time.  Target >= 5,000/s.  Admitted jobs are due at once, so the
  replica polls all the while (their first polls and the background's).  A diagnostic second
  measurement (``--no-intake-idle`` skips it) queues the same IDs into a fresh Redis and daemon
  whose polls are held back by ``POLLER_RATE_LIMIT=1``: the intake path on its own.
- **memory**: ``--memory-jobs`` jobs of ``--memory-tasks`` tasks (RUNNING for a day) in the
  emulator; the daemon polls every ``--memory-interval`` s (max twice that), so that after its
  first poll a job is idle for the rest of the section.  ``--memory-small`` jobs are queued
  first, then the rest; after each step, once every queued job's first poll is published
  (``XLEN {prefix}:events`` = jobs x (tasks + 1)) and 2 s later, the daemon's ``VmRSS`` is read
  (target: < 150 MB at the full count, flat).  At the full count, for a random sample of
  ``--memory-sample`` jobs, ``MEMORY USAGE ... SAMPLES 0`` of the job hash
  ``{prefix}:job:{project}:{job_id}`` (target <= 2 KB), of the per-job stream
  ``{prefix}:events:{job_id}`` and of the job-ID record ``{prefix}:jobid:{job_id}``; the global
  stream's and the schedule's ``MEMORY USAGE`` divided by the jobs; and ``INFO memory``
  ``used_memory`` after minus before any job was queued, divided by the jobs.  A diagnostic
  row copies 100 sampled job hashes after ``CONFIG SET hash-max-listpack-value 4096`` on the
  private Redis (so the snapshot field no longer forces the hashtable encoding) and gives their
  mean ``MEMORY USAGE``.
- **lateness**: ``--lateness-jobs`` jobs (3 tasks, unchanged) polled at a fixed
  ``--lateness-interval`` (1,000 jobs at 1 s: 1,000 polls/s offered to the replica); after every
  job's first poll and ``--lateness-warmup`` s, the daemon's ``poller_poll_lag_seconds``
  histogram is scraped before and after a window of ``--lateness-seconds`` and diffed.  p50 and
  p99 are given as the bucket bound they fall under (buckets 10, 50, 100, 250 ms, ...) and
  linearly interpolated inside that bucket (as PromQL's ``histogram_quantile`` does).  Target
  p99 < 100 ms: met when the p99 bucket's bound is below 100 ms (the 50 ms bucket); when p99
  falls in the (50, 100] ms bucket the buckets cannot tell < 100 ms, and the table says so.
- **delay**: ``--delay-jobs`` jobs created through the admin API (``POST /_sim/jobs``) after
  the daemon is up, queued at once, polled at a fixed ``--delay-interval``.  Each has
  ``--delay-tasks`` tasks that go SUBMITTED -> RUNNING -> SUCCEEDED at random offsets within
  ``--delay-seconds`` after a lead of ``--delay-lead`` s (so the job's first poll comes before
  its first change; two changes of one task are at least 3 intervals apart, so none is
  skipped), and the job goes SUCCEEDED after them.  The emulator's job clock starts at
  creation: a change is scheduled at the job's ``created_at`` (``GET /_sim/jobs``, ms) plus the
  step's offset.  Its delay is the millisecond part of its event's ``XADD`` ID in
  ``{prefix}:events:{job_id}`` (Redis's clock when it was appended; same machine, same clock)
  minus that time.  First-sight events (empty ``from_status``) are not changes and are left
  out.  Expected: p50 about half an interval plus a poll; p99 at most one interval with its
  10 % jitter plus 100 ms (the lateness target).

Where a figure depends on CPU (intake, lateness, delay) a row says who used the CPUs over its
window: the daemon (and how long its busiest thread was runnable but waiting for a CPU,
``/proc/PID/task/TID/schedstat``), the emulator, redis-server, and every other process of the
machine (``/proc/stat`` busy time minus ours): other load on a shared machine shows there.
Figures come from one run: compare them with their targets, not across machines.  ``--smoke``
runs every section at a tiny size (about 25 s; figures meaningless).

    .venv/bin/python bench/scale.py
    .venv/bin/python bench/scale.py --only intake,lateness --json /tmp/scale.json
    .venv/bin/python bench/scale.py --smoke
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import os
import platform
import random
import re
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from datetime import datetime
from pathlib import Path
from typing import IO, Final

import redis
from compare import (
    BenchError,
    Emulator,
    log_tail,
    pin,
    stop,
    thread_cpu_waits,
    tree_cpu_seconds,
)
from daemon_throughput import cpu_seconds, lag_buckets, scrape, total

from poller.localredis import LocalRedis, RedisUnavailable, free_port
from poller.store import Keys

PROJECT: Final = "scale-project"
TOKEN: Final = "scale-token-0123456789"  # noqa: S105 (the emulator's, local)
PREFIX: Final = "scale"
SECTIONS: Final = ("intake", "memory", "lateness", "delay")
ROOT: Final = Path(__file__).resolve().parents[1]
DAY: Final = 86400.0
STAGES: Final = (
    "CONTEXT_PREPARE", "IMAGE_PULL", "CONFIG_RENDER", "VOLUME_MOUNT", "INSTANCE_CREATE",
    "UPGRADE", "HEALTH_CHECK", "LB_BIND", "DNS_UPDATE", "SCALE", "VERIFY", "CLEANUP",
)  # fmt: skip
INTAKE_TARGET: Final = 5000.0  # admitted/s
RSS_TARGET: Final = 150e6  # bytes (150 MB, decimal) at --memory-jobs
HASH_TARGET: Final = 2000  # bytes (2 KB, decimal) per job hash
LAG_TARGET: Final = 0.1  # s, p99
TICK: Final = os.sysconf("SC_CLK_TCK")
CONTENDED: Final = "CONTENDED"
LISTPACK_VALUE: Final = 4096  # bytes; the memory diagnostic's hash-max-listpack-value


# --- results ---------------------------------------------------------------------------------


@dataclass(slots=True)
class Row:
    """One line of the table; ``number`` (in ``unit``) is the figure for ``--json``."""

    section: str
    figure: str
    value: str
    target: str = ""
    met: str = ""  # "yes", "no", "" (no target), or a sentence
    number: float | None = None
    unit: str = ""


def yes(ok: bool) -> str:
    return "yes" if ok else "no"


def table(rows: Sequence[Row]) -> str:
    head = ("section", "figure", "value", "target", "met")
    out = ["| " + " | ".join(head) + " |", "|" + "|".join("---" for _ in head) + "|"]
    for r in rows:
        cells = (r.section, r.figure, r.value, r.target or "—", r.met or "—")
        out.append("| " + " | ".join(cells) + " |")
    return "\n".join(out)


# --- processes -------------------------------------------------------------------------------


def vm_status(pid: int) -> dict[str, int]:
    """``VmRSS``, ``VmHWM`` … of ``pid`` in bytes."""
    text = Path(f"/proc/{pid}/status").read_text()
    return {k: int(v) * 1024 for k, v in re.findall(r"^(Vm\w+):\s+(\d+) kB", text, re.M)}


def wait_for(
    what: str,
    done: Callable[[], bool],
    timeout: float,
    alive: Callable[[], None],
    period: float = 0.05,
) -> float:
    """Seconds until ``done()``; ``alive()`` raises if a process died; BenchError on timeout."""
    start = time.monotonic()
    while not done():
        alive()
        if time.monotonic() - start > timeout:
            raise BenchError(f"{what}: not within {timeout:g} s")
        time.sleep(period)
    return time.monotonic() - start


class Daemon:
    """``python -m poller run`` in a subprocess with its ``/metrics`` on a free port."""

    def __init__(
        self,
        workdir: Path,
        name: str,
        *,
        redis_url: str,
        api: str,
        settings: dict[str, str],
        pin_cpu: bool,
        client: redis.Redis,
    ) -> None:
        self.port = free_port()
        self.client = client
        env = {k: v for k, v in os.environ.items() if not k.startswith("POLLER_")}
        env.update({
            "POLLER_REDIS_URL": redis_url, "POLLER_KEY_PREFIX": PREFIX, "POLLER_API_ENDPOINT": api,
            "POLLER_PROJECT_ID": PROJECT, "POLLER_AUTH_TOKEN": TOKEN,
            "POLLER_LOG_LEVEL": "warning", "POLLER_LOG_FORMAT": "json",
            "POLLER_HTTP_PORT": str(self.port), "POLLER_HTTP_HOST": "127.0.0.1",
            "POLLER_SHUTDOWN_GRACE": "3", **settings,
        })  # fmt: skip
        self.log = workdir / f"{name}-daemon.log"
        self._log_file = self.log.open("w")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "poller", "run"],
            env=env,
            cwd=ROOT,
            stdout=self._log_file,
            stderr=self._log_file,
        )
        pin(self.proc.pid, 1, pin_cpu)
        try:
            wait_for("the daemon's /metrics", self._answers, 30, self.alive)
        except BaseException:
            self.close()
            raise

    def _answers(self) -> bool:
        try:
            self.metrics()
        except OSError:
            return False
        return True

    def metrics(self) -> str:
        return scrape(self.port)

    def alive(self) -> None:
        if self.proc.poll() is not None:
            raise BenchError(f"the daemon exited ({self.proc.returncode}):\n{log_tail(self.log)}")
        if dead := self.client.lrange(Keys(PREFIX).dead, 0, 0):
            raise BenchError(f"the daemon dead-lettered {dead[0][:300]!r}:\n{log_tail(self.log)}")

    def close(self) -> None:
        stop(self.proc, grace=20)
        self._log_file.close()


class Setup:
    """redis-server, emulator and daemon of one section; closed in reverse order."""

    def __init__(
        self, stack: contextlib.ExitStack, workdir: Path, args: argparse.Namespace, name: str
    ) -> None:
        self.stack, self.workdir, self.args, self.name = stack, workdir, args, name
        self.server = stack.enter_context(LocalRedis())
        assert self.server.proc is not None
        pin(self.server.proc.pid, 0, args.pin)
        self.redis = redis.Redis.from_url(self.server.url)
        stack.callback(self.redis.close)
        self.keys = Keys(PREFIX)
        self.sim: Emulator | None = None
        self.poller: Daemon | None = None

    def emulator(self, scenario: Path | None, jobs: int) -> Emulator:
        options = ["--project-id", PROJECT, "--token", TOKEN]
        if scenario is not None:
            options += ["--scenario", str(scenario)]
        self.sim = Emulator(
            self.workdir / f"{self.name}-emulator.log",
            options,
            pin_cpu=self.args.pin,
            start_within=30 + jobs / 2000,  # 50,000 jobs load in about 15 s
            timeout=60,
        )
        self.stack.callback(self.sim.close)
        return self.sim

    def daemon(self, api: str, settings: dict[str, str]) -> Daemon:
        self.poller = Daemon(
            self.workdir,
            self.name,
            redis_url=self.server.url,
            api=api,
            settings=settings,
            pin_cpu=self.args.pin,
            client=self.redis,
        )
        self.stack.callback(self.poller.close)
        return self.poller

    def events(self) -> int:
        return int(self.redis.xlen(self.keys.events))

    def used_memory(self) -> int:
        return int(self.redis.info("memory")["used_memory"])

    def usage(self) -> Usage:
        """CPU use so far of this section's processes and of the whole machine."""
        assert self.server.proc is not None
        pids = {"redis": self.server.proc.pid}
        if self.sim is not None:
            pids["emulator"] = self.sim.proc.pid
        waits = {}
        if self.poller is not None:
            pids["daemon"] = self.poller.proc.pid
            waits = thread_cpu_waits(self.poller.proc.pid)
        cpu = {name: tree_cpu_seconds(pid) for name, pid in pids.items()}
        cpu["bench"] = cpu_seconds(os.getpid())  # this process alone: the others are its children
        return Usage(time.monotonic(), machine_busy(), cpu, waits)


@dataclass(slots=True)
class Usage:
    at: float
    machine: float  # CPU seconds every process of the machine used
    cpu: dict[str, float]  # CPU seconds of ours, by role
    waits: dict[int, float]  # the daemon's threads: seconds runnable but waiting for a CPU


def machine_busy() -> float:
    """CPU seconds the whole machine has been busy (``/proc/stat``: all but idle, iowait)."""
    fields = Path("/proc/stat").read_text().splitlines()[0].split()[1:]
    user, nice, system, _idle, _iowait, irq, softirq, steal = (int(v) for v in fields[:8])
    return (user + nice + system + irq + softirq + steal) / TICK


def contention(before: Usage, after: Usage) -> str:
    """Who used the CPUs over a window: the daemon (and how long it waited for a CPU), the
    emulator, redis-server, and every other process of the machine (other people's load).
    Ends with a warning when other load took a tenth of the window from the daemon, or half a
    core."""
    seconds = after.at - before.at
    share = {k: (after.cpu[k] - before.cpu.get(k, 0.0)) / seconds for k in after.cpu}
    others = max(0.0, (after.machine - before.machine) / seconds - sum(share.values()))
    waits = [n - before.waits.get(tid, 0.0) for tid, n in after.waits.items()]
    waited = max(waits, default=0.0) / seconds
    parts = []
    if "daemon" in share:
        parts.append(f"daemon {share['daemon']:.0%} of a core (waited for a CPU {waited:.0%})")
    parts += [f"{k} {share[k]:.0%}" for k in ("emulator", "redis") if k in share]
    parts.append(f"other processes {others:.0%} of a core ({os.cpu_count()} CPUs)")
    if waited > 0.1 or others > 0.5:
        parts.append(f"{CONTENDED}: other load; this section's speed figures understate")
    return "; ".join(parts)


# --- jobs ------------------------------------------------------------------------------------


def task_name(index: int) -> str:
    """Names like the generator's and the real API's: ``CCE_IMAGE_PULL_01``."""
    return f"CCE_{STAGES[(index - 1) % len(STAGES)]}_{(index - 1) // len(STAGES) + 1:02d}"


def steady_job(job_id: str, tasks: int) -> dict[str, object]:
    """RUNNING for a day; the first task has succeeded, the second runs, the rest wait."""
    states = ["SUCCEEDED", "RUNNING"]
    return {
        "job_id": job_id,
        "job_type": "PROVISION",
        "job_status": [[0, "RUNNING"], [DAY, "SUCCEEDED"]],
        "tasks": [
            {
                "task_index": i,
                "task_name": task_name(i),
                "steps": [[0, states[i - 1] if i <= len(states) else "SUBMITTED"]],
            }
            for i in range(1, tasks + 1)
        ],
    }


def write_scenario(path: Path, jobs: list[dict[str, object]]) -> Path:
    path.write_text(json.dumps({"jobs": jobs}, separators=(",", ":")))
    return path


def fixed_interval(seconds: float, maximum: float | None = None) -> dict[str, str]:
    return {
        "POLLER_POLL_INTERVAL": f"{seconds:g}",
        "POLLER_POLL_INTERVAL_MAX": f"{seconds if maximum is None else maximum:g}",
    }


def push(client: redis.Redis, queue: str, ids: Sequence[str]) -> None:
    """One ``LPUSH`` per 10,000 IDs, all in one pipeline (one round trip)."""
    with client.pipeline(transaction=False) as pipe:
        for start in range(0, len(ids), 10_000):
            pipe.lpush(queue, *ids[start : start + 10_000])
        pipe.execute()


# --- intake ----------------------------------------------------------------------------------


def run_intake(args: argparse.Namespace, workdir: Path) -> list[Row]:
    background = [f"JOB-scale-bg-{n:05d}" for n in range(args.intake_background)]
    queued = [f"JOB-scale-in-{n:06d}" for n in range(args.intake_jobs)]
    scenario = write_scenario(
        workdir / "intake.json",
        [steady_job(j, 3) for j in background] + [steady_job(j, 1) for j in queued],
    )
    interval = fixed_interval(args.intake_interval)
    with contextlib.ExitStack() as stack:
        setup = Setup(stack, workdir, args, "intake")
        emulator = setup.emulator(scenario, len(background) + len(queued))
        rows = _intake_phase(setup, interval, background, queued, args.intake_warmup)
        if args.intake_idle:
            # The same intake with polling held back (a global rate limit of one request/s):
            # what the intake path costs by itself, without the polls it competes with.
            with contextlib.ExitStack() as inner:
                idle = Setup(inner, workdir, args, "intake-idle")
                idle.sim = emulator
                rate, elapsed, _, usage = _intake_window(
                    idle, {**interval, "POLLER_RATE_LIMIT": "1"}, [], queued, 0.0
                )[:4]
            rows.append(
                Row(
                    "intake",
                    "diagnostic: the same, polls held back (POLLER_RATE_LIMIT=1, fresh Redis)",
                    f"{rate:,.0f}/s ({elapsed:.2f} s); CPU: {usage}",
                    number=rate,
                    unit="jobs/s",
                )
            )
    return rows


def _intake_phase(
    setup: Setup,
    settings: dict[str, str],
    background: list[str],
    queued: list[str],
    warmup: float,
) -> list[Row]:
    rate, elapsed, polls, usage, admitted = _intake_window(
        setup, settings, background, queued, warmup
    )
    load = (
        f"{len(background):,} jobs every {settings['POLLER_POLL_INTERVAL']} s"
        if background
        else "no other jobs"
    )
    return [
        Row(
            "intake",
            f"admitted/s: {len(queued):,} IDs in one LPUSH to a replica polling {load}",
            f"{rate:,.0f}/s ({elapsed:.2f} s)",
            f"≥ {INTAKE_TARGET:,.0f}/s",
            yes(rate >= INTAKE_TARGET),
            rate,
            "jobs/s",
        ),
        Row(
            "intake",
            "meanwhile: polls completed (background and the admitted jobs' first polls), CPU",
            f"{polls:,.0f} polls/s; {usage}",
            number=polls,
            unit="polls/s",
        ),
        Row(
            "intake",
            "admitted by the daemon's count (poller_intake_messages_total)",
            f"{admitted:,.0f} of {len(queued):,}",
            number=admitted,
            unit="jobs",
        ),
    ]


def _intake_window(
    setup: Setup,
    settings: dict[str, str],
    background: list[str],
    queued: list[str],
    warmup: float,
) -> tuple[float, float, float, str, float]:
    """(admitted/s, seconds, polls/s meanwhile, CPU use meanwhile, admitted count)."""
    assert setup.sim is not None
    daemon = setup.daemon(setup.sim.url, settings)
    if background:
        push(setup.redis, setup.keys.intake, background)
        wait_for(
            "first polls of the background jobs",
            lambda: setup.events() >= 4 * len(background),
            120,
            daemon.alive,
        )
        time.sleep(warmup)
    before, usage0 = daemon.metrics(), setup.usage()
    goal = int(setup.redis.zcard(setup.keys.schedule)) + len(queued)
    start = time.monotonic()
    push(setup.redis, setup.keys.intake, queued)
    wait_for(
        "admission of the queued jobs",
        lambda: int(setup.redis.zcard(setup.keys.schedule)) >= goal,
        60 + len(queued) / 200,
        daemon.alive,
        period=0.01,
    )
    elapsed = time.monotonic() - start  # from sending the LPUSH
    usage1, after = setup.usage(), daemon.metrics()
    setup.sim.alive()
    daemon.close()  # before anything else is measured on this machine
    polls = total(after, "poller_polls_total") - total(before, "poller_polls_total")
    admitted = _intake_admitted(after) - _intake_admitted(before)
    return len(queued) / elapsed, elapsed, polls / elapsed, contention(usage0, usage1), admitted


def _intake_admitted(metrics: str) -> float:
    pattern = r'^poller_intake_messages_total\{[^}]*result="admitted"[^}]*\} (\S+)$'
    return sum(float(n) for n in re.findall(pattern, metrics, re.M))


# --- memory ----------------------------------------------------------------------------------


def run_memory(args: argparse.Namespace, workdir: Path) -> list[Row]:
    jobs, small, tasks = args.memory_jobs, args.memory_small, args.memory_tasks
    ids = [f"JOB-scale-mem-{n:06d}" for n in range(jobs)]
    scenario = write_scenario(workdir / "memory.json", [steady_job(j, tasks) for j in ids])
    per_job_events = tasks + 1  # first sight: every task, then the job
    settings = fixed_interval(args.memory_interval, 2 * args.memory_interval)
    # the global stream must hold every first-sight event (how the section sees them done)
    settings["POLLER_EVENTS_MAXLEN"] = str(max(1_000_000, 2 * jobs * per_job_events))
    rss: dict[int, dict[str, int]] = {}
    used: dict[int, int] = {}
    with contextlib.ExitStack() as stack:
        setup = Setup(stack, workdir, args, "memory")
        emulator = setup.emulator(scenario, jobs)
        daemon = setup.daemon(emulator.url, settings)
        time.sleep(1)
        rss[0], used[0] = vm_status(daemon.proc.pid), setup.used_memory()
        done = 0
        for count in dict.fromkeys((small, jobs)):
            push(setup.redis, setup.keys.intake, ids[done:count])
            wait_for(
                f"first polls of {count:,} jobs",
                lambda n=count: setup.events() >= n * per_job_events,
                120 + (count - done) / 100,
                daemon.alive,
                period=0.25,
            )
            time.sleep(2)
            emulator.alive()
            rss[count], used[count] = vm_status(daemon.proc.pid), setup.used_memory()
            done = count
        sample = random.Random(1).sample(ids, min(args.memory_sample, jobs))
        with setup.redis.pipeline(transaction=False) as pipe:
            for job_id in sample:
                pipe.memory_usage(setup.keys.job(f"{PROJECT}:{job_id}"), samples=0)
                pipe.memory_usage(setup.keys.job_events(job_id), samples=0)
                pipe.memory_usage(setup.keys.jobref(job_id), samples=0)
                pipe.hget(setup.keys.job(f"{PROJECT}:{job_id}"), "snap")
            replies = pipe.execute()
        encoding = setup.redis.object("encoding", setup.keys.job(f"{PROJECT}:{ids[0]}"))
        stream = int(setup.redis.memory_usage(setup.keys.events, samples=0) or 0)
        schedule = int(setup.redis.memory_usage(setup.keys.schedule, samples=0) or 0)
        tracked = int(setup.redis.zcard(setup.keys.schedule))
        listpack = _listpack_copies(setup, [f"{PROJECT}:{j}" for j in sample[:100]])
    hashes, streams, refs, snaps = (replies[i::4] for i in range(4))
    if any(not s for s in snaps) or tracked != jobs:
        raise BenchError(f"not every sampled job was polled once and tracked ({tracked:,})")
    avg_hash = sum(hashes) / len(hashes)
    avg_stream = sum(streams) / len(streams)
    avg_ref = sum(refs) / len(refs)
    big, little = rss[jobs]["VmRSS"], rss[small]["VmRSS"]
    growth = (big - little) / (jobs - small) * 1000 if jobs > small else 0.0
    enc = encoding.decode() if isinstance(encoding, bytes) else str(encoding)
    mb = 1e6
    return [
        Row(
            "memory",
            "daemon RSS, no job tracked",
            f"{rss[0]['VmRSS'] / mb:.1f} MB",
            number=rss[0]["VmRSS"] / mb,
            unit="MB",
        ),
        Row(
            "memory",
            f"daemon RSS, {small:,} tracked",
            f"{little / mb:.1f} MB",
            number=little / mb,
            unit="MB",
        ),
        Row(
            "memory",
            f"daemon RSS, {jobs:,} tracked (peak VmHWM {rss[jobs]['VmHWM'] / mb:.1f} MB)",
            f"{big / mb:.1f} MB ({big / little:.2f}x of {small:,}; "
            f"{growth / mb * 1e3:+.1f} kB per 1,000 jobs)",
            f"< {RSS_TARGET / mb:.0f} MB, flat",
            yes(big < RSS_TARGET),
            big / mb,
            "MB",
        ),
        Row(
            "memory",
            f"job hash, {tasks}-task job after its first poll (MEMORY USAGE, mean "
            f"of {len(hashes):,}; encoding {enc})",
            f"{avg_hash:,.0f} B",
            f"≤ 2 KB ({HASH_TARGET:,} B)",
            yes(avg_hash <= HASH_TARGET),
            avg_hash,
            "B",
        ),
        Row(
            "memory",
            f"diagnostic: the same hashes copied with hash-max-listpack-value {LISTPACK_VALUE} "
            f"(listpack: the long snap field no longer forces a hashtable; mean of "
            f"{len(listpack):,})",
            f"{sum(listpack) / len(listpack):,.0f} B",
            number=sum(listpack) / len(listpack),
            unit="B",
        ),
        Row(
            "memory",
            f"per-job stream ({per_job_events} first-sight events; mean of {len(streams):,})",
            f"{avg_stream:,.0f} B",
            number=avg_stream,
            unit="B",
        ),
        Row(
            "memory",
            "job-ID record (seq memory; mean)",
            f"{avg_ref:,.0f} B",
            number=avg_ref,
            unit="B",
        ),
        Row(
            "memory",
            f"global stream share ({stream / mb:.1f} MB / {jobs:,} jobs)",
            f"{stream / jobs:,.0f} B",
            number=stream / jobs,
            unit="B",
        ),
        Row(
            "memory",
            f"schedule ZSET share ({schedule / mb:.1f} MB / {jobs:,} jobs)",
            f"{schedule / jobs:,.0f} B",
            number=schedule / jobs,
            unit="B",
        ),
        Row(
            "memory",
            "INFO used_memory delta / jobs (0 -> all tracked, first polls done)",
            f"{(used[jobs] - used[0]) / jobs:,.0f} B ({(used[jobs] - used[0]) / mb:.1f} MB)",
            number=(used[jobs] - used[0]) / jobs,
            unit="B",
        ),
    ]


def _listpack_copies(setup: Setup, members: list[str]) -> list[int]:
    """``MEMORY USAGE`` of copies of these job hashes made after raising this private Redis's
    ``hash-max-listpack-value`` (default 64 bytes, less than a snapshot) so they stay listpacks;
    the copies are deleted again."""
    setup.redis.config_set("hash-max-listpack-value", LISTPACK_VALUE)
    sizes = []
    for n, member in enumerate(members):
        copy = f"{PREFIX}:bench-copy:{n}"
        setup.redis.hset(copy, mapping=setup.redis.hgetall(setup.keys.job(member)))
        sizes.append(int(setup.redis.memory_usage(copy, samples=0) or 0))
        if (encoding := setup.redis.object("encoding", copy)) != b"listpack":
            raise BenchError(f"a copied job hash is {encoding!r}, not a listpack")
        setup.redis.delete(copy)
    return sizes


# --- lateness --------------------------------------------------------------------------------


def quantile(buckets: list[tuple[float, float]], q: float) -> tuple[float, float]:
    """(bucket bound, linear interpolation inside the bucket) of quantile ``q`` of a
    cumulative histogram; ``inf`` bound when it lies past the last finite bucket."""
    count = buckets[-1][1] if buckets else 0.0
    if not count:
        return math.nan, math.nan
    rank = q * count
    lower, below = 0.0, 0.0
    for le, n in buckets:
        if n >= rank:
            if math.isinf(le):
                return le, lower
            inside = n - below
            return le, lower + (le - lower) * ((rank - below) / inside if inside else 1.0)
        lower, below = le, n
    return math.inf, lower


def ms(seconds: float) -> str:
    return "n/a" if math.isnan(seconds) else f"{round(seconds * 1000):,} ms"


def lag_text(bound: float, estimate: float, previous: float) -> str:
    if math.isinf(bound):
        return f"> {ms(previous)} (past the last bucket)"
    return f"≤ {ms(bound)} (bucket {ms(previous)} to {ms(bound)}; ~{ms(estimate)} interpolated)"


def run_lateness(args: argparse.Namespace, workdir: Path) -> list[Row]:
    ids = [f"JOB-scale-lag-{n:05d}" for n in range(args.lateness_jobs)]
    scenario = write_scenario(workdir / "lateness.json", [steady_job(j, 3) for j in ids])
    with contextlib.ExitStack() as stack:
        setup = Setup(stack, workdir, args, "lateness")
        emulator = setup.emulator(scenario, len(ids))
        daemon = setup.daemon(emulator.url, fixed_interval(args.lateness_interval))
        push(setup.redis, setup.keys.intake, ids)
        wait_for("first polls", lambda: setup.events() >= 4 * len(ids), 120, daemon.alive)
        time.sleep(args.lateness_warmup)
        before, usage0 = daemon.metrics(), setup.usage()
        time.sleep(args.lateness_seconds)
        usage1, after = setup.usage(), daemon.metrics()
        daemon.alive()
        emulator.alive()
    window = usage1.at - usage0.at
    lag = [
        (le, n1 - n0)
        for (le, n1), (_, n0) in zip(lag_buckets(after), lag_buckets(before), strict=True)
    ]
    bounds = [0.0] + [le for le, _ in lag]
    polls = total(after, "poller_polls_total") - total(before, "poller_polls_total")
    offered = len(ids) / args.lateness_interval
    p50, p50_est = quantile(lag, 0.5)
    p99, p99_est = quantile(lag, 0.99)

    def previous(bound: float) -> float:
        return bounds[bounds.index(bound) - 1] if bound in bounds else bounds[-1]

    if p99 < LAG_TARGET:
        met = "yes"
    elif previous(p99) >= LAG_TARGET:
        met = "no"
    else:
        met = (
            f"cannot tell from the buckets: p99 is in ({ms(previous(p99))}, {ms(p99)}], "
            f"not provably < {ms(LAG_TARGET)}"
        )
    return [
        Row(
            "lateness",
            f"polls/s: {len(ids):,} jobs at a fixed {args.lateness_interval:g} s, "
            f"{window:.0f} s window",
            f"{polls / window:,.0f}/s of {offered:,.0f} offered",
            number=polls / window,
            unit="polls/s",
        ),
        Row("lateness", "CPU over the window", contention(usage0, usage1)),
        Row(
            "lateness",
            "poll lag p50 (poller_poll_lag_seconds)",
            lag_text(p50, p50_est, previous(p50)),
            number=p50_est,
            unit="s",
        ),
        Row(
            "lateness",
            "poll lag p99 (poller_poll_lag_seconds)",
            lag_text(p99, p99_est, previous(p99)),
            f"< {ms(LAG_TARGET)}",
            met,
            p99_est,
            "s",
        ),
    ]


# --- delay -----------------------------------------------------------------------------------


def delay_job(
    job_id: str, tasks: int, lead: float, window: float, gap: float, rng: random.Random
) -> tuple[dict[str, object], dict[tuple[str, str], float]]:
    """A job whose tasks change at random offsets; its spec and ``(task_index or "job",
    status) -> offset`` of every change after the first poll."""
    changes: dict[tuple[str, str], float] = {}
    specs = []
    for i in range(1, tasks + 1):
        running = round(rng.uniform(lead, lead + window - gap), 3)
        done = round(running + rng.uniform(gap, min(2 * gap, lead + window - running)), 3)
        changes[(str(i), "RUNNING")] = running
        changes[(str(i), "SUCCEEDED")] = done
        steps = [[0, "SUBMITTED"], [running, "RUNNING"], [done, "SUCCEEDED"]]
        specs.append({"task_index": i, "task_name": task_name(i), "steps": steps})
    end = round(lead + window + gap, 3)
    changes[("job", "SUCCEEDED")] = end
    spec = {
        "job_id": job_id,
        "project_id": PROJECT,
        "job_type": "PROVISION",
        "job_status": [[0, "RUNNING"], [end, "SUCCEEDED"]],
        "tasks": specs,
    }
    return spec, changes


def epoch_of(iso: str) -> float:
    return datetime.fromisoformat(iso.replace("Z", "+00:00")).timestamp()


def nearest_rank(values: Sequence[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[max(0, math.ceil(q * len(ordered)) - 1)] if ordered else math.nan


def run_delay(args: argparse.Namespace, workdir: Path) -> list[Row]:
    interval = args.delay_interval
    gap = 3 * interval
    if args.delay_seconds < 2 * gap:
        raise BenchError(f"--delay-seconds must be at least {2 * gap:g} (6 poll intervals)")
    rng = random.Random(7)
    jobs = {
        f"JOB-scale-delay-{n:05d}": delay_job(
            f"JOB-scale-delay-{n:05d}",
            args.delay_tasks,
            args.delay_lead,
            args.delay_seconds,
            gap,
            rng,
        )
        for n in range(args.delay_jobs)
    }
    delays: list[float] = []
    missing = unexpected = 0
    with contextlib.ExitStack() as stack:
        setup = Setup(stack, workdir, args, "delay")
        emulator = setup.emulator(None, 0)
        daemon = setup.daemon(emulator.url, fixed_interval(interval))
        for spec, _ in jobs.values():
            emulator.admin("POST", "/_sim/jobs", spec)
        push(setup.redis, setup.keys.intake, list(jobs))
        usage0 = setup.usage()
        created = {
            j["job_id"]: epoch_of(j["created_at"])
            for j in emulator.admin("GET", "/_sim/jobs")["jobs"]
        }
        last = max(
            created[job_id] + changes[("job", "SUCCEEDED")] for job_id, (_, changes) in jobs.items()
        )
        time.sleep(max(0.0, last - time.time()))
        usage1 = setup.usage()
        wait_for(
            "every delay job finished",
            lambda: setup.redis.zcard(setup.keys.schedule) == 0,
            30 + 10 * interval,
            daemon.alive,
            period=0.1,
        )
        with setup.redis.pipeline(transaction=False) as pipe:
            for job_id in jobs:
                pipe.xrange(setup.keys.job_events(job_id))
            streams = pipe.execute()
        emulator.alive()
    for (job_id, (_, changes)), entries in zip(jobs.items(), streams, strict=True):
        seen = set()
        for entry_id, raw in entries:
            fields = {k.decode(): v.decode() for k, v in raw.items()}
            if not fields.get("from_status"):
                continue  # first sight: not a change
            key = (fields.get("task_index") or "job", fields["to_status"])
            if key not in changes or key in seen:
                unexpected += 1
                continue
            seen.add(key)
            appended_ms = int(entry_id.decode().split("-")[0])
            delays.append(appended_ms / 1000 - (created[job_id] + changes[key]))
        missing += len(changes) - len(seen)
    if not delays:
        raise BenchError("no status change was published")
    p50, p99 = nearest_rank(delays, 0.5), nearest_rank(delays, 0.99)
    bound = 1.1 * interval + LAG_TARGET
    note = f"{len(delays):,} changes of {len(jobs):,} jobs at a fixed {interval:g} s interval"
    if missing or unexpected:
        note += f"; {missing} changes without an event, {unexpected} unexpected events"
    return [
        Row(
            "delay",
            f"change -> event p50 ({note})",
            ms(p50),
            f"≈ {ms(interval / 2)} (half an interval) + one poll",
            number=p50,
            unit="s",
        ),
        Row(
            "delay",
            "change -> event p99",
            ms(p99),
            f"≤ {ms(bound)} (interval + 10 % jitter + 100 ms)",
            yes(p99 <= bound),
            p99,
            "s",
        ),
        Row(
            "delay",
            "change -> event max / min",
            f"{ms(max(delays))} / {ms(min(delays))}",
            number=max(delays),
            unit="s",
        ),
        Row("delay", "CPU while the changes happened", contention(usage0, usage1)),
    ]


# --- main ------------------------------------------------------------------------------------

RUNNERS: Final = {
    "intake": run_intake,
    "memory": run_memory,
    "lateness": run_lateness,
    "delay": run_delay,
}
# Each section's numeric options, as (name, type, default, smoke size, help): the flag is
# --SECTION-NAME; --smoke puts the smoke size (where there is one) in place of the default.
OPTIONS: Final[dict[str, tuple[tuple[str, type, float | None, float | None, str], ...]]] = {
    "intake": (
        ("jobs", int, 20_000, 500, "IDs queued (20,000)"),
        ("background", int, 500, 50, "jobs already polled (500)"),
        ("interval", float, 1.0, None, "fixed poll interval, s (1)"),
        ("warmup", float, 3.0, 0.5, "s of background polling before the intake (3)"),
    ),
    "memory": (
        ("jobs", int, 50_000, 300, "jobs tracked (50,000)"),
        ("small", int, None, 100, "the smaller count (a tenth)"),
        ("tasks", int, 10, None, "tasks per job (10)"),
        ("interval", float, 300.0, None, "poll interval, s; the maximum is twice it (300)"),
        ("sample", int, 500, 50, "jobs whose keys MEMORY USAGE measures (500)"),
    ),
    "lateness": (
        ("jobs", int, 1000, 50, "jobs (1,000)"),
        ("interval", float, 1.0, None, "fixed poll interval, s (1)"),
        ("warmup", float, 5.0, 0.5, "s (5)"),
        ("seconds", float, 20.0, 2.0, "measured window, s (20)"),
    ),
    "delay": (
        ("jobs", int, 200, 10, "jobs (200)"),
        ("tasks", int, 4, 2, "tasks per job (4)"),
        ("interval", float, 0.5, None, "fixed poll interval, s (0.5)"),
        ("lead", float, 3.0, 1.5, "s from a job's creation to its first change (3)"),
        ("seconds", float, 20.0, 3.0, "s over which the changes are spread (20)"),
    ),
}
SMOKE: Final = {
    f"{section}_{name}": smoke
    for section, options in OPTIONS.items()
    for name, _type, _default, smoke, _help in options
    if smoke is not None
}


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    add = parser.add_argument
    add(
        "--only",
        default=",".join(SECTIONS),
        metavar="SECTIONS",
        help=f"comma-separated subset of {','.join(SECTIONS)} (all)",
    )
    add("--smoke", action="store_true", help="tiny sizes, about 20 s: checks the run, not speed")
    add("--json", metavar="PATH", help="also write the rows as JSON")
    add("--no-pin", dest="pin", action="store_false", help="no CPU pinning")
    groups = {section: parser.add_argument_group(section) for section in OPTIONS}
    for section, options in OPTIONS.items():
        for name, kind, default, _smoke, text in options:
            groups[section].add_argument(
                f"--{section}-{name}", type=kind, default=default, help=text
            )
    groups["intake"].add_argument(
        "--no-intake-idle",
        dest="intake_idle",
        action="store_false",
        help="skip the diagnostic intake with polls held back",
    )
    args = parser.parse_args(argv)
    if args.smoke:
        defaults = {a.dest: a.default for a in parser._actions}
        for key, value in SMOKE.items():
            if getattr(args, key) == defaults[key]:
                setattr(args, key, value)
    chosen = [name.strip() for name in args.only.split(",") if name.strip()]
    if not chosen or set(chosen) - set(SECTIONS):
        parser.error(f"--only: expected some of {','.join(SECTIONS)}, got {args.only!r}")
    args.sections = [name for name in SECTIONS if name in chosen]
    if args.memory_small is None:
        args.memory_small = max(1, args.memory_jobs // 10)
    counts = (
        args.intake_jobs,
        args.memory_jobs,
        args.memory_small,
        args.memory_tasks,
        args.memory_sample,
        args.lateness_jobs,
        args.delay_jobs,
        args.delay_tasks,
    )
    if min(counts) < 1 or args.intake_background < 0 or args.memory_small > args.memory_jobs:
        parser.error("job and task counts must be >= 1, --memory-small <= --memory-jobs")
    times = (
        args.intake_interval,
        args.memory_interval,
        args.lateness_interval,
        args.lateness_seconds,
        args.delay_interval,
        args.delay_seconds,
    )
    if min(times) <= 0 or min(args.intake_warmup, args.lateness_warmup, args.delay_lead) < 0:
        parser.error("intervals and windows must be > 0, warm-ups and leads >= 0")
    return args


def main(argv: Sequence[str] | None = None, out: IO[str] = sys.stdout) -> int:
    args = parse_args(argv)
    rows: list[Row] = []
    failed = []
    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="poller-scale-") as tmp:
        for name in args.sections:
            print(f"{name}: running", file=out, flush=True)
            t0 = time.monotonic()
            try:
                rows.extend(RUNNERS[name](args, Path(tmp)))
            except (BenchError, RedisUnavailable, OSError, redis.RedisError) as exc:
                failed.append(name)
                rows.append(Row(name, "error", str(exc).splitlines()[0][:200]))
                print(f"{name}: error: {exc}", file=sys.stderr, flush=True)
            print(f"{name}: {time.monotonic() - t0:.0f} s", file=out, flush=True)
    pinned = args.pin and (os.cpu_count() or 1) > 1
    print(file=out)
    print(
        f"{os.cpu_count()} CPUs, "
        + ("daemon on CPU 1, emulator + redis-server on CPU 0" if pinned else "not pinned")
        + f"; load average {os.getloadavg()[0]:.1f} at the end; "
        f"{time.monotonic() - started:.0f} s in all" + ("; SMOKE sizes" if args.smoke else ""),
        file=out,
    )
    print(file=out)
    print(table(rows), file=out)
    if any(CONTENDED in r.value for r in rows):
        print(f"\nnote: {CONTENDED} rows: other processes on this machine took CPU time from the "
              "benchmark's processes during that section; its speed figures are lower bounds",
              file=out)  # fmt: skip
    if args.json:
        document = {
            "args": {k: v for k, v in vars(args).items() if k != "sections"},
            "sections": args.sections,
            "failed": failed,
            "cpus": os.cpu_count(),
            "pinned": pinned,
            "python": platform.python_version(),
            "rows": [asdict(r) for r in rows],
        }
        Path(args.json).write_text(json.dumps(document, indent=2) + "\n")
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
