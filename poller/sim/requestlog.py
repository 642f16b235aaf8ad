"""When API requests arrived, for checks that count them over time (a rate limit, a pause),
and the deterministic 429 burst that starts such a pause.

The log keeps the most recent :data:`LOG_CAPACITY` arrivals (older ones are dropped and
counted), each with the wall-clock moment its handler began and the status it was answered
with (``0``: the connection was reset).  The admin API serves it as ``GET /_sim/requests``.
"""

from __future__ import annotations

import bisect
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Final

LOG_CAPACITY: Final = 200_000


@dataclass(frozen=True, slots=True)
class Arrival:
    """One API request: when its handler began (epoch seconds) and its answer's status."""

    at: float
    status: int


class RequestLog:
    """The last ``capacity`` arrivals, in arrival order."""

    __slots__ = ("_entries", "capacity", "dropped")

    def __init__(self, capacity: int = LOG_CAPACITY) -> None:
        self.capacity = capacity
        self._entries: deque[Arrival] = deque(maxlen=capacity)
        self.dropped = 0

    def record(self, at: float, status: int) -> None:
        if len(self._entries) == self.capacity:
            self.dropped += 1
        self._entries.append(Arrival(at, status))

    def since(self, start: float = float("-inf")) -> list[Arrival]:
        """Arrivals at or after ``start``, oldest first."""
        return [a for a in self._entries if a.at >= start]

    def as_dict(self, start: float = float("-inf")) -> dict[str, object]:
        return {
            "requests": [[round(a.at, 6), a.status] for a in self.since(start)],
            "dropped": self.dropped,
            "capacity": self.capacity,
        }


def busiest_window(times: Sequence[float], window: float = 1.0) -> tuple[int, float]:
    """The most ``times`` in any half-open window ``[t, t + window)``, and the start of the
    first such window (``0.0`` when there are none).

    A window holding the most times can always be slid right until its start is one of them,
    so only windows starting at a time need counting: one pass over the sorted times.
    """
    ordered = sorted(times)
    best, start = 0, 0.0
    for i, t in enumerate(ordered):
        count = bisect.bisect_left(ordered, t + window, lo=i) - i
        if count > best:
            best, start = count, t
    return best, start


@dataclass(slots=True)
class ThrottleBurst:
    """Answer every API request with 429 for ``seconds`` from the first one after it was set,
    with ``Retry-After: retry_after``."""

    seconds: float
    retry_after: int
    began: float | None = None

    def applies(self, now: float) -> bool:
        """True when the request arriving ``now`` is in the burst (the first one starts it)."""
        if self.began is None:
            self.began = now
        return now < self.began + self.seconds

    def over(self, now: float) -> bool:
        return self.began is not None and now >= self.began + self.seconds
