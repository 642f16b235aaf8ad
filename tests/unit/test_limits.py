"""The pure parts of the shared limits: the rate limit's parameters (checked against a model
of the GCRA the script runs), the pause lengths, the emulator's sliding-window count, and the
view each replica decides from, in virtual time (plain numbers)."""

from __future__ import annotations

import math
import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from poller.limits import (
    AuthStatus,
    AwaitProbe,
    Cause,
    Go,
    Hold,
    LimitPolicy,
    LimitView,
    Probe,
    Snapshot,
    parse_gate,
    parse_report,
    parse_snapshot,
    rate_plan,
    scope_of,
)
from poller.sim.requestlog import RequestLog, ThrottleBurst, busiest_window

# --- the sliding-window count ----------------------------------------------------------------


def test_busiest_window_counts_half_open_windows() -> None:
    assert busiest_window([]) == (0, 0.0)
    assert busiest_window([5.0]) == (1, 5.0)
    # 0.0 and 1.0 are not in one window [t, t + 1): exactly a second apart
    assert busiest_window([0.0, 1.0, 2.0]) == (1, 0.0)
    assert busiest_window([0.0, 0.5, 0.99, 1.0, 1.2, 3.0]) == (4, 0.5)
    assert busiest_window([3.0, 0.2, 0.1], window=0.15) == (2, 0.1)  # any order


@given(st.lists(st.floats(0, 10, allow_nan=False), max_size=60), st.floats(0.01, 3))
def test_busiest_window_agrees_with_counting_every_window(times: list[float], w: float) -> None:
    # Brute force: a window starting anywhere holds no more than one starting at a time.
    starts = sorted({*times, *(t - w for t in times), *(math.nextafter(t, -1) for t in times)})
    brute = max((sum(s <= t < s + w for t in times) for s in starts), default=0)
    assert busiest_window(times, w)[0] == brute


def test_the_request_log_is_bounded_and_counts_what_it_dropped() -> None:
    log = RequestLog(capacity=3)
    for i in range(5):
        log.record(float(i), 200)
    assert [a.at for a in log.since()] == [2.0, 3.0, 4.0]
    assert log.dropped == 2
    assert [a.at for a in log.since(3.0)] == [3.0, 4.0]
    assert log.as_dict(4.0) == {"requests": [[4.0, 200]], "dropped": 2, "capacity": 3}


def test_a_throttle_burst_starts_at_its_first_request() -> None:
    burst = ThrottleBurst(seconds=0.5, retry_after=3)
    assert burst.applies(100.0)  # the first request starts it
    assert burst.applies(100.49)
    assert not burst.applies(100.5)
    assert burst.over(100.5)


# --- the rate limit ----------------------------------------------------------------------------


def gcra(requests: list[float], interval: float, burst: int) -> list[int]:
    """The times granted by ``schema.GATE_LIMITS``'s GCRA, in µs (a model: whole
    microseconds, the interval rounded up, as the script counts)."""
    step = math.ceil(interval * 1_000_000 - 1e-6)
    tat = -(10**18)
    granted = []
    for t in sorted(requests):
        now = round(t * 1_000_000)
        at = max(tat, now)
        if at + step - burst * step <= now:
            granted.append(now)
            tat = at + step
    return granted


US = 1_000_000


def greedy(seconds: float, step: float = 0.0005) -> list[float]:
    """Somebody asks every half millisecond: every slot is taken the moment it opens."""
    return [i * step for i in range(int(seconds / step))]


def test_burst_equal_to_the_rate_would_allow_twice_the_rate_in_a_second() -> None:
    # The limiter as it was (burst = rate): 50 at once, then one every 20 ms.
    granted = gcra(greedy(3.0), interval=1 / 50, burst=50)
    assert busiest_window(granted, US)[0] == 99


@pytest.mark.parametrize("rate", [0.5, 1, 2, 2.5, 7, 19, 20, 50, 100, 333.3, 1000])
def test_no_window_of_a_second_and_the_margin_holds_more_grants_than_the_rate(
    rate: float,
) -> None:
    plan = rate_plan(rate)
    granted = gcra(greedy(max(4.0, 8 / rate), plan.interval / 16), plan.interval, plan.burst)
    in_window = busiest_window(granted, round(plan.window * US))[0]
    assert in_window == plan.per_window  # the bound is tight...
    assert in_window <= max(1, math.floor(rate))  # ...and the promise kept
    assert busiest_window(granted, US)[0] <= max(1, rate)


