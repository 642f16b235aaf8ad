"""Running real workers in-process against the emulator, and awaiting what they publish."""

from __future__ import annotations

import os
import sys
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import anyio
import anyio.abc

from poller.config import Secret, Settings
from poller.consumer import JobEvent, tail_events
from poller.daemon import build_worker
from poller.sim.invariants import check_job_events
from poller.store import Store
from poller.store.schema import shard_of
from poller.worker import Worker

PROJECT = "proj-test"
TOKEN = "test-token-0123456789"


def quick_job(job_done: float = 0.2, task_done: float | None = None) -> dict[str, Any]:
    """An emulator job spec: one task; RUNNING, then SUCCEEDED ``job_done`` seconds in."""
    done = job_done if task_done is None else task_done
    return {
        "job_type": "PROVISION",
        "job_status": [[0, "RUNNING"], [job_done, "SUCCEEDED"]],
        "tasks": [
            {"task_name": "A", "task_index": 1, "steps": [[0, "RUNNING"], [done, "SUCCEEDED"]]}
        ],
    }


def jobs_in_shards(shards: int, per_shard: int = 1, *, tag: str = "JOB-s") -> list[str]:
    """Job IDs ``{tag}{n}``, ``per_shard`` in each of ``shards`` shards, listed shard by shard
    (shard 0's first): for tests that need jobs spread over every shard."""
    by_shard: list[list[str]] = [[] for _ in range(shards)]
    n = 0
    while any(len(ids) < per_shard for ids in by_shard):
        job_id = f"{tag}{n}"
        bucket = by_shard[shard_of(job_id, shards)]
        if len(bucket) < per_shard:
            bucket.append(job_id)
        n += 1
    return [job_id for ids in by_shard for job_id in ids]


def fast_settings(redis_url: str, prefix: str, api_url: str, **overrides: Any) -> Settings:
    """Settings for tests: sub-second intervals and backoff, no HTTP probes."""
    values: dict[str, Any] = {
        "redis_url": redis_url,
        "key_prefix": prefix,
        "api_endpoint": api_url,
        "project_id": PROJECT,
        "auth_token": Secret(TOKEN),
        "poll_interval": 0.02,
        "poll_interval_max": 0.1,
        "backoff_initial": 0.02,
        "backoff_max": 0.2,
        "lease_seconds": 5.0,
        "not_found_grace": 30.0,
        "shutdown_grace": 2.0,
        "request_timeout": 5.0,
        "http_port": 0,
        "concurrency": 32,
    }
    values.update(overrides)
    return Settings(**values)


@asynccontextmanager
async def running_worker(settings: Settings, **worker_kw: Any) -> AsyncIterator[Worker]:
    """A worker running in the background for the body of the ``async with``; drained after."""
    async with build_worker(settings, **worker_kw) as worker, anyio.create_task_group() as tg:
        tg.start_soon(worker.run)
        try:
            yield worker
        finally:
            worker.stop()


async def events_until(
    store: Store,
    done: Callable[[list[JobEvent]], bool],
    *,
    job_id: str | None = None,
    within: float = 30.0,
) -> list[JobEvent]:
    """Every event of the global stream (or one job's) from the start until ``done`` says so.

    It blocks on XREAD, so it wakes when an event arrives rather than on a timer.
    """
    seen: list[JobEvent] = []
    with anyio.fail_after(within):
        if done(seen):
            return seen
        async for event in tail_events(store.redis, store.keys, job_id=job_id, block_ms=200):
            seen.append(event)
            if done(seen):
                return seen
    raise AssertionError("unreachable")


def all_final(job_ids: Iterable[str]) -> Callable[[list[JobEvent]], bool]:
    """A ``done`` predicate: every job in ``job_ids`` has published its final event."""
    wanted = set(job_ids)

    def done(events: list[JobEvent]) -> bool:
        return wanted <= {e.job_id for e in events if e.is_final}

    return done


def by_job(events: Iterable[JobEvent]) -> dict[str, list[JobEvent]]:
    out: dict[str, list[JobEvent]] = {}
    for e in events:
        out.setdefault(e.job_id, []).append(e)
    return out


def transitions(events: Iterable[JobEvent]) -> list[tuple[str, str, str, str]]:
    """(event, task name or '', from, to) per event, in order: compact expectations."""
    return [(e.event, e.task_name or "", e.from_status, e.to_status) for e in events]


def assert_consistent(events: list[JobEvent]) -> None:
    """The contract's invariants for one job's events, in stream order (see
    :mod:`poller.sim.invariants`): seq 1..n, status chains, exactly one final event, the last."""
    job_id = events[0].job_id if events else ""
    violations = check_job_events(job_id, [(e.entry_id, e.fields) for e in events])
    assert not violations, "\n".join(violations)


async def eventually(condition: Callable[[], Awaitable[bool] | bool], within: float = 20.0) -> None:
    """Wait for a condition nothing can notify us of (a metric, the emulator's counters).

    Only for state with no event to await; everything published to Redis is awaited with
    :func:`events_until` instead.
    """
    with anyio.fail_after(within):
        while True:
            result = condition()
            if not isinstance(result, bool):
                result = await result
            if result:
                return
            await anyio.sleep(0.01)


def daemon_env(redis_url: str, prefix: str, api_url: str, **extra: str) -> dict[str, str]:
    """Environment for a `poller run` subprocess against the emulator: fast, JSON logs."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("POLLER_")}
    env.update(
        {
            "POLLER_REDIS_URL": redis_url,
            "POLLER_KEY_PREFIX": prefix,
            "POLLER_API_ENDPOINT": api_url,
            "POLLER_PROJECT_ID": PROJECT,
            "POLLER_AUTH_TOKEN": TOKEN,
            "POLLER_POLL_INTERVAL": "0.05",
            "POLLER_POLL_INTERVAL_MAX": "0.3",
            "POLLER_BACKOFF_INITIAL": "0.05",
            "POLLER_BACKOFF_MAX": "0.5",
            "POLLER_HTTP_PORT": "0",
            "POLLER_LOG_FORMAT": "json",
            "POLLER_LEASE_SECONDS": "2",
            "POLLER_SHUTDOWN_GRACE": "3",
        }
    )
    env.update(extra)
    return env


@asynccontextmanager
async def daemon(env: dict[str, str], log: Path) -> AsyncIterator[anyio.abc.Process]:
    """A `poller run` subprocess logging to ``log``; killed (by PID) if still running after."""
    with log.open("wb") as sink:
        proc = await anyio.open_process(
            [sys.executable, "-m", "poller", "run"], env=env, stdout=sink, stderr=sink
        )
        try:
            yield proc
        finally:
            if proc.returncode is None:
                proc.kill()
                await proc.wait()
