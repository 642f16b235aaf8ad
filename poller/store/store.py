"""The Redis edge: typed async operations over the keys and scripts of ``schema``.

:class:`Store` is the one object the daemon and the commands use.  Its parts live beside it,
one idea each: :mod:`~poller.store.edge` (the client, keys, scripts and returned values),
:mod:`~poller.store.intake_ops`, :mod:`~poller.store.lease_ops` and
:mod:`~poller.store.commit_ops`; the reads are here.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from poller.store import schema
from poller.store.commit_ops import CommitStore
from poller.store.connection import connect
from poller.store.edge import (
    AdmitResult,
    Claim,
    CommitResult,
    CorruptJobState,
    Delivery,
    JobView,
    as_text,
    is_transient,
    state_from_hash,
)
from poller.store.intake_ops import IntakeStore
from poller.store.lease_ops import LeaseStore
from poller.store.schema import (
    F,
    entry_order,
    job_member,
)

__all__ = [
    "AdmitResult",
    "Claim",
    "CommitResult",
    "CorruptJobState",
    "Delivery",
    "JobView",
    "Store",
    "connect",
    "is_transient",
    "state_from_hash",
]


class Store(IntakeStore, LeaseStore, CommitStore):
    """Async operations on one prefix of one Redis database or cluster, over its shards."""

    async def get_job(self, project_id: str, job_id: str) -> JobView | None:
        """The stored state of a job, or ``None`` if it was never tracked (or has expired)."""
        member = job_member(project_id, job_id)
        shard = self.keys.for_job(job_id)
        async with self.redis.pipeline(transaction=True) as pipe:
            pipe.hgetall(shard.job(member))
            pipe.zscore(shard.schedule, member)
            raw, score = await pipe.execute()
        if not raw:
            return None
        fields = {as_text(k): as_text(v) for k, v in raw.items()}
        try:
            state = state_from_hash(fields)
        except (ValueError, KeyError, TypeError) as exc:
            raise CorruptJobState(f"{member}: {type(exc).__name__}: {exc}"[:300]) from None
        return JobView(
            state=state,
            tracking=fields.get(F.state) == schema.STATE_TRACKING,
            due_at=float(score) if score is not None else None,
            outcome=fields.get(F.outcome, ""),
        )

    async def next_due(self) -> float | None:
        """When the earliest scheduled job is due (or its lease ends), if any."""
        async with self.redis.pipeline(transaction=False) as pipe:
            for shard in self.keys.all_shards:
                pipe.zrange(shard.schedule, 0, 0, withscores=True)
            firsts = await pipe.execute()
        scores = [float(first[0][1]) for first in firsts if first]
        return min(scores) if scores else None

    async def counts(self, now: float) -> dict[str, int]:
        """Gauges: queue depth, dead letters, tracked jobs, jobs due now (over every shard)."""
        shards = self.keys.all_shards
        async with self.redis.pipeline(transaction=False) as pipe:
            pipe.llen(self.keys.intake)
            pipe.llen(self.keys.dead)
            for shard in shards:
                pipe.zcard(shard.schedule)
                pipe.zcount(shard.schedule, "-inf", repr(now))
            queue, dead, *per_shard = await pipe.execute()
        return {
            "queue": int(queue),
            "dead": int(dead),
            "tracked": sum(int(n) for n in per_shard[0::2]),
            "due": sum(int(n) for n in per_shard[1::2]),
        }

    async def gate_limits(
        self, mode: str, interval_us: int, burst: int, scope: str, owner: str, lease_ms: int
    ) -> list[Any]:
        """``GATE_LIMITS``: may an API request go now (rate limit, pauses, the key's probe)?"""
        reply = await self.script(schema.GATE_LIMITS)(
            keys=[self.keys.ratelimit, self.keys.limits],
            args=[mode, interval_us, burst, scope, owner, lease_ms],
        )
        return list(reply)

    async def report_limits(
        self, what: str, scope: str, owner: str, pause_ms: int, table_ms: Sequence[int]
    ) -> list[Any]:
        """``REPORT_LIMITS``: what an API answer means for every replica's pauses."""
        reply = await self.script(schema.REPORT_LIMITS)(
            keys=[self.keys.limits], args=[what, scope, owner, pause_ms, *table_ms]
        )
        return list(reply)

    async def read_events(
        self, job_id: str | None = None, start: str = "-", count: int | None = None
    ) -> list[tuple[str, dict[str, str]]]:
        """Entries of one job's stream, or of every shard's global stream merged in entry-ID
        order, from ``start``, as text."""
        keys = [self.keys.job_events(job_id)] if job_id else list(self.keys.event_streams)
        merged: list[tuple[tuple[int, int], str, dict[str, str]]] = []
        for key in keys:
            entries = await self.redis.xrange(key, min=start, count=count)
            for entry_id, fields in entries or []:
                text = as_text(entry_id)
                decoded = {as_text(k): as_text(v) for k, v in (fields or {}).items()}
                merged.append((entry_order(text), text, decoded))
        merged.sort(key=lambda e: e[0])
        rows = [(entry_id, fields) for _, entry_id, fields in merged]
        return rows[:count] if count is not None else rows
