"""The shared limits' scripts on a real Redis, and several replicas' :class:`SharedLimits` (and
workers) sharing them in one process: one probe across all, pauses that reach everyone, a
Redis that dies."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import anyio
import pytest
from structlog.testing import capture_logs

from poller.config import Secret
from poller.limits import (
    AuthStatus,
    Cause,
    GateReply,
    LimitPolicy,
    ReportReply,
    parse_gate,
    parse_report,
    rate_plan,
    scope_of,
)
from poller.localredis import LocalRedis
from poller.shared_limits import REFRESH, Answer, Held, Pass, SharedLimits
from poller.sim import SimConfig, running_sim
from poller.sim.requestlog import busiest_window
from poller.store import Keys, Store, connect
from tests.integration.harness import (
    PROJECT,
    eventually,
    fast_settings,
    quick_job,
    running_worker,
)

S = scope_of("AKID")
TABLE = [30_000, 60_000, 120_000, 240_000, 300_000]


async def gate(store: Store, owner: str, scope: str = S, *, lease_ms: int = 15_000) -> GateReply:
    return parse_gate(await store.gate_limits("go", 0, 1, scope, owner, lease_ms))


async def report(
    store: Store, what: str, owner: str = "", scope: str = S, pause_ms: int = 0
) -> ReportReply:
    return parse_report(await store.report_limits(what, scope, owner, pause_ms, TABLE))


async def end_pause(store: Store, scope: str = S) -> None:
    """Make the key's pause end now, as time would (its failure count kept)."""
    raw = await store.redis.hget(store.keys.limits, f"auth:{scope}")
    _, failures, _, since = raw.decode().split(":")
    now_ms = int((await store.server_time()) * 1000)
    await store.redis.hset(store.keys.limits, f"auth:{scope}", f"n:{failures}:{now_ms - 1}:{since}")


# --- the scripts ------------------------------------------------------------------------------


async def test_concurrent_grants_never_exceed_the_rate_in_any_window(store: Store) -> None:
    rate = 200
    plan = rate_plan(rate)
    stamps: list[float] = []
    end = time.monotonic() + 1.5

    async def asker() -> None:
        while time.monotonic() < end:
            reply = parse_gate(
                await store.gate_limits("go", plan.interval_us, plan.burst, "", "x", 1000)
            )
            if reply.verdict == "go":
                stamps.append(reply.snapshot.stamp / 1e6)  # Redis's clock when it granted
            else:
                await anyio.sleep(reply.wait)

    async with anyio.create_task_group() as tg:
        for _ in range(20):
            tg.start_soon(asker)
    assert busiest_window(stamps, plan.window)[0] <= rate
    assert busiest_window(stamps, 1.0)[0] <= rate
    assert len(stamps) >= 0.6 * plan.sustained * 1.5  # the limiter was the bottleneck


async def test_a_429_pause_is_set_extended_and_never_shortened(store: Store) -> None:
    first = await report(store, "throttled", scope="", pause_ms=3000)
    assert first.result == "tripped"
    assert 2.9 <= first.snapshot.throttle <= 3.002  # (whole ms, rounded up)
    assert (await report(store, "throttled", scope="", pause_ms=1000)).result == "same"
    assert (await report(store, "throttled", scope="", pause_ms=5000)).result == "extended"
    held = await gate(store, "o", scope="")
    assert held.verdict == "paused"
    assert 4.9 <= held.snapshot.throttle <= 5.002
    assert (await gate(store, "o", scope=S)).verdict == "paused"  # for every key


async def test_a_key_is_probed_paused_doubled_and_reset_by_one_request_at_a_time(
    store: Store,
) -> None:
    probe = await gate(store, "a")
    assert probe.verdict == "probe"  # unknown: the first request is the probe
    assert probe.snapshot.status is AuthStatus.UNKNOWN
    other = await gate(store, "b")
    assert other.verdict == "paused"
    assert other.snapshot.probe > 14.0  # ...and the others wait for it
    tripped = await report(store, "unauthorized", "a")
    assert (tripped.result, tripped.length) == ("tripped", 30.0)
    assert (tripped.snapshot.status, tripped.snapshot.failures) == (AuthStatus.PAUSED, 1)
    assert tripped.snapshot.probe == 0
    # a 401 of a request sent before the pause began neither lengthens nor counts
    assert (await report(store, "unauthorized", "")).result == "same"
    assert (await gate(store, "c")).verdict == "paused"
    await end_pause(store)
    second = await gate(store, "c")
    assert second.verdict == "probe"  # half open
    assert (await gate(store, "d")).verdict == "paused"
    doubled = await report(store, "unauthorized", "c")
    assert (doubled.length, doubled.snapshot.failures) == (60.0, 2)
    await end_pause(store)
    third = await gate(store, "e")
    assert third.verdict == "probe"
    recovered = await report(store, "ok", "e")
    assert recovered.result == "recovered"
    assert (recovered.snapshot.status, recovered.snapshot.failures) == (AuthStatus.OK, 0)
    assert (await gate(store, "f")).verdict == "go"  # works: no probe any more
    assert (await report(store, "ok", "f")).result == "same"


