"""``poller demo``: Redis, the emulator, a daemon and sample jobs, all on this machine.

Everything runs in this process except ``redis-server`` (a child process, stopped by PID).
With ``POLLER_REDIS_URL`` set, that Redis is used under a fresh key prefix instead.
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
import time
import uuid
from contextlib import AsyncExitStack
from dataclasses import dataclass, field
from typing import Any, TextIO

import anyio

from poller.commands import colour, format_event
from poller.config import Secret, Settings, load_settings
from poller.consumer import JobEvent, tail_events
from poller.daemon import build_worker
from poller.localredis import LocalRedis, RedisUnavailable
from poller.sim.auth import DEFAULT_TOKEN
from poller.sim.config import SimConfig
from poller.sim.server import running_sim
from poller.snapshot import EventKind
from poller.store import Store
from poller.telemetry import configure_logging
from poller.terminal import use_colour

DEMO_PROJECT = "demo-project"
DEMO_TOKEN = DEFAULT_TOKEN


def _steps(*pairs: tuple[float, str]) -> list[list[Any]]:
    return [[at, status] for at, status in pairs]


def _sequential(
    names: list[str], *, start: float, each: float, last: str = "SUCCEEDED"
) -> list[dict[str, Any]]:
    tasks = []
    for i, name in enumerate(names):
        t0 = start + i * each
        final = last if i == len(names) - 1 else "SUCCEEDED"
        tasks.append(
            {"task_name": name, "task_index": i + 1,
             "steps": _steps((t0, "RUNNING"), (t0 + each, final))}
        )  # fmt: skip
    return tasks


def sample_jobs(scale: float = 1.0) -> list[tuple[str, dict[str, Any]]]:
    """The demo's jobs: (label, emulator job spec), each with a different fate."""
    s = scale
    deploy = ["PREPARE_CONTEXT", "PULL_IMAGE", "CREATE_WORKLOAD", "HEALTH_CHECK"]
    big = [{"task_name": f"ROLL_OUT_INSTANCE_{i:03d}", "task_index": i,
            "steps": _steps((0.5 * s, "SUBMITTED"), ((1 + i * 0.05) * s, "RUNNING"),
                            ((2 + i * 0.06) * s, "SUCCEEDED"))}
           for i in range(1, 121)]  # fmt: skip
    return [
        ("deploy web (succeeds)", {
            "job_type": "PROVISION",
            "job_status": _steps((0, "RUNNING"), (9 * s, "SUCCEEDED")),
            "tasks": _sequential(deploy, start=0.5 * s, each=2 * s)}),
        ("upgrade api (fails)", {
            "job_type": "DAILY_OPERATION",
            "job_status": _steps((0, "RUNNING"), (6 * s, "FAILED")),
            "tasks": [*_sequential(deploy[:3], start=0.5 * s, each=1.8 * s, last="FAILED"),
                      {"task_name": "HEALTH_CHECK", "task_index": 4,
                       "steps": _steps((6 * s, "SKIPPED"))}]}),
        ("rolling batch (partially fails)", {
            "job_type": "DAILY_OPERATION",
            "job_status": _steps((0, "RUNNING"), (7 * s, "PARTIALLY_FAILED")),
            "tasks": [{"task_name": f"BATCH_{i}", "task_index": i,
                       "steps": _steps((i * s, "RUNNING"),
                                       ((i + 2) * s, "FAILED" if i == 2 else "SUCCEEDED"))}
                      for i in range(1, 4)]}),
        ("canary (rolls back)", {
            "job_type": "DAILY_OPERATION",
            "job_status": _steps((0, "RUNNING"), (5 * s, "ROLLBACKING"), (9 * s, "ROLLBACKED")),
            "rollback_enabled": True,
            "tasks": [{"task_name": "DEPLOY_CANARY", "task_index": 1,
                       "steps": _steps((0.5 * s, "RUNNING"), (3 * s, "FAILED"))},
                      {"task_name": "ROLLBACK_CANARY", "task_index": 2,
                       "steps": _steps((5 * s, "ROLLBACKING"), (8.5 * s, "ROLLBACKED"))}]}),
        ("teardown (cancelled)", {
            "job_type": "DEPROVISION",
            "job_status": _steps((0, "SUBMITTED"), (1 * s, "RUNNING"), (4 * s, "CANCELLED")),
            "tasks": [{"task_name": "DRAIN_TRAFFIC", "task_index": 1,
                       "steps": _steps((1 * s, "RUNNING"), (4 * s, "CANCELLED"))}]}),
        ("slow to appear (404 first)", {
            "job_type": "PROVISION",
            "visible_after": 3 * s,
            "job_status": _steps((0, "RUNNING"), (7 * s, "SUCCEEDED")),
            "tasks": _sequential(deploy[:2], start=3 * s, each=2 * s)}),
        ("fleet of 120 tasks (paged)", {
            "job_type": "PROVISION",
            "job_status": _steps((0, "SCHEDULED"), (1 * s, "RUNNING"), (10 * s, "SUCCEEDED")),
            "tasks": big}),
        ("mistyped job (never found)", {"job_type": "PROVISION", "missing": True,
                                        "job_status": _steps((0, "RUNNING"))}),
    ]  # fmt: skip


