"""A replica's standing among the others: registration, heartbeat, recovery, gauges.

A replica registers (a heart-beat, after checking the keys' shard layout) before it takes any
intake message, so a crash right after its first take is noticed and the message handed
back.  While it runs it beats, hands back the in-flight intake messages of replicas whose
heart-beat lapsed, and sets the queue gauges; once a minute, apart from the beat, it hands
back those of replicas that died before registering.  On exit it deregisters, returning its
own in-flight messages.
"""

from __future__ import annotations

from collections.abc import Callable

from redis.exceptions import RedisError

from poller.backoff import Backoff
from poller.config import ConfigError, Settings
from poller.replica import ReplicaContext


class Housekeeping:
    """The heart-beat side of one replica; ``on_recovered`` is called when messages of a dead
    replica were handed back (they are in the queue again)."""

    def __init__(
        self, replica: ReplicaContext, settings: Settings, *, on_recovered: Callable[[], None]
    ) -> None:
        self._replica = replica
        self._settings = settings
        self._store = replica.store
        self._clock = replica.clock
        self._metrics = replica.metrics
        self._health = replica.health
        self._log = replica.log
        self._redis_failed = replica.redis_failed
        self._on_recovered = on_recovered

    @property
    def period(self) -> float:
        """Seconds between heart-beats."""
        return max(0.2, min(5.0, self._settings.lease_seconds / 3))

    @property
    def heartbeat_ttl(self) -> float:
        """How long a heart-beat vouches for this replica: a few periods."""
        return max(3 * self.period, 10.0)

    async def register(self) -> None:
        """Sync the server clock, check the shard layout and beat once, retrying Redis
        failures until it works or the replica stops; a layout other than ``shards`` is a
        :class:`ConfigError`."""
        replica = self._replica
        backoff = Backoff(initial=0.1, cap=5.0, rng=replica.rng)
        while not replica.stopping.is_set():
            self._health.tick()  # waiting for Redis is not a wedged loop (liveness)
            try:
                await replica.server_clock.sync(self._store.server_time)
                laid_out = await self._store.check_layout()
                if laid_out != self._settings.shards:
                    raise ConfigError(self._layout_mismatch(laid_out))
                await self._store.heartbeat(replica.replica_id, replica.now() + self.heartbeat_ttl)
                return
            except RedisError as exc:
                self._redis_failed("register", exc)
                await replica.sleep_unless_stopping(backoff.failed())

    def _layout_mismatch(self, laid_out: int) -> str:
        prefix = self._settings.key_prefix
        return (
            f"POLLER_SHARDS: {self._settings.shards}, but the keys under prefix {prefix} are "
            f"laid out for {laid_out} shard(s); keep {laid_out}, or let every job finish and "
            f"delete {prefix}:layout before changing it"
        )

    async def beat_forever(self) -> None:
        """Every :attr:`period`, :meth:`beat_once`; a Redis failure waits for the next."""
        period = self.period
        while True:
            try:
                await self.beat_once()
            except RedisError as exc:
                self._redis_failed("housekeeping", exc)
            await self._clock.sleep(period)

    async def beat_once(self) -> None:
        """Heart-beat, hand back the messages of lapsed replicas, set the queue gauges, and
        mark Redis reachable again."""
        await self._replica.server_clock.sync(self._store.server_time)
        now = self._replica.now()
        await self._store.heartbeat(self._replica.replica_id, now + self.heartbeat_ttl)
        recovered = await self._store.recover_orphans(now)
        if recovered:
            self._metrics.orphans_recovered.inc(recovered)
            self._log.warning("handed back intake messages of a dead replica", count=recovered)
            self._on_recovered()
        counts = await self._store.counts(now)
        self._metrics.queue.set(counts["queue"])
        self._metrics.dead.set(counts["dead"])
        self._metrics.tracked.set(counts["tracked"])
        self._metrics.due.set(counts["due"])
        if not self._health.redis_ok:
            self._log.info("redis reachable")
        self._health.redis_ok = True
        self._health.redis_error = ""

    async def sweep_forever(self) -> None:
        """Once a minute, hand back in-flight lists of replicas that died before registering.

        Apart from the heartbeat loop, so a long SCAN of a big keyspace cannot delay
        heartbeats and make this replica look dead to the others.
        """
        while True:
            await self._clock.sleep(60.0)
            try:
                recovered = await self._store.recover_unregistered()
            except RedisError as exc:
                self._redis_failed("sweep", exc)
                continue
            if recovered:
                self._metrics.orphans_recovered.inc(recovered)
                self._log.warning("handed back intake messages of an unregistered replica",
                                  count=recovered)  # fmt: skip
                self._on_recovered()

    async def deregister(self) -> None:
        """Leave: return this replica's in-flight intake messages to the queue."""
        try:
            returned = await self._store.deregister(self._replica.replica_id)
            if returned:
                self._log.info("returned in-flight intake messages", count=returned)
        except RedisError as exc:
            self._redis_failed("deregister", exc)