async def test_fifty_at_once_make_one_probe(store: Store) -> None:
    verdicts: list[str] = []

    async def one(i: int) -> None:
        verdicts.append((await gate(store, f"owner-{i}")).verdict)

    async with anyio.create_task_group() as tg:
        for i in range(50):
            tg.start_soon(one, i)
    assert sorted(verdicts) == ["paused"] * 49 + ["probe"]


async def test_only_the_holder_releases_a_probe_and_a_lapsed_one_frees_itself(
    store: Store,
) -> None:
    assert (await gate(store, "a")).verdict == "probe"
    await report(store, "release", "b")  # not b's to give back
    assert (await gate(store, "c")).verdict == "paused"
    await report(store, "release", "a")  # no answer: the next request may probe
    assert (await gate(store, "c", lease_ms=50)).verdict == "probe"

    async def freed() -> bool:
        return (await gate(store, "d")).verdict == "probe"

    await eventually(freed, within=5)  # c never answered: its 50 ms lease lapsed


async def test_standings_of_keys_no_longer_used_are_dropped(store: Store) -> None:
    now_ms = int((await store.server_time()) * 1000)
    day = 86_400_000
    stale = {
        "auth:old-ok": f"ok:{now_ms - 2 * day}",
        "auth:old-paused": f"n:3:{now_ms - day}:{now_ms - 2 * day}",
        "probe:old": f"x:{now_ms - 1000}",
    }
    kept = {"auth:recent": f"ok:{now_ms - 1000}", "auth:still-paused": f"n:1:{now_ms + day}:1"}
    await store.redis.hset(store.keys.limits, mapping={**stale, **kept})
    assert (await gate(store, "a")).verdict == "probe"
    await report(store, "unauthorized", "a")
    fields = {k.decode() for k in await store.redis.hkeys(store.keys.limits)}
    assert fields == {*kept, f"auth:{S}"}


async def test_a_limits_key_of_another_type_is_read_as_no_pause(store: Store) -> None:
    await store.redis.set(store.keys.limits, "garbage")
    assert (await gate(store, "a")).verdict == "go"
    assert (await report(store, "unauthorized", "a")).result == "corrupt"
    assert await store.redis.get(store.keys.limits) == b"garbage"


# --- several replicas in one process ---------------------------------------------------------


@asynccontextmanager
async def fleet(
    redis_url: str, prefix: str, count: int, *, rate: float = 0.0, policy: LimitPolicy | None = None
) -> AsyncIterator[list[SharedLimits]]:
    stores = [Store(connect(redis_url), Keys(prefix)) for _ in range(count)]
    limits = [
        SharedLimits(s, policy, rate=rate, owner=f"replica-{i}") for i, s in enumerate(stores)
    ]
    try:
        async with anyio.create_task_group() as tg:
            for one in limits:
                tg.start_soon(one.maintain)
            yield limits
            tg.cancel_scope.cancel()
    finally:
        for s in stores:
            await s.redis.aclose()


async def _admit_into(limits: SharedLimits, scope: str, out: list[Pass | Held]) -> None:
    out.append(await limits.admit(scope))


@pytest.mark.parametrize("answer", [Answer.ACCEPTED, Answer.UNAUTHORIZED])
async def test_three_replicas_with_ten_polls_each_send_one_probe(
    redis_server: LocalRedis, prefix: str, answer: Answer
) -> None:
    async with fleet(redis_server.url, prefix, 3) as replicas:
        results: list[Pass | Held] = []
        async with anyio.create_task_group() as tg:
            for limits in replicas:
                for _ in range(10):
                    tg.start_soon(_admit_into, limits, S, results)
            await eventually(lambda: len(results) >= 1)
            await anyio.wait_all_tasks_blocked()
            assert len(results) == 1  # one probe across the fleet; 29 polls wait for it
            probe = results[0]
            assert isinstance(probe, Pass)
            assert probe.probe
            prober = replicas[int(probe.probe.split(":")[0].removeprefix("replica-"))]
            started = time.monotonic()
            await prober.settle(probe, answer)
        spread = time.monotonic() - started  # until the last replica had its answer
    rest = results[1:]
    if answer is Answer.ACCEPTED:
        assert rest == [Pass(S)] * 29
    else:
        assert all(isinstance(r, Held) and r.cause is Cause.UNAUTHORIZED for r in rest)
        assert all(isinstance(r, Held) and 28 < r.remaining <= 30.002 for r in rest), rest
    # the other replicas learn of it with their next refresh (every 0.1 s)
    assert spread < 2.0
    print(f"\nprobe answered {answer}: every replica knew after {spread * 1000:.0f} ms")