@dataclass
class _Job:
    label: str
    job_id: str
    events: int = 0
    tasks: dict[str, str] = field(default_factory=dict)
    status: str = ""
    final: JobEvent | None = None
    first_at: float | None = None
    last_at: float | None = None

    def record(self, event: JobEvent) -> None:
        """Count ``event`` and keep the job's latest job and task statuses."""
        self.events += 1
        if event.event == EventKind.TASK_STATUS_CHANGED and event.task_id:
            self.tasks[event.task_id] = event.to_status
        elif event.event == EventKind.JOB_STATUS_CHANGED:
            self.status = event.to_status
        if event.is_final:
            self.final = event
            self.status = self.status or ""


class _Screen:
    """Event lines scroll; on a terminal a footer keeps one live progress line per job."""

    def __init__(self, out: TextIO, jobs: list[_Job]) -> None:
        self.out = out
        self.jobs = jobs
        self.tty = out.isatty()  # redraw the progress footer only on a terminal
        self.colours = use_colour(out)
        self.footer = 0

    def _progress(self, job: _Job) -> str:
        done = sum(1 for s in job.tasks.values() if s in ("SUCCEEDED", "FAILED", "SKIPPED",
                                                         "CANCELLED", "ROLLBACKED"))  # fmt: skip
        if job.final is not None:
            state = job.final.reason or job.final.to_status
            mark = "✔" if job.final.to_status == "SUCCEEDED" else "✘"
        else:
            state, mark = job.status or "waiting…", "…"
        width = 20
        filled = int(width * done / len(job.tasks)) if job.tasks else 0
        bar = "#" * filled + "-" * (width - filled)
        status = colour(job.status, state, self.colours)
        return f" {mark} {job.label:<32} [{bar}] {done:>3}/{len(job.tasks):<3} tasks  {status}"

    def event(self, fields: dict[str, str]) -> None:
        if self.tty and self.footer:
            self.out.write(f"\x1b[{self.footer}F\x1b[J")
        self.out.write(format_event(fields, colours=self.colours) + "\n")
        if self.tty:
            lines = [self._progress(j) for j in self.jobs]
            self.out.write("\n".join(lines) + "\n")
            self.footer = len(lines)
        self.out.flush()

    def finished(self, job: _Job) -> None:
        if not self.tty:
            self.out.write(self._progress(job) + "\n")
            self.out.flush()

    def summary(self, elapsed: float) -> None:
        self.out.write(f"\nAll {len(self.jobs)} jobs finished in {elapsed:.1f}s:\n\n")
        header = f"  {'job':<32} {'job_id':<40} {'outcome':<28} {'events':>6} {'tasks':>5}"
        self.out.write(header + "\n  " + "-" * (len(header) - 2) + "\n")
        for job in self.jobs:
            final = job.final
            outcome = "(unfinished)"
            if final is not None:
                outcome = f"abandoned: {final.reason}" if final.reason else final.to_status
            shown = colour(job.status, f"{outcome:<28}", self.colours)
            self.out.write(
                f"  {job.label:<32} {job.job_id:<40} {shown} {job.events:>6} {len(job.tasks):>5}\n"
            )
        self.out.flush()


def demo_settings(redis_url: str, prefix: str, api_url: str) -> Settings:
    """Quick-moving settings so the sample jobs finish in well under a minute."""
    base = load_settings({k: v for k, v in os.environ.items() if k == "POLLER_LOG_FORMAT"})
    return Settings(
        redis_url=redis_url,
        key_prefix=prefix,
        api_endpoint=api_url,
        project_id=DEMO_PROJECT,
        auth_token=Secret(DEMO_TOKEN),
        poll_interval=0.5,
        poll_interval_max=2.0,
        backoff_initial=0.25,
        backoff_max=2.0,
        not_found_grace=6.0,
        job_timeout=300.0,
        shutdown_grace=3.0,
        http_port=0,
        page_size=50,
        log_format=base.log_format,
        log_level="warning",
    )