@settings(max_examples=200, deadline=None)
@given(
    rate=st.floats(1, 400),
    gaps=st.lists(st.floats(0, 0.05), min_size=1, max_size=800),
)
def test_any_pattern_of_requests_keeps_to_the_rate(rate: float, gaps: list[float]) -> None:
    plan = rate_plan(rate)
    requests = list(itertools_accumulate(gaps))
    granted = gcra(requests, plan.interval, plan.burst)
    assert busiest_window(granted, round(plan.window * US))[0] <= math.floor(rate)


def itertools_accumulate(gaps: list[float]) -> list[float]:
    out, t = [], 0.0
    for gap in gaps:
        t += gap
        out.append(t)
    return out


def test_the_margin_costs_throughput_the_burst_absorbs_late_retries() -> None:
    plan = rate_plan(50)
    assert plan.burst == 2
    assert plan.sustained == pytest.approx(49 / 1.1)  # 44.5 requests/s
    assert rate_plan(10).burst == 1
    with pytest.raises(ValueError, match="positive"):
        rate_plan(0)


# --- pause lengths -------------------------------------------------------------------------


def test_auth_pauses_double_from_30_s_to_5_min_and_429_pauses_are_bounded() -> None:
    policy = LimitPolicy()
    assert policy.auth_pause_table() == (30.0, 60.0, 120.0, 240.0, 300.0)
    assert policy.auth_pause_for(10_000) == 300.0
    assert policy.throttle_pause_for(None) == 2.0
    assert policy.throttle_pause_for(3.0) == 3.0
    assert policy.throttle_pause_for(0.0) == 0.5  # "Retry-After: 0" still slows down
    assert policy.throttle_pause_for(3600.0) == 60.0
    assert LimitPolicy(auth_pause=2, auth_pause_max=2).auth_pause_table() == (2.0,)


def test_a_scope_names_a_key_without_revealing_it() -> None:
    assert scope_of("AKID") == scope_of("AKID") != scope_of("AKID2")
    assert "AKID" not in scope_of("AKID")
    assert len(scope_of("AKID")) == 16


# --- what the scripts answer ---------------------------------------------------------------


def test_replies_parse_and_junk_does_not() -> None:
    tail = [b"1700000000123456", 1500, b"paused", 2, 30000, 0]
    assert parse_snapshot(tail) == Snapshot(
        stamp=1_700_000_000_123_456, throttle=1.5, status=AuthStatus.PAUSED, failures=2, auth=30.0
    )
    gate = parse_gate([b"rate", 12, *tail])
    assert (gate.verdict, gate.wait) == ("rate", 0.012)
    report = parse_report([b"tripped", 60000, *tail])
    assert (report.result, report.length) == ("tripped", 60.0)
    with pytest.raises(ValueError, match="expected 6 values"):
        parse_snapshot(tail[:5])
    with pytest.raises(ValueError, match="sleepy"):
        parse_snapshot([*tail[:2], b"sleepy", *tail[3:]])


# --- the view ------------------------------------------------------------------------------

S = scope_of("AKID")


def snap(stamp: int, **fields: object) -> Snapshot:
    return Snapshot(stamp=stamp, **fields)  # type: ignore[arg-type]


def test_an_unknown_key_is_probed_before_anything_else_goes() -> None:
    view = LimitView()
    assert view.decide("", 0.0) == Go()  # a token risks no lock: nothing to probe
    assert view.decide(S, 0.0) == Probe()
    view.take_local_probe(S, 0.0)
    assert view.decide(S, 1.0) == AwaitProbe(15.0)  # the others wait for its answer
    assert view.accepted_locally(S)
    assert view.decide(S, 1.0) == Go()
    assert view.settled(S)


def test_alone_a_401_pauses_30_s_doubling_and_a_success_resets_it() -> None:
    view = LimitView()
    view.take_local_probe(S, 0.0)
    assert view.unauthorized_locally(S, 0.0) == 30.0
    assert view.decide(S, 10.0) == Hold(Cause.UNAUTHORIZED, 20.0)
    assert view.unauthorized_locally(S, 10.0) is None  # sent before the pause: no longer pause
    assert view.decide(S, 30.0) == Probe()  # half open: one probe first
    view.take_local_probe(S, 30.0)
    assert view.decide(S, 31.0) == AwaitProbe(45.0)
    assert view.unauthorized_locally(S, 31.0) == 60.0
    assert view.remaining(Cause.UNAUTHORIZED, 31.0) == 60.0
    assert view.decide(S, 91.0) == Probe()
    view.take_local_probe(S, 91.0)
    assert view.accepted_locally(S)
    assert view.decide(S, 91.0) == Go()
    view.take_local_probe(S, 92.0)  # (never needed once it works, but a 401 now starts over)
    assert view.unauthorized_locally(S, 92.0) == 30.0


