"""Per-job order: what a forwarder holds, one queue per job, and one task delivering each.

An entry taken from the group is held until it is acknowledged; it waits in its job's queue
(ordered by stream ID; a job's events are all in one shard's stream) behind the job's older
entries.  One task per job delivers the queue's head, then the next, and before each delivery
checks the group's pending list for an older entry of the job that another consumer holds (a
dead one, typically): then it waits until that one is acknowledged, so a job's later event
never overtakes an earlier one.
"""

from __future__ import annotations

import heapq
import time
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import KW_ONLY, dataclass
from typing import Any

import anyio
import anyio.abc
from redis.exceptions import RedisError

from poller.backoff import Backoff
from poller.consumer import JobEvent
from poller.forward.entries import PAGE, EntryKey, Held, acknowledge, stream_order, text
from poller.forward.metrics import ForwardMetrics
from poller.forward.options import ForwardOptions, event_filter
from poller.store.connection import RedisClient
from poller.store.store import is_transient

Deliver = Callable[[Held], Awaitable[None]]


@dataclass(eq=False, repr=False)
class JobQueues:
    """The entries one forwarder holds, queued per job and delivered in order by ``deliver``
    (which acknowledges or parks each); filtered-out entries are acknowledged at once."""

    redis: RedisClient
    options: ForwardOptions
    metrics: ForwardMetrics
    log: Any
    _: KW_ONLY
    deliver: Deliver

    def __post_init__(self) -> None:
        self._wanted = event_filter(self.options)
        self._held: dict[EntryKey, Held] = {}  # event held (queued or delivering)
        # per (stream, job): entry IDs by stream order; a job is in one stream
        self._queues: dict[EntryKey, list[tuple[tuple[int, int], str]]] = {}
        self._wake: dict[EntryKey, anyio.Event] = {}
        self._new_count = 0  # held entries read as new (count against prefetch)
        self._room = anyio.Event()
        self._job_of_cache: dict[EntryKey, str | None] = {}
        self._tg: anyio.abc.TaskGroup | None = None

    def attach(self, tg: anyio.abc.TaskGroup) -> None:
        """Run the per-job tasks (and acks of filtered entries) in ``tg``; before any take."""
        self._tg = tg

    def __contains__(self, key: EntryKey) -> bool:
        return key in self._held

    def __iter__(self) -> Iterator[EntryKey]:
        """The keys held now (a copy: holding goes on meanwhile)."""
        return iter(list(self._held))

    @property
    def new_count(self) -> int:
        """Held entries that were read as new: they count against ``prefetch``."""
        return self._new_count

    async def wait_for_room(self, limit: int) -> None:
        """Until fewer than ``limit`` entries read as new are held."""
        while self._new_count >= limit:
            self._room = anyio.Event()
            await self._room.wait()

    def take(self, stream: str, entry_id: str, raw: Any, *, claimed: bool, new: bool) -> None:
        """Hold one entry: queue it behind its job's earlier ones, or ack it if filtered."""
        key = (stream, entry_id)
        if key in self._held or not raw:
            return
        fields = {text(k): text(v) for k, v in raw.items()}
        event: JobEvent | None
        try:
            event = JobEvent.from_entry(entry_id, fields)
        except (KeyError, ValueError):
            event = None
        job_id = event.job_id if event else fields.get("job_id", "")
        held = Held(stream, event, entry_id, job_id, time.monotonic(), fields, claimed)
        assert self._tg is not None
        if event is not None and not self._wanted(event):
            self.metrics.filtered.inc()
            self._tg.start_soon(self.ack, stream, entry_id)
            return
        self._held[key] = held
        if new:
            self._new_count += 1
        self.metrics.held.set(len(self._held))
        job = (stream, job_id)
        queue = self._queues.get(job)
        if queue is None:
            queue = self._queues[job] = []
            self._wake[job] = anyio.Event()
            heapq.heappush(queue, (stream_order(entry_id), entry_id))
            self._tg.start_soon(self._job_worker, job)
        else:
            heapq.heappush(queue, (stream_order(entry_id), entry_id))
            self._wake[job].set()

    async def ack(self, stream: str, entry_id: str) -> None:
        """Acknowledge an entry without delivering it (filtered out, or gone from the
        stream)."""
        await acknowledge(self.redis, self.options.group, stream, entry_id, self.log)

    def _release(self, key: EntryKey) -> None:
        held = self._held.pop(key, None)
        if held is not None and not held.claimed:
            self._new_count -= 1
        self.metrics.held.set(len(self._held))
        self._room.set()

    async def _job_of(self, stream: str, entry_id: str) -> str | None:
        key = (stream, entry_id)
        if key in self._held:
            return self._held[key].job_id
        if key not in self._job_of_cache:
            if len(self._job_of_cache) > 50_000:
                self._job_of_cache.clear()
            rows = await self.redis.xrange(stream, entry_id, entry_id)
            job = None
            fields = rows[0][1] if rows else None
            if fields:
                value = fields.get(b"job_id", fields.get("job_id"))
                job = text(value) if value is not None else None
            self._job_of_cache[key] = job
        return self._job_of_cache[key]

    async def blocked_by(self, held: Held) -> str | None:
        """An older pending entry of the same job that this forwarder does not hold, if any
        (in the job's stream: a job is in one shard)."""
        low = "-"
        while True:
            rows = await self.redis.xpending_range(
                held.stream, self.options.group, min=low, max=f"({held.entry_id}", count=PAGE
            )
            for row in rows:
                entry_id = text(row["message_id"])
                mine = text(row["consumer"]) == self.options.consumer
                if mine and (held.stream, entry_id) in self._held:
                    continue
                if await self._job_of(held.stream, entry_id) == held.job_id:
                    return entry_id
            if len(rows) < PAGE:
                return None
            low = f"({text(rows[-1]['message_id'])}"

    async def _job_worker(self, job: EntryKey) -> None:
        """Deliver one job's queue (``job``: its stream and ID), head first."""
        stream = job[0]
        queue = self._queues[job]
        wait = Backoff(initial=0.05, cap=1.0)
        try:
            while queue:
                entry_id = queue[0][1]
                held = self._held[(stream, entry_id)]
                try:
                    blocker = await self.blocked_by(held)
                except RedisError as exc:
                    if not is_transient(exc):
                        raise
                    blocker = "redis unavailable"
                if blocker is not None:
                    # Woken early when an entry of this job arrives (a claimed older one).
                    self._wake[job] = anyio.Event()
                    with anyio.move_on_after(wait.failed()):
                        await self._wake[job].wait()
                    continue
                if queue[0][1] != entry_id:
                    # an older entry of the job joined the queue during the check (claimed
                    # from a dead consumer): it goes first
                    continue
                wait.succeeded()
                heapq.heappop(queue)
                try:
                    await self.deliver(held)
                finally:
                    self._release((stream, entry_id))
        finally:
            if self._queues.get(job) is queue:
                del self._queues[job]
                self._wake.pop(job, None)
