"""The leases one replica holds: polls in flight, their renewal, and giving them back."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import KW_ONLY, dataclass

import anyio
from redis.exceptions import RedisError

from poller.clock import Clock
from poller.ports import JobStore
from poller.telemetry import Metrics
from poller.tracking import JobState

ServerNow = Callable[[], float]
RedisFailed = Callable[[str, RedisError], None]


@dataclass(frozen=True, slots=True)
class ShutdownBudget:
    """How a drain spends ``shutdown_grace``: most on polls in flight, the rest on giving
    back what is left, so the process exits within the grace."""

    polls: float
    release: float
    hand_back: float

    @classmethod
    def of(cls, grace: float) -> ShutdownBudget:
        return cls(
            polls=grace * 0.8,
            release=min(2.0, max(0.2, grace * 0.1)),
            hand_back=max(0.5, grace * 0.1),
        )


@dataclass(slots=True)
class Lease:
    """One claimed job being polled; ``scope`` cancels its poll when the lease is lost."""

    member: str
    state: JobState
    scope: anyio.CancelScope
    committed: bool = False


@dataclass(eq=False, repr=False)
class Leases:
    """The in-flight map (keyed by member and lease token: a job re-claimed after a lapsed
    lease is a new entry), renewal, and release of leases not committed.

    ``server_now`` is the time on the Redis server's clock (what lease deadlines are in);
    ``clock`` paces the renewals; ``on_lost`` is told the member of a lease found lost."""

    store: JobStore
    clock: Clock
    server_now: ServerNow
    _: KW_ONLY
    lease_seconds: float
    budget: ShutdownBudget
    metrics: Metrics
    redis_failed: RedisFailed
    on_lost: Callable[[str], None]

    def __post_init__(self) -> None:
        self._held: dict[tuple[str, str], Lease] = {}
        self.idle = anyio.Event()
        self.idle.set()

    def __len__(self) -> int:
        return len(self._held)

    def __iter__(self) -> Iterator[Lease]:
        return iter(list(self._held.values()))

    def hold(self, member: str, state: JobState) -> Lease:
        """Record a fresh lease; its poll runs inside the returned lease's ``scope``."""
        lease = Lease(member, state, anyio.CancelScope())
        self._held[(member, state.token)] = lease
        self.idle = anyio.Event() if self.idle.is_set() else self.idle
        self.metrics.inflight.set(len(self._held))
        return lease

    def get(self, member: str, token: str) -> Lease | None:
        return self._held.get((member, token))

    async def finish(self, lease: Lease, *, retry_in: float, crash: str = "") -> None:
        """The poll ended: give back the lease unless it committed (due again in
        ``retry_in``; ``crash`` counts a poll that ended in an error)."""
        self._held.pop((lease.member, lease.state.token), None)
        if not lease.committed:
            await self.release(lease.state, retry_in, crash)
        self.metrics.inflight.set(len(self._held))
        if not self._held:
            self.idle.set()

    async def release(self, state: JobState, delay: float, crash: str = "") -> None:
        """Give an uncommitted lease back (shielded: it runs while a drain cancels polls;
        bounded, so a slow Redis cannot stretch the drain past the grace)."""
        with anyio.CancelScope(shield=True), anyio.move_on_after(self.budget.release):
            try:
                await self.store.release(state, self.server_now() + delay, crash)
            except RedisError as exc:
                self.redis_failed("release", exc)

    async def renew_forever(self) -> None:
        """Every third of a lease, extend the leases of polls still running; cancel the poll
        of any lease found lost (another replica took the job after ours lapsed)."""
        period = max(0.05, self.lease_seconds / 3)
        while True:
            await self.clock.sleep(period)
            await self.renew_once()

    async def renew_once(self) -> None:
        running = [lease for lease in self._held.values() if not lease.committed]
        if not running:
            return
        try:
            held = await self.store.renew(
                [(lease.member, lease.state.token) for lease in running],
                self.server_now() + self.lease_seconds,
            )
        except RedisError as exc:
            self.redis_failed("renew", exc)
            return
        for lease, ok in zip(running, held, strict=True):
            # a poll that finished (and released its lease) meanwhile lost nothing
            still_running = self._held.get((lease.member, lease.state.token)) is lease
            if not ok and not lease.committed and still_running:
                self.metrics.leases_lost.inc()
                self.on_lost(lease.member)
                lease.scope.cancel()

    async def hand_back_all(self) -> None:
        """On exit: release every lease still held (normally none: polls release their own)."""
        for lease in list(self._held.values()):
            if not lease.committed:
                await self.release(lease.state, 0.0)
        self._held.clear()
        self.idle.set()