def test_a_probe_that_never_answers_lets_another_go_after_its_lease() -> None:
    view = LimitView(LimitPolicy(probe_lease=5.0))
    view.take_local_probe(S, 0.0)
    assert view.decide(S, 4.9) == AwaitProbe(5.0)
    assert view.decide(S, 5.0) == Probe()


def test_a_429_alone_pauses_for_its_retry_after_and_is_never_shortened() -> None:
    view = LimitView()
    assert view.throttled_locally(3.0, 0.0) == (3.0, True)
    assert view.throttled_locally(1.0, 0.5) == (1.0, False)  # in flight: no shorter pause
    assert view.decide("", 2.9) == Hold(Cause.THROTTLED, pytest.approx(0.1))
    assert view.decide(S, 2.9) == Hold(Cause.THROTTLED, pytest.approx(0.1))
    assert view.decide("", 3.0) == Go()


def test_the_shared_state_is_taken_and_an_overtaken_reply_is_not() -> None:
    view = LimitView()
    changed = view.apply(S, snap(2_000_000, status=AuthStatus.PAUSED, failures=1, auth=30.0), 100)
    assert changed
    assert view.decide(S, 110.0) == Hold(Cause.UNAUTHORIZED, 20.0)
    # a reply read before that one (another connection's, slower) changes nothing
    assert not view.apply(S, snap(1_999_000, status=AuthStatus.OK), 101.0)
    assert view.decide(S, 110.0) == Hold(Cause.UNAUTHORIZED, 20.0)
    # a newer one does: another replica's probe is in flight...
    assert view.apply(S, snap(2_000_001, status=AuthStatus.PAUSED, failures=1, probe=15.0), 130)
    assert view.decide(S, 131.0) == AwaitProbe(145.0)
    # ...and was accepted
    assert view.apply(S, snap(2_000_002, status=AuthStatus.OK), 132.0)
    assert view.decide(S, 132.0) == Go()
    # Redis's clock stepped back a lot (a failover): taken, not ignored forever
    assert view.apply("", snap(5, throttle=2.0), 133.0)
    assert view.decide("", 134.0) == Hold(Cause.THROTTLED, 1.0)


def test_a_pause_decided_alone_outlasts_a_shared_state_that_knows_nothing_of_it() -> None:
    view = LimitView()
    view.apply(S, snap(1, status=AuthStatus.OK), 0.0)
    assert view.unauthorized_locally(S, 0.0) == 30.0  # Redis was down for that 401
    view.apply(S, snap(2, status=AuthStatus.OK), 1.0)  # Redis back, and never heard of it
    assert view.decide(S, 1.0) == Hold(Cause.UNAUTHORIZED, 29.0)
    assert view.decide(S, 30.0) == Probe()
    assert not view.settled(S)  # so an accepted answer is worth telling


def test_the_gauge_reads_the_longest_pause_of_each_cause() -> None:
    view = LimitView()
    assert view.remaining(Cause.UNAUTHORIZED, 0.0) == view.remaining(Cause.THROTTLED, 0.0) == 0
    view.apply("x", snap(1, status=AuthStatus.PAUSED, auth=10.0), 0.0)
    view.apply("y", snap(2, status=AuthStatus.PAUSED, auth=20.0, throttle=1.0), 0.0)
    assert view.remaining(Cause.UNAUTHORIZED, 5.0) == 15.0
    assert view.remaining(Cause.THROTTLED, 0.5) == 0.5


def test_random_histories_never_let_two_probes_out_at_once() -> None:
    rng = random.Random(5)
    lease = 3.0
    view = LimitView(LimitPolicy(probe_lease=lease))
    now, started = 0.0, None
    for _ in range(5000):
        now += rng.random()
        if started is not None and rng.random() < 0.3:  # the probe is answered
            started = None
            if rng.random() < 0.5:
                view.unauthorized_locally(S, now)
            else:
                view.accepted_locally(S)
                view.take_local_probe(S, now)
                view.unauthorized_locally(S, now)  # and the key breaks again
            continue
        if isinstance(view.decide(S, now), Probe):
            # a second probe only once the first one's lease lapsed
            assert started is None or now - started >= lease
            view.take_local_probe(S, now)
            started = now
