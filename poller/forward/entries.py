"""Stream entries as a forwarder holds them, and the Redis calls every part of it makes."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, Final, TypeVar

import anyio
from redis.exceptions import RedisError

from poller.backoff import Backoff
from poller.consumer import JobEvent
from poller.store.connection import RedisClient
from poller.store.store import is_transient

T = TypeVar("T")

#: Entries asked for in one command (XREADGROUP, XAUTOCLAIM, XPENDING, the touch script).
PAGE: Final = 200

#: An entry of one of the shards' streams: (stream, entry ID); IDs repeat across streams.
EntryKey = tuple[str, str]


@dataclass(slots=True)
class Held:
    """An entry taken from the group and not yet acknowledged (queued or delivering)."""

    stream: str
    event: JobEvent | None  # None: malformed, raw fields in ``raw``
    entry_id: str
    job_id: str
    taken: float
    raw: dict[str, str]
    claimed: bool = False  # taken over or given before, not read as new


def text(value: Any) -> str:
    return value.decode("utf-8", "replace") if isinstance(value, bytes) else str(value)


def stream_order(entry_id: str) -> tuple[int, int]:
    """An entry ID as a key that sorts in stream order."""
    ms, _, seq = entry_id.partition("-")
    return int(ms), int(seq or 0)


def entries_of(reply: Any) -> list[tuple[str, Any]]:
    """The entries of an XREADGROUP reply (RESP2 list or RESP3 map), in order."""
    if not reply:
        return []
    streams = reply.values() if isinstance(reply, dict) else (e for _, e in reply)
    return [(text(entry_id), raw) for entries in streams for entry_id, raw in entries]


async def retrying(op: Callable[[], Awaitable[T]], what: str, log: Any) -> T:
    """Run a Redis operation, retrying transient failures with backoff until it answers."""
    backoff = Backoff(initial=0.1, cap=5.0)
    while True:
        try:
            return await op()
        except RedisError as exc:
            if not is_transient(exc):
                raise
            log.warning("redis unavailable, retrying", op=what, error=str(exc))
            await anyio.sleep(backoff.failed())


async def acknowledge(redis: RedisClient, group: str, stream: str, entry_id: str, log: Any) -> None:
    """Acknowledge one entry, riding out a Redis outage."""
    await retrying(lambda: redis.xack(stream, group, entry_id), "xack", log)
