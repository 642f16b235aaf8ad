"""What the parts of one replica share: its name, store, clocks, telemetry and stop signal."""

from __future__ import annotations

import random
from dataclasses import dataclass
from typing import Any

import anyio
from redis.exceptions import RedisError

from poller.clock import Clock, ServerClock
from poller.ports import JobStore
from poller.store import is_transient
from poller.telemetry import Health, Metrics


@dataclass(frozen=True, slots=True)
class ReplicaContext:
    """One replica's shared edges, handed to each of its parts (:class:`~poller.worker.Worker`
    builds it): ``clock`` is this host's (sleeping, monotonic time), ``server_clock`` Redis's
    (every time compared between replicas), ``stopping`` is set when the drain begins."""

    replica_id: str
    store: JobStore
    clock: Clock
    server_clock: ServerClock
    rng: random.Random
    metrics: Metrics
    health: Health
    log: Any
    stopping: anyio.Event

    def now(self) -> float:
        """Now, on the Redis server's clock (epoch seconds)."""
        return self.server_clock.now()

    async def sleep_unless_stopping(self, seconds: float) -> None:
        """Wait ``seconds``, or less if the replica begins to stop meanwhile."""
        await self.clock.wait(self.stopping, seconds)

    def redis_failed(self, op: str, exc: RedisError) -> None:
        """Count and log a failed Redis operation; a transient one also marks Redis
        unreachable in the health report (until a heart-beat gets through)."""
        self.metrics.redis_errors.labels(op).inc()
        if is_transient(exc):
            self.health.redis_ok = False
            self.health.redis_error = f"{type(exc).__name__} during {op}"
            self.log.warning("redis operation failed", op=op, error=str(exc))
        else:
            self.log.error(
                "redis refused an operation", op=op, error=f"{type(exc).__name__}: {exc}"
            )
