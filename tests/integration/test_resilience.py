"""Exactly-once under trouble: stalled and crashed replicas, Redis restarts, a faulty API,
several daemon processes at once, and a graceful SIGTERM."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import anyio
import pytest

from poller.consumer import JobEvent
from poller.localredis import LocalRedis
from poller.servicestage.client import ServiceStageClient
from poller.servicestage.outcomes import PollOutcome
from poller.sim import JobSpec, SimConfig, SimHandle, generate, running_sim
from poller.sim.auth import token_auth
from poller.store import Keys, Store, connect
from tests.event_schema import schema_errors
from tests.integration.harness import (
    PROJECT,
    TOKEN,
    all_final,
    assert_consistent,
    by_job,
    daemon,
    daemon_env,
    events_until,
    eventually,
    fast_settings,
    running_worker,
)
from tests.scrape import scraped


def expected_end(spec: JobSpec) -> tuple[str, str]:
    """(event, to_status or reason) of a job's final event, from the emulator's own spec."""
    if spec.missing:
        return ("job.abandoned", "not_found")
    if spec.forbidden:
        return ("job.abandoned", "rejected")
    return ("job.status_changed", spec.job_status[-1].status)


def final_of(events: list[JobEvent]) -> tuple[str, str]:
    last = events[-1]
    return (last.event, last.reason or last.to_status)


@asynccontextmanager
async def sim_with(jobs: tuple[JobSpec, ...] = (), **config: Any) -> AsyncIterator[SimHandle]:
    cfg = SimConfig(project_id=PROJECT, authenticators=(token_auth([TOKEN]),), jobs=jobs, **config)
    async with running_sim(cfg) as handle:
        yield handle


class HeldClient:
    """Wraps a client so polls wait until released: a replica frozen mid-poll (like SIGSTOP)."""

    def __init__(self, inner: ServiceStageClient) -> None:
        self.inner = inner
        self.entered = anyio.Event()
        self.release = anyio.Event()

    async def fetch_job(self, project_id: str, job_id: str, instance_id: str = "") -> PollOutcome:
        outcome = await self.inner.fetch_job(project_id, job_id, instance_id)
        self.entered.set()
        await self.release.wait()
        return outcome


async def test_stalled_replica_is_fenced_after_another_takes_its_job_over(
    redis_server: LocalRedis, prefix: str
) -> None:
    spec = {
        "job_type": "PROVISION",
        "job_status": [[0, "RUNNING"]],
        "tasks": [{"task_name": "A", "task_index": 1, "steps": [[0, "RUNNING"]]}],
    }
    async with sim_with() as sim:
        job_id = await sim.create_job(spec)
        # One poll at a time, so the frozen replica cannot claim the job a second time.
        frozen = fast_settings(redis_server.url, prefix, sim.url, lease_seconds=0.3, concurrency=1)
        settings = fast_settings(redis_server.url, prefix, sim.url)
        store = Store(connect(redis_server.url), Keys(prefix))
        async with running_worker(frozen) as stalled:
            held = HeldClient(stalled.client)
            stalled.client = held  # type: ignore[assignment]
            # No renewals from the frozen replica: its lease must lapse.
            stalled.store.renew = _never_renew  # type: ignore[method-assign]
            await store.enqueue(job_id)
            with anyio.fail_after(10):
                await held.entered.wait()
            async with running_worker(settings) as healthy:
                events = await events_until(store, lambda ev: len(ev) >= 2, job_id=job_id)
                held.release.set()
                await eventually(lambda: scraped(stalled.metrics, "poller_leases_lost_total") >= 1)
                assert scraped(healthy.metrics, "poller_commits_total", result="ok") >= 1
        await store.redis.aclose()
    all_events = [e for e in await _all_events(redis_server.url, prefix) if e.job_id == job_id]
    assert [e.seq for e in all_events] == [1, 2]
    assert [e.seq for e in events] == [1, 2]


async def _never_renew(leases: Any, until: float) -> list[bool]:
    return [True for _ in leases]


async def _all_events(url: str, prefix: str) -> list[JobEvent]:
    store = Store(connect(url), Keys(prefix))
    try:
        return [JobEvent.from_entry(i, f) for i, f in await store.redis.xrange(store.keys.events)]
    finally:
        await store.redis.aclose()


async def test_every_event_arrives_exactly_once_through_a_faulty_api(
    redis_server: LocalRedis, prefix: str
) -> None:
    scenario = generate(30, seed=7, duration=3.0, project_id=PROJECT)
    faults = {
        "html_500": 0.06,
        "empty_502": 0.06,
        "unavailable_503": 0.04,
        "throttled_429": 0.04,
        "truncated": 0.06,
        "reset": 0.04,
        "retry_after": 0,
        "seed": 3,
    }
    async with sim_with(scenario.jobs) as sim:
        await sim.set_faults(**faults)
        store = Store(connect(redis_server.url), Keys(prefix))
        ids = [spec.job_id for spec in scenario.jobs]
        settings = fast_settings(redis_server.url, prefix, sim.url, not_found_grace=8.0)
        async with running_worker(settings):
            await store.enqueue(*ids)
            events = await events_until(store, all_final(ids), within=90)
        stats = await sim.stats()
        await store.redis.aclose()
    assert sum(stats["by_fault"].values()) > 10  # type: ignore[attr-defined]
    grouped = by_job(events)
    specs = {s.job_id: s for s in scenario.jobs}
    for job_id in ids:
        assert_consistent(grouped[job_id])
        assert final_of(grouped[job_id]) == expected_end(specs[job_id])
    assert all(schema_errors(dict(e.fields)) == [] for e in events)


async def test_redis_restart_mid_run_loses_and_duplicates_nothing(
    own_redis: LocalRedis, prefix: str
) -> None:
    scenario = generate(12, seed=11, duration=4.0, project_id=PROJECT)
    ids = [s.job_id for s in scenario.jobs]
    async with sim_with(scenario.jobs, manual_clock=True) as sim:
        settings = fast_settings(own_redis.url, prefix, sim.url, not_found_grace=60.0)
        async with running_worker(settings) as worker:
            store = Store(connect(own_redis.url), Keys(prefix))
            await store.enqueue(*ids)
            await events_until(store, lambda ev: len({e.job_id for e in ev}) >= 8, within=30)
            own_redis.kill()
            await sim.advance(2.0)  # the jobs move on while Redis is down
            await eventually(lambda: not worker.health.redis_ok)
            own_redis.start()
            await sim.advance(10.0)
            events = await events_until(store, all_final(ids), within=60)
            await store.redis.aclose()
    grouped = by_job(events)
    specs = {s.job_id: s for s in scenario.jobs}
    for job_id in ids:
        assert_consistent(grouped[job_id])
        assert final_of(grouped[job_id]) == expected_end(specs[job_id])


@pytest.mark.slow
async def test_two_daemon_processes_resolve_200_jobs_exactly_once(
    redis_server: LocalRedis, prefix: str, tmp_path: Path
) -> None:
    scenario = generate(200, seed=2026, duration=4.0, project_id=PROJECT)
    ids = [s.job_id for s in scenario.jobs]
    async with sim_with(scenario.jobs) as sim:
        env = daemon_env(redis_server.url, prefix, sim.url, POLLER_NOT_FOUND_GRACE="10")
        store = Store(connect(redis_server.url), Keys(prefix))
        async with daemon(env, tmp_path / "a.log") as a, daemon(env, tmp_path / "b.log") as b:
            await store.enqueue(*ids)
            events = await events_until(store, all_final(ids), within=120)
            a.send_signal(signal.SIGTERM)
            b.send_signal(signal.SIGTERM)
            with anyio.fail_after(15):
                assert await a.wait() == 0
                assert await b.wait() == 0
        per_job = {
            job_id: [
                JobEvent.from_entry(i, f)
                for i, f in await store.redis.xrange(store.keys.job_events(job_id))
            ]
            for job_id in ids
        }
        await store.redis.aclose()
    grouped = by_job(events)
    specs = {s.job_id: s for s in scenario.jobs}
    for job_id in ids:
        assert_consistent(grouped[job_id])
        assert final_of(grouped[job_id]) == expected_end(specs[job_id])
        assert [dict(e.fields) for e in per_job[job_id]] == [
            dict(e.fields) for e in grouped[job_id]
        ]
    owners = set()
    for log in ("a.log", "b.log"):
        for line in (tmp_path / log).read_text().splitlines():
            if '"task.status_changed"' in line:
                owners.add(log)
    # both replicas polled and published (one may well admit every message: intake is batched)
    assert owners == {"a.log", "b.log"}


async def test_killed_daemon_jobs_are_finished_by_another_replica(
    redis_server: LocalRedis, prefix: str, tmp_path: Path
) -> None:
    spec = {
        "job_type": "PROVISION",
        "job_status": [[0, "RUNNING"], [2, "SUCCEEDED"]],
        "tasks": [{"task_name": "A", "task_index": 1, "steps": [[0, "RUNNING"], [2, "SUCCEEDED"]]}],
    }
    async with sim_with(manual_clock=True) as sim:
        ids = [await sim.create_job(spec) for _ in range(5)]
        env = daemon_env(redis_server.url, prefix, sim.url, POLLER_LEASE_SECONDS="1")
        store = Store(connect(redis_server.url), Keys(prefix))
        async with daemon(env, tmp_path / "victim.log") as victim:
            await store.enqueue(*ids)
            await events_until(store, lambda ev: len(ev) >= 10)
            victim.kill()  # SIGKILL: no drain, no hand-back, leases left behind
            await victim.wait()
        await sim.advance(2)
        async with running_worker(fast_settings(redis_server.url, prefix, sim.url)):
            events = await events_until(store, all_final(ids), within=30)
        await store.redis.aclose()
    for job_id, job_events in by_job(events).items():
        assert_consistent(job_events)
        assert final_of(job_events) == ("job.status_changed", "SUCCEEDED"), job_id


async def test_sigterm_hands_in_flight_polls_back_and_exits_zero(
    redis_server: LocalRedis, prefix: str, tmp_path: Path
) -> None:
    spec = {
        "job_type": "PROVISION",
        "job_status": [[0, "RUNNING"]],
        "tasks": [{"task_name": "A", "task_index": 1, "steps": [[0, "RUNNING"]]}],
    }
    async with sim_with() as sim:
        ids = [await sim.create_job(spec) for _ in range(3)]
        env = daemon_env(
            redis_server.url, prefix, sim.url, POLLER_SHUTDOWN_GRACE="1", POLLER_LEASE_SECONDS="30"
        )
        store = Store(connect(redis_server.url), Keys(prefix))
        async with daemon(env, tmp_path / "d.log") as proc:
            await store.enqueue(*ids)
            await events_until(store, lambda ev: len(ev) >= 6)
            await sim.set_faults(latency=30)  # every poll from now on hangs past the grace
            await eventually(lambda: _leased(store, ids))
            proc.send_signal(signal.SIGTERM)
            with anyio.fail_after(10):
                code = await proc.wait()
        stopped_at = await store.server_time()
        views = [await store.get_job(PROJECT, j) for j in ids]
        replicas = await store.redis.zcard(store.keys.replicas)
        await store.redis.aclose()
    assert code == 0
    for view in views:
        assert view is not None
        assert view.tracking
        assert view.state.token == ""  # lease handed back...
        assert view.due_at is not None
        assert view.due_at <= stopped_at  # ...and due at once, not after the 30 s lease
    assert replicas == 0
    log = (tmp_path / "d.log").read_text()
    assert '"worker stopped"' in log


async def _leased(store: Store, ids: list[str]) -> bool:
    views = [await store.get_job(PROJECT, j) for j in ids]
    return all(v is not None and v.state.token != "" for v in views)


def test_poller_run_reports_a_bad_setting_before_touching_anything() -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("POLLER_")}
    env["POLLER_CONCURRENCY"] = "lots"
    result = subprocess.run(
        [sys.executable, "-m", "poller", "run"],
        env=env,
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert result.returncode == 2
    assert result.stderr.strip() == (
        "poller: configuration error: POLLER_CONCURRENCY: expected a whole number, got 'lots'"
    )
