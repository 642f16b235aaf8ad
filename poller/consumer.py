"""Reading the event streams from Python: typed events, tailing, and durable consumer groups.

Tail one job's stream (e.g. a pipeline waiting on its own deployment)::

    async for event in tail_events(redis, Keys("poller"), job_id="JOB-1"):
        print(event.seq, event.event, event.to_status)
        if event.is_final:
            break

Consume every job's events durably, at least once, recovering what a crashed consumer of the
same group left pending::

    group = ConsumerGroup(redis, Keys("poller").events, group="notifier", consumer="pod-1")
    async for event in group.events():
        await notify(event)
        await group.ack(event)

Delivery through a group is at least once: dedupe on ``(job_id, seq)`` if a redelivered
event would hurt.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from redis.asyncio import Redis
from redis.exceptions import ResponseError

from poller.statuses import is_terminal
from poller.store.schema import Keys

# Blocking reads must return before the client's socket timeout (5 s in ``store.connect``).


def _text(value: Any) -> str:
    return value.decode("utf-8", "replace") if isinstance(value, bytes) else str(value)


@dataclass(frozen=True, slots=True)
class JobEvent:
    """One stream entry, typed.  ``fields`` keeps the raw map for anything not named here."""

    entry_id: str
    event: str
    job_id: str
    project_id: str
    seq: int
    observed_at: str
    from_status: str
    to_status: str
    job_status: str
    task_id: str | None = None
    task_index: int | None = None
    task_name: str | None = None
    job_type: str | None = None
    terminal: bool | None = None
    reason: str | None = None
    detail: str | None = None
    meta: dict[str, Any] | None = None
    fields: Mapping[str, str] = field(default_factory=dict, repr=False)

    @classmethod
    def from_entry(cls, entry_id: Any, raw: Mapping[Any, Any]) -> JobEvent:
        """Decode a stream entry (bytes or text) into a :class:`JobEvent`."""
        f = {_text(k): _text(v) for k, v in raw.items()}
        index = f.get("task_index")
        terminal = f.get("terminal")
        return cls(
            entry_id=_text(entry_id),
            event=f["event"],
            job_id=f["job_id"],
            project_id=f["project_id"],
            seq=int(f["seq"]),
            observed_at=f["observed_at"],
            from_status=f.get("from_status", ""),
            to_status=f.get("to_status", ""),
            job_status=f.get("job_status", ""),
            task_id=f.get("task_id"),
            task_index=int(index) if index not in (None, "") else None,
            task_name=f.get("task_name"),
            job_type=f.get("job_type"),
            terminal=None if terminal is None else terminal == "true",
            reason=f.get("reason"),
            detail=f.get("detail"),
            meta=json.loads(f["meta"]) if f.get("meta") else None,
            fields=f,
        )

    @property
    def is_final(self) -> bool:
        """True for a job's last event: terminal job status, or abandoned."""
        return self.event == "job.abandoned" or (
            self.event == "job.status_changed" and is_terminal(self.to_status)
        )


def stream_id_since(value: str) -> str:
    """A stream ID from ``--since``: an entry ID, epoch seconds, or an RFC 3339 time."""
    value = value.strip()
    if value in ("0", "-", "$"):
        return "0-0" if value != "$" else "$"
    head, _, tail = value.partition("-")
    if head.isdigit() and (not tail or tail.isdigit()):
        if tail:
            return value
        if len(head) <= 11:  # epoch seconds rather than milliseconds
            return f"{int(head) * 1000}-0"
        return f"{head}-0"
    try:
        when = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        raise ValueError(
            f"--since {value!r}: expected a stream ID, epoch seconds or an RFC 3339 time"
        ) from None
    if when.tzinfo is None:
        raise ValueError(f"--since {value!r}: give a time zone (e.g. Z)")
    return f"{int(when.timestamp() * 1000)}-0"


def _entries(reply: Any) -> list[tuple[Any, Any]]:
    """The entries of an XREAD/XREADGROUP reply (RESP2 list or RESP3 map), in order."""
    if not reply:
        return []
    streams = reply.values() if isinstance(reply, dict) else (e for _, e in reply)
    return [(entry_id, raw) for entries in streams for entry_id, raw in entries]


def _exclusive(entry_id: str) -> str:
    return entry_id if entry_id in ("$", "0-0") else f"({entry_id}"


async def tail_events(
    redis: Redis,
    keys: Keys,
    *,
    job_id: str | None = None,
    start: str = "0-0",
    block_ms: int = 2000,
    follow: bool = True,
) -> AsyncIterator[JobEvent]:
    """Events of every job (or of ``job_id``) after ``start``; with ``follow``, wait for more."""
    stream = keys.job_events(job_id) if job_id else keys.events
    last = start
    while True:
        if last == "$":
            batch: Any = await redis.xread({stream: "$"}, block=block_ms, count=500)
        else:
            entries = await redis.xrange(stream, min=_exclusive(last), count=500)
            batch = [[stream, entries]] if entries else []
            if not entries and follow:
                batch = await redis.xread({stream: last}, block=block_ms, count=500)
        for entry_id, raw in _entries(batch):
            event = JobEvent.from_entry(entry_id, raw)
            last = event.entry_id
            yield event
        if not batch and not follow:
            return


class ConsumerGroup:
    """A named consumer in a Redis consumer group over one stream (created if missing)."""

    def __init__(
        self,
        redis: Redis,
        stream: str,
        *,
        group: str,
        consumer: str,
        start: str = "0-0",
        claim_idle_ms: int = 60_000,
        block_ms: int = 2000,
        count: int = 100,
    ) -> None:
        self.redis = redis
        self.stream = stream
        self.group = group
        self.consumer = consumer
        self.start = start
        self.claim_idle_ms = claim_idle_ms
        self.block_ms = block_ms
        self.count = count

    async def ensure(self) -> None:
        """Create the group (at ``start``) and the stream if they do not exist."""
        try:
            await self.redis.xgroup_create(self.stream, self.group, id=self.start, mkstream=True)
        except ResponseError as exc:
            if "BUSYGROUP" not in str(exc):
                raise

    async def recover(self) -> list[JobEvent]:
        """Take over entries other consumers left unacknowledged for ``claim_idle_ms``."""
        recovered: list[JobEvent] = []
        cursor = "0-0"
        while True:
            reply = await self.redis.xautoclaim(
                self.stream, self.group, self.consumer, self.claim_idle_ms, cursor, count=self.count
            )
            cursor, entries = _text(reply[0]), reply[1]
            recovered += [JobEvent.from_entry(i, raw) for i, raw in entries if raw]
            if cursor == "0-0":
                return recovered

    async def events(self, *, follow: bool = True) -> AsyncIterator[JobEvent]:
        """This consumer's pending entries, then others' stale ones, then new ones."""
        await self.ensure()
        pending = await self.redis.xreadgroup(
            self.group, self.consumer, {self.stream: "0"}, count=10_000
        )
        for entry_id, raw in _entries(pending):
            if raw:
                yield JobEvent.from_entry(entry_id, raw)
        for event in await self.recover():
            yield event
        while True:
            batch = await self.redis.xreadgroup(
                self.group,
                self.consumer,
                {self.stream: ">"},
                count=self.count,
                block=self.block_ms if follow else None,
            )
            for entry_id, raw in _entries(batch):
                yield JobEvent.from_entry(entry_id, raw)
            if not batch and not follow:
                return

    async def ack(self, event: JobEvent) -> None:
        """Acknowledge ``event``: it will not be delivered to this group again."""
        await self.redis.xack(self.stream, self.group, event.entry_id)