async def test_a_429_reaches_the_other_replicas_by_refresh_or_at_their_next_slot(
    redis_server: LocalRedis, prefix: str
) -> None:
    async with fleet(redis_server.url, prefix + ":norate", 2) as (a, b):
        ticket = await a.admit("")
        assert isinstance(ticket, Pass)
        started = time.monotonic()
        await a.settle(ticket, Answer.THROTTLED, retry_after=3.0)
        await eventually(lambda: b.check("") is not None, within=5)
        by_refresh = time.monotonic() - started
    async with fleet(redis_server.url, prefix + ":rate", 2, rate=100) as (a, b):
        ticket = await a.admit("")
        assert isinstance(ticket, Pass)
        await a.settle(ticket, Answer.THROTTLED, retry_after=3.0)
        held = await b.admit("")  # the slot's script reads the pause: no refresh needed
        assert isinstance(held, Held)
        assert held.cause is Cause.THROTTLED
        assert 2.5 < held.remaining <= 3.002
    assert by_refresh < 1.0
    print(f"\n429 without a rate limit: the other replica held polls after "
          f"{by_refresh * 1000:.0f} ms (refresh every {REFRESH * 1000:.0f} ms)")  # fmt: skip


async def test_a_dead_redis_never_holds_a_poll_and_is_said_once(
    own_redis: LocalRedis, prefix: str
) -> None:
    store = Store(connect(own_redis.url), Keys(prefix))
    try:
        with capture_logs() as logs:
            limits = SharedLimits(store, rate=10)
            assert await limits.admit("") == Pass("")
            own_redis.kill()
            with anyio.fail_after(5):
                passed = [await limits.admit("") for _ in range(50)]  # 10/s would take 5 s
            assert passed == [Pass("")] * 50
            probe = await limits.admit(S)  # AK/SK alone: this process probes itself
            assert isinstance(probe, Pass)
            assert probe.probe == "local"
            trip = await limits.settle(probe, Answer.UNAUTHORIZED)
            assert trip is not None
            assert trip.began
            assert isinstance(await limits.admit(S), Held)  # and keeps the pause
            own_redis.start()
            await eventually(lambda: _shared_again(limits), within=20)
        warnings = [e for e in logs if e["log_level"] == "warning"]
        assert len(warnings) == 1
    finally:
        await store.redis.aclose()


async def _shared_again(limits: SharedLimits) -> bool:
    await limits.admit("")  # asks Redis once its backoff has passed
    return limits.shared


# --- workers -------------------------------------------------------------------------------

SECRET_KEY = "sk-0123456789abcdef-very-secret"


async def test_every_replica_is_unready_while_the_key_is_paused(
    redis_server: LocalRedis, prefix: str, store: Store
) -> None:
    config = SimConfig(project_id=PROJECT, authenticators=(), access_keys={"AKTEST": SECRET_KEY})
    async with running_sim(config) as sim:
        ids = [await sim.create_job(quick_job()) for _ in range(40)]
        settings = fast_settings(
            redis_server.url, prefix, sim.url, auth_token=None, concurrency=2,
            access_key=Secret("AKTEST"), secret_key=Secret("wrong-secret"),
        )  # fmt: skip
        # the probe takes a while, so both replicas have claimed polls that wait for it
        await sim.set_faults(latency=1.5)  # (an idle replica looks for due jobs every second)
        async with running_worker(settings) as one, running_worker(settings) as two:

            async def both_registered() -> bool:
                return int(await store.redis.zcard(store.keys.replicas)) == 2

            await eventually(both_registered)
            await store.enqueue(*ids)
            await eventually(lambda: "paused" in one.health.auth_problem)
            await eventually(lambda: "paused" in two.health.auth_problem)
            stats = await sim.stats()
            problems = [one.health.problems(), two.health.problems()]
    assert stats["by_aksk"]["signature_failure"] == 1  # one probe, for both replicas
    assert all(any("every replica" in p for p in ps) for ps in problems)
