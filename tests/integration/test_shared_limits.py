"""Limits shared by every replica, proven with real daemon processes against one emulator:
the global rate limit as the API counts it, the pause after a 429, and the pause and single
probe after a 401 under AK/SK.

The emulator records when each request arrived (``/_sim/requests``); every claim is a check
over those times.  Where a claim depends on how fast a pause reaches the other replicas, the
bound is stated and generous (a loaded machine delays processes by tens of milliseconds) and
the pause it is measured against is long, so what is asserted is a silence of seconds.
"""

from __future__ import annotations

import re
import signal
import sys
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import anyio
import anyio.abc
import pytest

from poller.localredis import LocalRedis
from poller.sim.requestlog import Arrival, busiest_window
from poller.store import Keys, Store, connect
from tests.integration.harness import (
    PROJECT,
    TOKEN,
    all_final,
    daemon,
    daemon_env,
    events_until,
    eventually,
)

pytestmark = pytest.mark.slow

REPLICAS = 3


@dataclass(frozen=True, slots=True)
class Emulator:
    """``poller sim`` in a process of its own (so the clock it stamps arrivals with is not
    held up by the test's own work, its garbage collections included), driven over its
    admin API."""

    url: str
    session: aiohttp.ClientSession

    async def admin(self, method: str, path: str, body: object = None) -> Any:
        async with self.session.request(method, self.url + path, json=body) as response:
            assert response.status < 300, await response.text()
            return await response.json()

    async def create_job(self, spec: dict[str, Any]) -> str:
        return str((await self.admin("POST", "/_sim/jobs", spec))["job_id"])

    async def requests(self) -> list[Arrival]:
        rows = (await self.admin("GET", "/_sim/requests"))["requests"]
        return [Arrival(at, status) for at, status in rows]

    async def stats(self) -> dict[str, Any]:
        return dict(await self.admin("GET", "/_sim/stats"))


@asynccontextmanager
async def emulator(log: Path, *args: str) -> AsyncIterator[Emulator]:
    """An emulator process on a free port; stopped (by PID) after the block."""
    command = [sys.executable, "-m", "poller", "sim", "--port", "0", "--project-id", PROJECT,
               "--token", TOKEN, *args]  # fmt: skip
    with log.open("wb") as sink:
        proc = await anyio.open_process(command, stdout=sink, stderr=sink)
        try:
            urls: list[str] = []

            def serving() -> bool:
                found = re.search(r"serving (http://\S+)", log.read_text())
                urls.extend([found[1]] if found else [])
                return bool(urls)

            await eventually(serving, within=30)
            async with aiohttp.ClientSession() as session:
                yield Emulator(urls[0], session)
        finally:
            if proc.returncode is None:
                proc.terminate()
                with anyio.move_on_after(5):
                    await proc.wait()
            if proc.returncode is None:
                proc.kill()
                await proc.wait()


def running_job(seconds: float) -> dict[str, Any]:
    """A job that runs ``seconds`` (on the emulator's real clock) and then succeeds."""
    return {
        "job_type": "PROVISION",
        "job_status": [[0, "RUNNING"], [seconds, "SUCCEEDED"]],
        "tasks": [
            {"task_name": "A", "task_index": 1, "steps": [[0, "RUNNING"], [seconds, "SUCCEEDED"]]}
        ],
    }


@asynccontextmanager
async def replicas(
    env: dict[str, str], tmp_path: Path, store: Store, count: int = REPLICAS
) -> AsyncIterator[list[anyio.abc.Process]]:
    """``count`` `poller run` processes, each registered (heart-beating) when the block
    starts, so the emulator's jobs can be created then (their clocks start at creation);
    SIGTERM'd (each must exit 0) when the block ends, killed by PID if the block fails."""
    async with AsyncExitStack() as stack:
        procs = [
            await stack.enter_async_context(daemon(env, tmp_path / f"replica-{i}.log"))
            for i in range(count)
        ]

        async def registered() -> bool:
            return int(await store.redis.zcard(store.keys.replicas)) >= count

        await eventually(registered, within=60)
        yield procs
        for proc in procs:
            proc.send_signal(signal.SIGTERM)
        with anyio.fail_after(20):
            codes = [await proc.wait() for proc in procs]
        assert codes == [0] * count, [_tail(tmp_path / f"replica-{i}.log") for i in range(count)]


