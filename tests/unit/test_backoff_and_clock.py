"""The one backoff formula, and the estimate of Redis's clock."""

from __future__ import annotations

import random

from poller.backoff import Backoff, exponential_ceiling, full_jitter
from poller.clock import ManualClock, ServerClock


def test_the_ceiling_doubles_from_initial_up_to_the_cap() -> None:
    assert [exponential_ceiling(n, 0.1, 1.0) for n in (1, 2, 3, 4, 5)] == [0.1, 0.2, 0.4, 0.8, 1.0]


def test_ten_thousand_failures_neither_overflow_nor_pass_the_cap() -> None:
    backoff = Backoff(initial=0.1, cap=5.0, rng=random.Random(7))
    delays = [backoff.failed() for _ in range(10_000)]
    assert backoff.failures == 10_000
    assert max(delays) <= 5.0
    assert exponential_ceiling(10**9, 0.1, 5.0) == 5.0


def test_success_resets_the_count() -> None:
    backoff = Backoff(initial=1.0, cap=64.0, rng=random.Random(1))
    for _ in range(5):
        backoff.failed()
    backoff.succeeded()
    assert backoff.failed() <= 1.0


def test_a_floor_such_as_retry_after_is_never_shortened() -> None:
    rng = random.Random(3)
    assert all(full_jitter(1, initial=1, cap=1, rng=rng, floor=9.0) == 9.0 for _ in range(50))


def test_the_offset_comes_from_the_fastest_recent_round_trip() -> None:
    clock = ManualClock()
    server = ServerClock(clock)
    truth = 100.0  # server = monotonic + 100
    server.add_sample(0.0, 0.0 + truth, 2.0)  # slow: the server read at the start, off by 1 s
    assert abs(server.now() - (clock.monotonic() + truth)) == 1.0
    server.add_sample(10.0, 10.0 + truth + 0.005, 10.01)  # fast
    assert abs(server.now() - (clock.monotonic() + truth)) <= 0.005


def test_a_slow_first_sample_is_replaced_once_it_leaves_the_window() -> None:
    clock = ManualClock()
    server = ServerClock(clock, window=4)
    server.add_sample(0.0, 50.0, 0.001)  # fast, but the server's clock was then set by 30 s
    for t in range(1, 5):
        server.add_sample(float(t), t + 80.0 + 0.03, t + 0.06)  # every later one takes 60 ms
    assert abs(server.now() - (clock.monotonic() + 80.0)) <= 0.03


def test_a_step_of_the_local_wall_clock_does_not_move_server_time() -> None:
    clock = ManualClock()
    server = ServerClock(clock)
    server.add_sample(clock.monotonic(), clock.now() + 5.0, clock.monotonic())
    before = server.now()
    clock.step_wall(30.0)
    assert server.now() == before


def test_before_any_sample_server_time_is_the_local_wall_clock() -> None:
    clock = ManualClock()
    assert ServerClock(clock).now() == clock.now()
