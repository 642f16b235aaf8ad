"""The edge around the shared limits in virtual time (``ManualClock``): one process alone
(no Redis, or a Redis that fails), and the answers of the scripts as a store gives them."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import anyio
from redis.exceptions import ConnectionError as RedisConnectionError
from structlog.testing import capture_logs

from poller.clock import ManualClock, settle
from poller.limits import Cause, LimitPolicy, scope_of
from poller.shared_limits import LOCAL_PROBE, Answer, Held, Pass, SharedLimits
from poller.telemetry import Metrics
from tests.scrape import scraped

S = scope_of("AKID")


async def admit_all(limits: SharedLimits, n: int, scope: str = S) -> list[Pass | Held]:
    results: list[Pass | Held] = []

    async def one() -> None:
        results.append(await limits.admit(scope))

    async with anyio.create_task_group() as tg:
        for _ in range(n):
            tg.start_soon(one)
    return results


async def test_one_poll_probes_an_unknown_key_and_the_others_go_once_it_works() -> None:
    clock = ManualClock()
    limits = SharedLimits(clock=clock)
    results: list[Pass | Held] = []
    async with anyio.create_task_group() as tg:
        for _ in range(10):
            tg.start_soon(lambda: _append(limits, results))
        await settle()
        assert results == [Pass(S, LOCAL_PROBE)]  # one goes, nine wait for its answer
        await limits.settle(results[0], Answer.ACCEPTED)  # type: ignore[arg-type]
    assert results[1:] == [Pass(S)] * 9
    assert clock.monotonic() == 1000.0  # nobody waited on the clock


async def _append(limits: SharedLimits, results: list[Pass | Held], scope: str = S) -> None:
    results.append(await limits.admit(scope))


async def test_alone_a_401_holds_every_poll_then_one_probe_goes_per_window() -> None:
    clock = ManualClock()
    metrics = Metrics()
    limits = SharedLimits(clock=clock, metrics=metrics)
    results: list[Pass | Held] = []
    async with anyio.create_task_group() as tg:
        for _ in range(10):
            tg.start_soon(lambda: _append(limits, results))
        await settle()
        trip = await limits.settle(results[0], Answer.UNAUTHORIZED)  # type: ignore[arg-type]
    assert trip is not None
    assert (trip.cause, trip.length, trip.began) == (
        Cause.UNAUTHORIZED,
        30.0,
        True,
    )
    assert results[1:] == [Held(Cause.UNAUTHORIZED, 30.0)] * 9
    assert scraped(metrics, "poller_limit_pause_seconds", cause="unauthorized") == 30.0
    await clock.advance(30.0)
    probes = await admit_all(limits, 1)
    assert probes == [Pass(S, LOCAL_PROBE)]  # half open: the next one probes
    assert await _first_of(limits, clock) is None  # while it is out, the next poll waits
    trip = await limits.settle(probes[0], Answer.UNAUTHORIZED)  # type: ignore[arg-type]
    assert trip is not None
    assert trip.length == 60.0
    assert scraped(metrics, "poller_limit_trips_total", cause="unauthorized") == 2
    assert scraped(metrics, "poller_limit_held_total", cause="unauthorized") >= 9


async def _first_of(limits: SharedLimits, clock: ManualClock) -> Pass | Held | None:
    """What a second poll gets while the probe is out (it waits: nothing yet)."""
    results: list[Pass | Held] = []
    async with anyio.create_task_group() as tg:
        tg.start_soon(lambda: _append(limits, results))
        await settle()
        tg.cancel_scope.cancel()
    return results[0] if results else None


async def test_a_probe_that_gets_no_answer_hands_over_to_the_next_poll() -> None:
    clock = ManualClock()
    limits = SharedLimits(clock=clock)
    results: list[Pass | Held] = []
    async with anyio.create_task_group() as tg:
        for _ in range(3):
            tg.start_soon(lambda: _append(limits, results))
        await settle()
        assert len(results) == 1
        await limits.settle(results[0], Answer.INCONCLUSIVE)  # a timeout, a 503
        await settle()
        assert results[1:] == [Pass(S, LOCAL_PROBE)]  # the next one probes; one still waits
        await limits.settle(results[1], Answer.ACCEPTED)
    assert results[2] == Pass(S)


async def test_a_429_holds_every_poll_for_its_retry_after() -> None:
    clock = ManualClock()
    limits = SharedLimits(clock=clock)
    ticket = await limits.admit("")
    assert ticket == Pass("")
    trip = await limits.settle(ticket, Answer.THROTTLED, retry_after=3.0)  # type: ignore[arg-type]
    assert trip is not None
    assert (trip.length, trip.began) == (3.0, True)
    assert await limits.admit("") == Held(Cause.THROTTLED, 3.0)
    assert await limits.admit(S) == Held(Cause.THROTTLED, 3.0)  # whatever the credentials
    await clock.advance(3.0)
    assert await limits.admit("") == Pass("")


class DeadStore:
    """A Redis that never answers: every call fails at once (connection refused)."""

    def __init__(self) -> None:
        self.calls = 0
        self.healed = False

    async def gate_limits(self, mode: str, *args: Any) -> Sequence[Any]:
        self.calls += 1
        if self.healed:
            return ["peek" if mode == "peek" else "go", 0, b"1", 0, b"ok", 0, 0, 0]
        raise RedisConnectionError("Connection refused")

    async def report_limits(self, *args: Any) -> Sequence[Any]:
        self.calls += 1
        raise RedisConnectionError("Connection refused")


async def test_an_unreachable_redis_never_holds_a_poll_and_is_logged_once() -> None:
    clock = ManualClock()
    store = DeadStore()
    metrics = Metrics()
    with capture_logs() as logs:
        limits = SharedLimits(store, rate=50, clock=clock, metrics=metrics)
        results = await admit_all(limits, 5, "")  # a token: rate limit only
        assert results == [Pass("")] * 5  # fail open: no rate limit, nothing held
        assert clock.monotonic() == 1000.0
        # under AK/SK the pauses are kept alone, as one process would: one probe, then pauses
        probe = await limits.admit(S)
        assert probe == Pass(S, LOCAL_PROBE)
        trip = await limits.settle(probe, Answer.UNAUTHORIZED)
        assert trip is not None
        assert (trip.length, trip.began) == (30.0, True)
        assert await limits.admit(S) == Held(Cause.UNAUTHORIZED, 30.0)
        await clock.advance(30.0)
        store.healed = True
        assert await limits.admit("") == Pass("")  # asked again after its backoff: back
    warnings = [e for e in logs if e["log_level"] == "warning"]
    assert len(warnings) == 1
    assert "shared limits unavailable" in warnings[0]["event"]
    assert any(e["event"] == "shared limits available again" for e in logs)
    assert store.calls <= 3  # after the first failure it waited for its backoff
    assert scraped(metrics, "poller_redis_errors_total", op="limits") == 1


class HangingStore(DeadStore):
    async def gate_limits(self, mode: str, *args: Any) -> Sequence[Any]:
        self.calls += 1
        await anyio.Event().wait()
        raise AssertionError("unreachable")


async def test_a_redis_that_hangs_costs_a_poll_at_most_the_call_timeout() -> None:
    limits = SharedLimits(HangingStore(), rate=50, clock=ManualClock(), call_timeout=0.05)
    with anyio.fail_after(5):
        assert await limits.admit("") == Pass("")
        assert await limits.admit("") == Pass("")  # and no second wait: it goes on alone
    assert not limits.shared


class ScriptedStore:
    """Answers the gate with the replies given, in order."""

    def __init__(self, replies: list[list[Any]]) -> None:
        self.replies = replies
        self.asked: list[tuple[Any, ...]] = []

    async def gate_limits(self, *args: Any) -> Sequence[Any]:
        self.asked.append(args)
        return self.replies.pop(0)

    async def report_limits(self, *args: Any) -> Sequence[Any]:
        self.asked.append(args)
        return self.replies.pop(0)


def tail(
    stamp: int, throttle: int = 0, status: str = "ok", auth: int = 0, probe: int = 0
) -> list[Any]:
    return [str(stamp).encode(), throttle, status.encode(), 0, auth, probe]


async def test_a_poll_waits_for_its_rate_limit_slot_on_the_clock() -> None:
    clock = ManualClock()
    store = ScriptedStore([[b"rate", 20, *tail(1)], [b"go", 0, *tail(2)]])
    limits = SharedLimits(store, rate=50, clock=clock)
    results: list[Pass | Held] = []
    async with anyio.create_task_group() as tg:
        tg.start_soon(lambda: _append(limits, results, ""))
        await clock.run_until(lambda: bool(results))
    assert results == [Pass("")]
    assert 0.02 <= clock.monotonic() - 1000.0 <= 0.026  # the slot, and a little spread
    assert store.asked[0][1:3] == (22_449, 2)  # 50/s: 49 per 1.1 s (in µs, up), a burst of 2


async def test_the_script_s_verdict_holds_a_poll_the_view_had_let_go() -> None:
    store = ScriptedStore([[b"paused", 0, *tail(1, throttle=1500)]])
    limits = SharedLimits(store, rate=50, clock=ManualClock())
    assert await limits.admit("") == Held(Cause.THROTTLED, 1.5)
    # and from now on the view holds it without asking
    assert await limits.admit("") == Held(Cause.THROTTLED, 1.5)
    assert len(store.asked) == 1


async def test_a_probe_granted_by_redis_carries_its_lease_and_is_told_the_answer() -> None:
    store = ScriptedStore([
        [b"probe", 0, *tail(1, status="unknown", probe=15000)],
        [b"recovered", 0, *tail(2)],
    ])  # fmt: skip
    limits = SharedLimits(store, LimitPolicy(), clock=ManualClock(), owner="r1")
    ticket = await limits.admit(S)
    assert isinstance(ticket, Pass)
    assert ticket.probe.startswith("r1:")
    assert store.asked[0][3:5] == (S, ticket.probe)
    await limits.settle(ticket, Answer.ACCEPTED)
    assert store.asked[1][:3] == ("ok", S, ticket.probe)
    assert await limits.admit(S) == Pass(S)  # known to work: no Redis call at all
    assert len(store.asked) == 2
