"""The one backoff formula of the project, for every retry loop (polls, Redis, IAM, intake).

``delay = uniform(0, min(cap, initial * 2**(attempt - 1)))`` ("full jitter"), with the exponent
capped before it is computed, so attempt 10,000 costs the same as attempt 60 and never
overflows.  ``floor`` (a server's ``Retry-After``) is honoured: the delay is never shorter.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from typing import Final

_MAX_EXPONENT: Final = 62  # 2.0**62 is finite; any cap a person sets is far below it


def exponential_ceiling(attempt: int, initial: float, cap: float) -> float:
    """``min(cap, initial * 2**(attempt - 1))`` for ``attempt >= 1``, without overflow."""
    exponent = min(max(0, attempt - 1), _MAX_EXPONENT)
    return min(cap, initial * 2.0**exponent)


def full_jitter(
    attempt: int,
    *,
    initial: float,
    cap: float,
    rng: random.Random,
    floor: float | None = None,
) -> float:
    """A delay drawn uniformly below the capped exponential ceiling, at least ``floor``."""
    delay = rng.uniform(0.0, exponential_ceiling(attempt, initial, cap))
    if floor is not None and floor > 0:
        delay = max(delay, floor)
    return delay


@dataclass(slots=True)
class Backoff:
    """Consecutive-failure bookkeeping for one retry loop: ``failed()`` says how long to wait.

    ``succeeded()`` resets it.  Small ``initial`` values make the first retries quick (a blip),
    and ``cap`` bounds the wait during a long outage.
    """

    initial: float = 0.1
    cap: float = 5.0
    rng: random.Random | None = None
    failures: int = 0

    def failed(self) -> float:
        """Count one more consecutive failure and return the delay before the next try."""
        self.failures += 1
        return full_jitter(self.failures, initial=self.initial, cap=self.cap, rng=self.rng or _RNG)

    def succeeded(self) -> None:
        self.failures = 0


_RNG: Final = random.Random()