def _tail(log: Path) -> str:
    return "\n".join(log.read_text(errors="replace").splitlines()[-5:])


@asynccontextmanager
async def store_for(redis_server: LocalRedis, prefix: str) -> AsyncIterator[Store]:
    store = Store(connect(redis_server.url), Keys(prefix))
    try:
        yield store
    finally:
        await store.redis.aclose()


async def test_three_replicas_keep_to_one_rate_limit_as_the_api_counts_it(
    redis_server: LocalRedis, prefix: str, tmp_path: Path
) -> None:
    limit = 50
    async with (
        emulator(tmp_path / "emulator.log") as sim,
        store_for(redis_server, prefix) as store,
    ):
        env = daemon_env(redis_server.url, prefix, sim.url, POLLER_RATE_LIMIT=str(limit))
        async with replicas(env, tmp_path, store):
            # 30 jobs polled every 0.05-0.3 s want 100-600 requests/s: far more than the limit.
            ids = [await sim.create_job(running_job(5.0)) for _ in range(30)]
            await store.enqueue(*ids)
            await events_until(store, all_final(ids), within=90)
        arrivals = await sim.requests()
    times = [a.at for a in arrivals]
    busiest, _ = busiest_window(times, 1.0)
    # The limiter spaces any limit + 1 grants over at least 1.1 s; how much closer did they
    # arrive?  (Only delays that differ by more than the 0.1 s margin could break the limit.)
    tightest = min(b - a for a, b in zip(times, times[limit:], strict=False))
    print(f"\nthe tightest {limit + 1} consecutive requests arrived within {tightest:.3f} s")
    assert busiest <= limit, f"{busiest} requests in one second"
    # ...and the limit was the bottleneck, so the check means something: the API was asked at
    # close to the limiter's sustained rate (50 per 1.1 s with a burst of 2: 44.5/s).
    assert busiest >= 0.7 * limit
    span = times[-1] - times[0]
    print(f"\nrate limit {limit}/s, {REPLICAS} replicas: {len(times)} requests in {span:.2f} s "
          f"({len(times) / span:.1f}/s), at most {busiest} in any second")  # fmt: skip


@pytest.mark.parametrize("rate_limit", ["50", "0"], ids=["with-rate-limit", "without"])
async def test_a_429_pauses_every_replica_for_its_retry_after(
    redis_server: LocalRedis, prefix: str, tmp_path: Path, rate_limit: str
) -> None:
    retry_after = 3
    # How long after the first 429 was answered a request may still start: requests already
    # granted when the pause was written, and (without the rate limiter) the background
    # refresh of the other replicas (0.1 s), with room for a loaded machine.
    propagation = 0.5
    async with (
        emulator(tmp_path / "emulator.log") as sim,
        store_for(redis_server, prefix) as store,
    ):
        env = daemon_env(redis_server.url, prefix, sim.url, POLLER_RATE_LIMIT=rate_limit)
        async with replicas(env, tmp_path, store):
            ids = [await sim.create_job(running_job(10.0)) for _ in range(20)]
            await store.enqueue(*ids)
            await eventually(lambda: _at_least(sim, 60), within=30)
            await sim.admin("POST", "/_sim/throttle", {"seconds": 0.2, "retry_after": retry_after})
            await events_until(store, all_final(ids), within=90)
        arrivals = await sim.requests()
    first = next(a for a in arrivals if a.status == 429)
    t0 = first.at
    throttled = [a for a in arrivals if a.status == 429]
    quiet = [a for a in arrivals if t0 + propagation <= a.at < t0 + retry_after]
    assert quiet == [], _describe(arrivals, t0)
    # every 429 came within the propagation bound (none after the pause began everywhere)
    assert all(a.at < t0 + propagation for a in throttled), _describe(arrivals, t0)
    # polling resumed after the pause (and every job finished)
    assert any(t0 + retry_after <= a.at < t0 + retry_after + 3 for a in arrivals)
    late = max((a.at - t0 for a in arrivals if t0 <= a.at < t0 + propagation), default=0.0)
    print(f"\n429 burst ({rate_limit=}): {len(throttled)} answered 429; the last request "
          f"before the silence started {late * 1000:.1f} ms after the first 429")  # fmt: skip