def _demo_redis(stack: AsyncExitStack, out: TextIO) -> tuple[str, str] | None:
    """``(redis_url, key_prefix)``: POLLER_REDIS_URL under a fresh prefix, or else a private
    ``redis-server`` that ``stack`` stops; ``None`` (said on stderr) when none can start."""
    redis_url = os.environ.get("POLLER_REDIS_URL", "")
    if redis_url:
        prefix = f"poller-demo-{uuid.uuid4().hex[:8]}"
        out.write(f"Using Redis at POLLER_REDIS_URL with key prefix {prefix}\n")
        return redis_url, prefix
    try:
        local = stack.enter_context(LocalRedis())
    except RedisUnavailable as exc:
        sys.stderr.write(f"poller demo: {exc}\n")
        return None
    pid = local.proc.pid if local.proc else "?"
    out.write(f"Started a private redis-server (pid {pid}) on {local.url}\n")
    return local.url, "poller"


async def _show_until_finished(store: Store, jobs: list[_Job], screen: _Screen) -> None:
    """Show the sample jobs' events as they are published until every job has ended."""
    by_id = {j.job_id: j for j in jobs}
    async for event in tail_events(store.redis, store.keys, block_ms=500):
        job = by_id.get(event.job_id)
        if job is None:
            continue
        job.record(event)
        screen.event(dict(event.fields))
        if event.is_final:
            screen.finished(job)
        if all(j.final is not None for j in jobs):
            return


def _say_what_remains(out: TextIO, prefix: str) -> None:
    """The closing words: what was stopped, and what is left in the caller's Redis."""
    if os.environ.get("POLLER_REDIS_URL"):
        out.write(
            f"\nStopped the daemon and the emulator. The demo's keys stay in your Redis under "
            f'{prefix}:*; remove them with\n  redis-cli -u "$POLLER_REDIS_URL" --scan '
            f"--pattern '{prefix}:*' | xargs redis-cli -u \"$POLLER_REDIS_URL\" del\n"
        )
    else:
        out.write("\nStopped the daemon, the emulator and Redis. Try: poller --help\n")


async def run_demo(args: argparse.Namespace, out: TextIO = sys.stdout) -> int:
    """Start everything, follow the sample jobs to their end, print a summary."""
    started = time.monotonic()
    async with AsyncExitStack() as stack:
        chosen = _demo_redis(stack, out)
        if chosen is None:
            return 1
        redis_url, prefix = chosen
        sim = await stack.enter_async_context(
            running_sim(SimConfig(project_id=DEMO_PROJECT, page_cap=50))
        )
        out.write(f"Started the ServiceStage emulator on {sim.url}\n")
        settings = demo_settings(redis_url, prefix, sim.url)
        configure_logging(settings)
        jobs = [_Job(label, await sim.create_job(spec)) for label, spec in sample_jobs(args.scale)]
        worker = await stack.enter_async_context(build_worker(settings))
        screen = _Screen(out, jobs)
        async with anyio.create_task_group() as tg:
            tg.start_soon(worker.run)
            await worker.store.enqueue(*[j.job_id for j in jobs])
            out.write(f"Queued {len(jobs)} jobs on {settings.key_prefix}:jobs; events follow.\n\n")
            with anyio.move_on_after(args.timeout) as scope:
                await _show_until_finished(worker.store, jobs, screen)
            worker.stop()
        if scope.cancelled_caught:
            out.write(f"\nGave up after {args.timeout:g}s; unfinished jobs remain.\n")
            screen.summary(time.monotonic() - started)
            return 1
        screen.summary(time.monotonic() - started)
    _say_what_remains(out, prefix)
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    async def main() -> int:
        async with anyio.create_task_group() as tg:
            result: list[int] = []

            async def demo() -> None:
                result.append(await run_demo(args))
                tg.cancel_scope.cancel()

            async def interrupt() -> None:
                with anyio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
                    async for _ in signals:
                        sys.stdout.write("\nInterrupted; stopping everything.\n")
                        result.append(130)
                        tg.cancel_scope.cancel()
                        return

            tg.start_soon(demo)
            tg.start_soon(interrupt)
        return result[0] if result else 130

    return anyio.run(main)


def register(subparsers: Any) -> None:
    """Add the ``demo`` subcommand."""
    p = subparsers.add_parser(
        "demo", help="run everything on this machine with sample jobs",
        description="Start a private Redis (or use POLLER_REDIS_URL under a fresh key prefix), "
        "the ServiceStage emulator and one daemon; queue sample jobs with different fates "
        "(success, failure, partial failure, rollback, cancellation, late visibility, 120 paged "
        "tasks, never found) and show their events live until all have finished.  Ctrl-C stops "
        "everything; nothing is left running.",
    )  # fmt: skip
    p.add_argument("--timeout", type=float, default=120.0, help="give up after this many seconds")
    p.add_argument(
        "--scale", type=float, default=1.0,
        help="stretch (>1) or shrink (<1) the sample jobs' timelines",
    )  # fmt: skip
    p.set_defaults(func=cmd_demo)
