"""How the forwarder waits between delivery attempts: capped full-jitter backoff, with a
webhook's Retry-After as the floor, itself capped."""

from __future__ import annotations

import random

from poller.forward import Retries

RETRIES = Retries(max_attempts=5, backoff_initial=1.0, backoff_max=8.0, retry_after_max=30.0)


def test_each_delay_stays_under_the_attempts_capped_ceiling() -> None:
    rng = random.Random(7)
    for attempt, ceiling in [(1, 1.0), (2, 2.0), (3, 4.0), (4, 8.0), (9, 8.0)]:
        delays = [RETRIES.delay(attempt, None, rng) for _ in range(500)]
        assert all(0.0 <= d <= ceiling for d in delays)
        assert max(delays) > ceiling * 0.9  # the whole range is drawn from, not a constant


def test_a_retry_after_is_the_floor_and_is_capped() -> None:
    rng = random.Random(7)
    assert all(RETRIES.delay(1, 5.0, rng) == 5.0 for _ in range(100))
    assert all(RETRIES.delay(1, 3600.0, rng) == 30.0 for _ in range(100))
    assert all(5.0 <= RETRIES.delay(4, 5.0, rng) <= 8.0 for _ in range(100))