async def _at_least(sim: Emulator, count: int) -> bool:
    return len(await sim.requests()) >= count


def _describe(arrivals: list[Arrival], t0: float) -> str:
    near = [f"{a.at - t0:+.3f}s {a.status}" for a in arrivals if t0 - 0.1 <= a.at < t0 + 4]
    return "requests around the first 429: " + ", ".join(near)


WRONG_SECRET = "sk-not-the-one-the-api-knows"
RIGHT_SECRET = "sk-0123456789abcdef-very-secret"


async def test_a_wrong_secret_key_costs_one_bad_signature_per_pause_window_across_replicas(
    redis_server: LocalRedis, prefix: str, tmp_path: Path
) -> None:
    pause = 2.0
    async with (
        emulator(tmp_path / "emulator.log", "--access-key", f"AKTEST:{RIGHT_SECRET}") as sim,
        store_for(redis_server, prefix) as store,
    ):
        env = daemon_env(
            redis_server.url, prefix, sim.url,
            POLLER_ACCESS_KEY="AKTEST", POLLER_SECRET_KEY=WRONG_SECRET,
            POLLER_AUTH_PAUSE=str(pause), POLLER_AUTH_PAUSE_MAX=str(4 * pause),
            POLLER_CONCURRENCY="16",
        )  # fmt: skip
        del env["POLLER_AUTH_TOKEN"]  # AK/SK instead
        async with replicas(env, tmp_path, store):
            ids = [await sim.create_job(running_job(0.5)) for _ in range(30)]
            await store.enqueue(*ids)
            # Two probes fail: the first poll of all (the key was unknown), then the one after
            # the first pause.
            await eventually(lambda: _bad_signatures(sim, 2), within=30)
            second = [a for a in await sim.requests() if a.status == 401][1]
            # Every replica now waits out a pause of 2 x 2 s.  Meanwhile the secret becomes the
            # right one: the next probe is accepted and every replica resumes.
            await sim.admin(
                "POST", "/_sim/aksk/secret", {"access_key": "AKTEST", "secret_key": WRONG_SECRET}
            )
            await events_until(store, all_final(ids), within=60)
        arrivals = await sim.requests()
        stats = await sim.stats()
    bad = [a for a in arrivals if a.status == 401]
    assert len(bad) == 2 == stats["by_aksk"]["signature_failure"]
    assert stats["by_aksk"]["locked"] == 0  # the key pair was never locked
    first = bad[0]
    assert arrivals[0] == first  # the very first request was the probe; nobody else sent
    # the second bad signature waited out the first pause (on Redis's clock, less a rounding)
    assert second.at - first.at >= pause - 0.05
    after_second = [a for a in arrivals if a.at > second.at]
    # the pause after the second 401 doubled, and the first request after it was one probe:
    # nothing went out until it was answered
    assert after_second[0].at - second.at >= 2 * pause - 0.05
    assert after_second[0].status == 200
    print(f"\nwrong secret key, {REPLICAS} replicas x 16 polls: {len(bad)} bad signatures "
          f"({stats['requests']} requests in all)")  # fmt: skip


async def _bad_signatures(sim: Emulator, count: int) -> bool:
    return int((await sim.stats())["by_aksk"]["signature_failure"]) >= count
