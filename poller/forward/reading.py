"""Reading the group: one group of that name per shard stream, and its entries into the queues.

Every command names one stream only (with several shards the streams are in hash slots of
their own).  A restarted consumer first reads what it was given before and never
acknowledged; then new entries (``>``), at most ``prefetch`` held at a time over all shards:
their streams are read in turn, each for what room is left, starting with another each round.
A group found missing (deleted) is created again.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import anyio
from redis.exceptions import RedisError, ResponseError

from poller.backoff import Backoff
from poller.consumer import StreamCursor
from poller.forward.entries import PAGE, entries_of, retrying, text
from poller.forward.options import ForwardOptions
from poller.forward.queues import JobQueues
from poller.store.connection import RedisClient
from poller.store.store import is_transient


@dataclass(eq=False, repr=False)
class GroupPart:
    """What the parts working on the consumer group hold: the client, the shard streams, the
    options, the per-job queues entries go to, and the log."""

    redis: RedisClient
    streams: tuple[str, ...]
    options: ForwardOptions
    queues: JobQueues
    log: Any


class GroupReader(GroupPart):
    """Reads ``options.group`` on each of ``streams`` as ``options.consumer``, handing every
    entry to ``queues``."""

    async def ensure_group(self) -> None:
        """Create the group (at ``options.start``) and the streams if they do not exist."""
        for stream in self.streams:
            try:
                await self.redis.xgroup_create(
                    stream, self.options.group, id=self.options.start, mkstream=True
                )
            except ResponseError as exc:
                if "BUSYGROUP" not in str(exc):
                    raise

    async def read_own_pending(self) -> None:
        """What this consumer (same name, restarted) was given before and never acked."""
        for stream in self.streams:
            cursor = "0-0"
            while True:
                reply = await retrying(
                    lambda s=stream, at=cursor: self.redis.xreadgroup(  # type: ignore[misc]
                        self.options.group, self.options.consumer, {s: at}, count=PAGE
                    ),
                    "xreadgroup",
                    self.log,
                )
                entries = entries_of(reply)
                if not entries:
                    break
                for entry_id, raw in entries:
                    cursor = entry_id
                    if raw:
                        self.queues.take(stream, entry_id, raw, claimed=True, new=False)
                    else:  # deleted from the stream (trimmed) while pending: nothing to deliver
                        await self.queues.ack(stream, entry_id)

    async def read_forever(self) -> None:
        """New entries (``>``), at most ``prefetch`` held at a time."""
        if len(self.streams) > 1:
            await self._read_shards()
            return
        stream = self.streams[0]
        backoff = Backoff(initial=0.1, cap=5.0)
        limit = self.options.held_max
        while True:
            await self.queues.wait_for_room(limit)
            try:
                reply = await self.redis.xreadgroup(
                    self.options.group,
                    self.options.consumer,
                    {stream: ">"},
                    count=min(PAGE, limit - self.queues.new_count),
                    block=self.options.block_ms,
                )
                backoff.succeeded()
            except RedisError as exc:
                await self._recover_from(exc, backoff)
                continue
            for entry_id, raw in entries_of(reply):
                self.queues.take(stream, entry_id, raw, claimed=False, new=True)

    async def _recover_from(self, exc: RedisError, backoff: Backoff) -> None:
        """After a read failed: create a deleted group again, or wait out a passing failure;
        anything else is raised."""
        if isinstance(exc, ResponseError):
            if "NOGROUP" not in str(exc):
                raise exc
            self.log.warning("consumer group missing, creating it again")
            await retrying(self.ensure_group, "xgroup_create", self.log)
            return
        if not is_transient(exc):
            raise exc
        self.log.warning("redis unavailable, retrying", op="xreadgroup", error=str(exc))
        await anyio.sleep(backoff.failed())

    async def _read_shards(self) -> None:
        """:meth:`read_forever` over several streams (other slots: no XREADGROUP names two).

        Each round reads the streams in turn without waiting, each for the room left, from
        another stream each round; when none had anything, it waits (``XREAD``, which takes
        nothing) for an entry after the newest each stream had before its read.
        """
        backoff = Backoff(initial=0.1, cap=5.0)
        limit = self.options.held_max
        first = 0
        while True:
            await self.queues.wait_for_room(limit)
            try:
                tops = await self._read_round(first, limit)
                first = (first + 1) % len(self.streams)
                if tops is not None:
                    await StreamCursor(self.redis, tops, count=1).wait(self.options.block_ms)
                backoff.succeeded()
            except RedisError as exc:
                await self._recover_from(exc, backoff)

    async def _read_round(self, first: int, limit: int) -> dict[str, str] | None:
        """One read of each stream (from ``first``) while there is room.  Returns each
        stream's newest entry ID when every stream was read and none had anything new, else
        ``None`` (read on at once)."""
        tops: dict[str, str] = {}
        found = False
        n = len(self.streams)
        for stream in (self.streams[(first + i) % n] for i in range(n)):
            room = limit - self.queues.new_count
            if room <= 0:
                return None
            async with self.redis.pipeline(transaction=False) as pipe:  # one stream, one node
                pipe.xrevrange(stream, count=1)
                pipe.xreadgroup(
                    self.options.group, self.options.consumer, {stream: ">"},
                    count=min(PAGE, room),
                )  # fmt: skip
                newest, reply = await pipe.execute()
            entries = entries_of(reply)
            for entry_id, raw in entries:
                self.queues.take(stream, entry_id, raw, claimed=False, new=True)
            found = found or bool(entries)
            tops[stream] = text(newest[0][0]) if newest else "0-0"
        return None if found else tops
