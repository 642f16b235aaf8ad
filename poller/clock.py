"""Time, injected: the one clock (wall time, monotonic time, sleep) that the worker, the HTTP
client and the IAM token read, and the estimate of Redis's clock that replicas share.

Tests pass a :class:`ManualClock` and move time themselves, so a worker's hour-long Redis
outage or a wall-clock step runs in milliseconds.
"""

from __future__ import annotations

import asyncio
import heapq
import itertools
import time
from collections import deque
from collections.abc import Awaitable, Callable
from typing import Protocol

import anyio


class Clock(Protocol):
    """Where time comes from."""

    def now(self) -> float:
        """Wall-clock time, epoch seconds (may step when the host's clock is set)."""
        ...

    def monotonic(self) -> float:
        """Seconds that only ever grow at the rate of real time, from an arbitrary origin."""
        ...

    async def sleep(self, seconds: float) -> None:
        """Wait ``seconds``."""
        ...

    async def wait(self, event: anyio.Event, seconds: float) -> bool:
        """Wait for ``event`` at most ``seconds``; True when it was set."""
        ...


class SystemClock:
    """The real clock."""

    def now(self) -> float:
        return time.time()

    def monotonic(self) -> float:
        return time.monotonic()

    async def sleep(self, seconds: float) -> None:
        await anyio.sleep(seconds)

    async def wait(self, event: anyio.Event, seconds: float) -> bool:
        with anyio.move_on_after(seconds):
            await event.wait()
        return event.is_set()


SYSTEM_CLOCK = SystemClock()


class ManualClock:
    """A clock whose time moves only when :meth:`advance` (or :meth:`run_until_idle`) says.

    ``sleep`` and ``wait`` register a deadline; advancing past it wakes the sleeper.  The wall
    clock can be stepped apart from the monotonic one (:meth:`step_wall`), as NTP or an
    operator would.
    """

    def __init__(self, start: float = 1_764_201_600.0) -> None:
        self._mono = 1000.0
        self._wall_offset = start - self._mono
        self._sleepers: list[tuple[float, int, anyio.Event]] = []
        self._order = itertools.count()

    def now(self) -> float:
        return self._mono + self._wall_offset

    def monotonic(self) -> float:
        return self._mono

    def step_wall(self, seconds: float) -> None:
        """Set the wall clock ``seconds`` forward (or back); monotonic time is untouched."""
        self._wall_offset += seconds

    async def sleep(self, seconds: float) -> None:
        wake = anyio.Event()
        heapq.heappush(self._sleepers, (self._mono + max(0.0, seconds), next(self._order), wake))
        await wake.wait()

    async def wait(self, event: anyio.Event, seconds: float) -> bool:
        if event.is_set():
            return True
        async with anyio.create_task_group() as tg:

            async def expire() -> None:
                await self.sleep(seconds)
                tg.cancel_scope.cancel()

            tg.start_soon(expire)
            await event.wait()
            tg.cancel_scope.cancel()
        return event.is_set()

    @property
    def next_deadline(self) -> float | None:
        """When the earliest sleeper wakes (monotonic), if any sleeps."""
        return self._sleepers[0][0] if self._sleepers else None

    async def advance(self, seconds: float) -> None:
        """Move time forward, waking every sleeper whose deadline passed, in order."""
        target = self._mono + max(0.0, seconds)
        while self._sleepers and self._sleepers[0][0] <= target:
            deadline, _, wake = heapq.heappop(self._sleepers)
            self._mono = max(self._mono, deadline)
            wake.set()
            await settle()
        self._mono = target
        await settle()

    async def run_until(
        self, condition: Callable[[], bool], *, limit: float = 1e7, steps: int = 1_000_000
    ) -> None:
        """Jump from sleeper to sleeper until ``condition()`` holds (virtual time, no waiting).

        Raises ``TimeoutError`` when ``limit`` virtual seconds or ``steps`` jumps pass first.
        """
        end = self._mono + limit
        for _ in range(steps):
            await settle()
            if condition():
                return
            deadline = self.next_deadline
            if deadline is None or deadline > end:
                break
            await self.advance(deadline - self._mono)
        if not condition():
            raise TimeoutError("condition not reached in virtual time")


async def settle(max_rounds: int = 10_000) -> None:
    """Yield to the event loop until every other task waits on something (asyncio).

    ``anyio.wait_all_tasks_blocked`` does the same but sleeps 0.1 s of real time whenever a
    task is still runnable, which would make virtual time crawl.
    """
    this = asyncio.current_task()
    for _ in range(max_rounds):
        await asyncio.sleep(0)
        if all(_blocked(task) for task in asyncio.all_tasks() if task is not this):
            return


def _blocked(task: asyncio.Task[object]) -> bool:
    waiter = getattr(task, "_fut_waiter", None)  # what anyio's own check reads
    return waiter is not None and not waiter.done()


class ServerClock:
    """Redis's clock as this replica sees it: local monotonic time plus a measured offset.

    Every sample brackets one ``TIME`` call with two monotonic readings; the offset comes from
    the sample with the shortest round trip among the last ``window`` (its error is at most
    half of that round trip).  Monotonic time makes it immune to steps of this host's wall
    clock, and a window of samples means a slow moment never stops the offset from being
    corrected: the best recent sample always wins.
    """

    def __init__(self, local: Clock, window: int = 16) -> None:
        self._local = local
        self._samples: deque[tuple[float, float]] = deque(maxlen=window)  # (round trip, offset)
        self._offset: float | None = None

    @property
    def synced(self) -> bool:
        return self._offset is not None

    def now(self) -> float:
        """Now on Redis's clock (the local wall clock until the first sample)."""
        if self._offset is None:
            return self._local.now()
        return self._local.monotonic() + self._offset

    def add_sample(self, sent: float, server: float, received: float) -> None:
        """One measurement: monotonic ``sent``/``received`` around a server reading."""
        self._samples.append((received - sent, server - (sent + received) / 2))
        self._offset = min(self._samples)[1]

    async def sync(self, server_time: Callable[[], Awaitable[float]]) -> None:
        """Take one sample by calling ``server_time`` (Redis ``TIME``)."""
        sent = self._local.monotonic()
        server = await server_time()
        self.add_sample(sent, server, self._local.monotonic())
