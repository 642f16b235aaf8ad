"""Deliver the global event stream to one webhook, through a Redis consumer group.

With several shards (``POLLER_SHARDS``) the global stream is one stream per shard, each in a
hash slot of its own: the group is one group of that name on each, and everything below holds
per shard stream (every command names one stream only; the touch script is run per stream).
A job lives in one shard, so its events are all in one stream and keep their order.

How the guarantees hold, with any number of forwarders sharing one group:

- **At least once.**  An entry is acknowledged (``XACK``) only after a 2xx, or after it was
  parked in ``{prefix}:forward:dead`` (in the same ``MULTI``; with several shards the list
  and the stream are in different slots, so the record is pushed first and the entry
  acknowledged after: a forwarder that dies in between leaves the entry pending, and whoever
  takes it over parks or delivers it again, so a second record of the same ``entry_id`` can
  appear, a lost event cannot).  What a forwarder holds
  unacknowledged when it dies stays in the group's pending list; the others take it over with
  ``XAUTOCLAIM`` once it has been idle ``claim_idle`` seconds (they look every
  ``claim_interval``).  A live forwarder keeps what it holds from going idle by re-claiming
  its own entries (a Lua script: only while it still owns them), so a slow delivery with long
  retries is never taken over behind its back.
- **Per-job order.**  Each forwarder keeps one queue per job, ordered by stream ID, and one
  task per job delivers that queue's head, then the next.  Before delivering an entry it
  checks the group's pending list for an older entry of the same job held by another consumer
  (a dead one, typically): then it waits until that one is acknowledged (taken over and
  delivered by whoever claims it, possibly itself), so a job's later event never overtakes an
  earlier one.  Different jobs are delivered concurrently, at most ``concurrency`` requests at
  a time; at most ``prefetch`` new entries are held at once (over all shards: their streams
  are read in turn, each for what room is left, starting with another each round).
- **Retries** use the project's backoff (:func:`poller.backoff.full_jitter`), with a
  ``Retry-After`` answer as the floor, up to ``max_attempts`` attempts per event.
"""

from __future__ import annotations

import heapq
import json
import random
import time
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from typing import Any, Final, TypeVar
from urllib.parse import urlsplit

import aiohttp
import anyio
import anyio.abc
from redis.exceptions import RedisError, ResponseError

from poller.backoff import Backoff, full_jitter
from poller.consumer import JobEvent, StreamCursor
from poller.forward.metrics import ForwardMetrics
from poller.forward.options import ForwardOptions, event_filter
from poller.forward.signing import headers, webhook_body, webhook_id
from poller.store.connection import RedisClient
from poller.store.schema import Keys
from poller.store.store import is_transient
from poller.telemetry import get_logger

T = TypeVar("T")

__all__ = [
    "ForwardMetrics",
    "ForwardOptions",
    "Forwarder",
    "dead_records",
    "event_filter",
    "parse_retry_after",
    "public_url",
]

_RNG: Final = random.Random()
_PAGE: Final = 200

# Re-claim this consumer's own entries (resetting their idle time) only while it still owns
# them: KEYS[1] the stream, ARGV[1] the group, ARGV[2] this consumer, ARGV[3..] entry IDs.
# Returns the IDs it no longer owns.
_TOUCH: Final = """
local lost = {}
for i = 3, #ARGV do
  local p = redis.call('XPENDING', KEYS[1], ARGV[1], ARGV[i], ARGV[i], 1, ARGV[2])
  if #p == 1 then
    redis.call('XCLAIM', KEYS[1], ARGV[1], ARGV[2], 0, ARGV[i], 'JUSTID')
  else
    table.insert(lost, ARGV[i])
  end
end
return lost
"""


def _text(value: Any) -> str:
    return value.decode("utf-8", "replace") if isinstance(value, bytes) else str(value)


def _stream_key(entry_id: str) -> tuple[int, int]:
    ms, _, seq = entry_id.partition("-")
    return int(ms), int(seq or 0)


def _entries(reply: Any) -> list[tuple[str, Any]]:
    """The entries of an XREADGROUP reply (RESP2 list or RESP3 map), in order."""
    if not reply:
        return []
    streams = reply.values() if isinstance(reply, dict) else (e for _, e in reply)
    return [(_text(entry_id), raw) for entries in streams for entry_id, raw in entries]


def public_url(url: str) -> str:
    """``url`` without credentials, query or fragment: what may appear in logs and records."""
    parts = urlsplit(url)
    host = parts.hostname or ""
    port = f":{parts.port}" if parts.port else ""
    return f"{parts.scheme}://{host}{port}{parts.path}"


def parse_retry_after(value: str | None, now: float | None = None) -> float | None:
    """Seconds to wait from a ``Retry-After`` header (delay-seconds or an HTTP date)."""
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    now = time.time() if now is None else now
    return max(0.0, when.timestamp() - now)


#: An entry of one of the shards' streams: (stream, entry ID); IDs repeat across streams.
_Key = tuple[str, str]


@dataclass(slots=True)
class _Held:
    stream: str
    event: JobEvent | None  # None: malformed, raw fields in ``raw``
    entry_id: str
    job_id: str
    taken: float
    raw: dict[str, str]
    claimed: bool = False


@dataclass(slots=True)
class _Attempt:
    ok: bool
    error: str = ""
    cause: str = ""
    retry_after: float | None = None


class Forwarder:
    """One consumer of ``{prefix}:events`` (every shard's) in ``options.group``, POSTing to
    the webhook."""

    def __init__(
        self,
        redis: RedisClient,
        keys: Keys,
        options: ForwardOptions,
        *,
        metrics: ForwardMetrics | None = None,
        session: aiohttp.ClientSession | None = None,
    ) -> None:
        self.redis = redis
        self.keys = keys
        self.options = options
        self.metrics = metrics or ForwardMetrics()
        self._session = session
        self._wanted = event_filter(options)
        self._log = get_logger(component="forward", group=options.group)
        self.streams = keys.event_streams
        self._held: dict[_Key, _Held] = {}  # event held (queued or delivering)
        # per (stream, job): entry IDs by stream order; a job is in one stream
        self._queues: dict[_Key, list[tuple[tuple[int, int], str]]] = {}
        self._wake: dict[_Key, anyio.Event] = {}
        self._new_count = 0  # held entries read as new (count against prefetch)
        self._room = anyio.Event()
        self._sem = anyio.Semaphore(max(1, options.concurrency))
        self._job_of_cache: dict[_Key, str | None] = {}
        self._touch = redis.register_script(_TOUCH)
        self._tg: anyio.abc.TaskGroup | None = None

    @property
    def stream(self) -> str:
        """The global stream with one shard (see :attr:`streams`)."""
        return self.keys.events

    # -- plumbing ---------------------------------------------------------------------------

    async def _redis(self, op: Callable[[], Awaitable[T]], what: str) -> T:
        """Run a Redis operation, retrying transient failures with backoff until it answers."""
        backoff = Backoff(initial=0.1, cap=5.0)
        while True:
            try:
                return await op()
            except RedisError as exc:
                if not is_transient(exc):
                    raise
                self._log.warning("redis unavailable, retrying", op=what, error=str(exc))
                await anyio.sleep(backoff.failed())

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

    # -- taking entries ---------------------------------------------------------------------

    def _take(self, stream: str, entry_id: str, raw: Any, *, claimed: bool, new: bool) -> None:
        """Hold one entry: queue it behind its job's earlier ones, or ack it if filtered."""
        key = (stream, entry_id)
        if key in self._held or not raw:
            return
        fields = {_text(k): _text(v) for k, v in raw.items()}
        event: JobEvent | None
        try:
            event = JobEvent.from_entry(entry_id, fields)
        except (KeyError, ValueError):
            event = None
        job_id = event.job_id if event else fields.get("job_id", "")
        held = _Held(stream, event, entry_id, job_id, time.monotonic(), fields, claimed)
        assert self._tg is not None
        if event is not None and not self._wanted(event):
            self.metrics.filtered.inc()
            self._tg.start_soon(self._ack_filtered, stream, entry_id)
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
            heapq.heappush(queue, (_stream_key(entry_id), entry_id))
            self._tg.start_soon(self._job_worker, job)
        else:
            heapq.heappush(queue, (_stream_key(entry_id), entry_id))
            self._wake[job].set()

    def _release(self, key: _Key) -> None:
        held = self._held.pop(key, None)
        if held is not None and not held.claimed:
            self._new_count -= 1
        self.metrics.held.set(len(self._held))
        self._room.set()

    async def _ack_filtered(self, stream: str, entry_id: str) -> None:
        await self._redis(lambda: self.redis.xack(stream, self.options.group, entry_id), "xack")

    async def _read_own_pending(self) -> None:
        """What this consumer (same name, restarted) was given before and never acked."""
        for stream in self.streams:
            cursor = "0-0"
            while True:
                reply = await self._redis(
                    lambda s=stream, at=cursor: self.redis.xreadgroup(  # type: ignore[misc]
                        self.options.group, self.options.consumer, {s: at}, count=_PAGE
                    ),
                    "xreadgroup",
                )
                entries = _entries(reply)
                if not entries:
                    break
                for entry_id, raw in entries:
                    cursor = entry_id
                    if raw:
                        self._take(stream, entry_id, raw, claimed=True, new=False)
                    else:  # deleted from the stream (trimmed) while pending: nothing to deliver
                        await self._ack_filtered(stream, entry_id)

    async def _wait_for_room(self, limit: int) -> None:
        while self._new_count >= limit:
            self._room = anyio.Event()
            await self._room.wait()

    async def _reader(self) -> None:
        """New entries (``>``), at most ``prefetch`` held at a time."""
        if len(self.streams) > 1:
            await self._shards_reader()
            return
        stream = self.streams[0]
        backoff = Backoff(initial=0.1, cap=5.0)
        limit = self.options.held_max
        while True:
            await self._wait_for_room(limit)
            try:
                reply = await self.redis.xreadgroup(
                    self.options.group,
                    self.options.consumer,
                    {stream: ">"},
                    count=min(_PAGE, limit - self._new_count),
                    block=self.options.block_ms,
                )
                backoff.succeeded()
            except ResponseError as exc:
                if "NOGROUP" not in str(exc):
                    raise
                self._log.warning("consumer group missing, creating it again")
                await self._redis(self.ensure_group, "xgroup_create")
                continue
            except RedisError as exc:
                if not is_transient(exc):
                    raise
                self._log.warning("redis unavailable, retrying", op="xreadgroup", error=str(exc))
                await anyio.sleep(backoff.failed())
                continue
            for entry_id, raw in _entries(reply):
                self._take(stream, entry_id, raw, claimed=False, new=True)

    async def _shards_reader(self) -> None:
        """:meth:`_reader` over several streams (other slots: no XREADGROUP names two).

        Each round reads the streams in turn without waiting, each for the room left, from
        another stream each round; when none had anything, it waits (``XREAD``, which takes
        nothing) for an entry after the newest each stream had before its read.
        """
        backoff = Backoff(initial=0.1, cap=5.0)
        limit = self.options.held_max
        first = 0
        while True:
            await self._wait_for_room(limit)
            try:
                tops = await self._read_round(first, limit)
                first = (first + 1) % len(self.streams)
                if tops is not None:
                    await StreamCursor(self.redis, tops, count=1).wait(self.options.block_ms)
                backoff.succeeded()
            except ResponseError as exc:
                if "NOGROUP" not in str(exc):
                    raise
                self._log.warning("consumer group missing, creating it again")
                await self._redis(self.ensure_group, "xgroup_create")
            except RedisError as exc:
                if not is_transient(exc):
                    raise
                self._log.warning("redis unavailable, retrying", op="xreadgroup", error=str(exc))
                await anyio.sleep(backoff.failed())

    async def _read_round(self, first: int, limit: int) -> dict[str, str] | None:
        """One read of each stream (from ``first``) while there is room.  Returns each
        stream's newest entry ID when every stream was read and none had anything new, else
        ``None`` (read on at once)."""
        tops: dict[str, str] = {}
        found = False
        n = len(self.streams)
        for stream in (self.streams[(first + i) % n] for i in range(n)):
            room = limit - self._new_count
            if room <= 0:
                return None
            async with self.redis.pipeline(transaction=False) as pipe:  # one stream, one node
                pipe.xrevrange(stream, count=1)
                pipe.xreadgroup(
                    self.options.group, self.options.consumer, {stream: ">"},
                    count=min(_PAGE, room),
                )  # fmt: skip
                newest, reply = await pipe.execute()
            entries = _entries(reply)
            for entry_id, raw in entries:
                self._take(stream, entry_id, raw, claimed=False, new=True)
            found = found or bool(entries)
            tops[stream] = _text(newest[0][0]) if newest else "0-0"
        return None if found else tops

    async def claim_once(self) -> int:
        """Take over every entry other consumers left idle ``claim_idle``; how many."""
        taken = 0
        idle_ms = max(1, int(self.options.claim_idle * 1000))
        for stream in self.streams:
            cursor = "0-0"
            while True:
                reply = await self.redis.xautoclaim(
                    stream, self.options.group, self.options.consumer, idle_ms, cursor,
                    count=_PAGE,
                )  # fmt: skip
                cursor, entries = _text(reply[0]), reply[1]
                for entry_id, raw in entries:
                    entry_id = _text(entry_id)
                    if raw and (stream, entry_id) not in self._held:
                        taken += 1
                        self._take(stream, entry_id, raw, claimed=True, new=False)
                if cursor in ("0-0", "0"):
                    break
        return taken

    async def _claimer(self) -> None:
        while True:
            try:
                taken = await self.claim_once()
                if taken:
                    self.metrics.claimed.inc(taken)
                    self._log.info("took over pending deliveries", count=taken)
            except RedisError as exc:
                if not is_transient(exc):
                    raise
                self._log.warning("redis unavailable, retrying", op="xautoclaim", error=str(exc))
            await anyio.sleep(self.options.claim_interval)

    async def _toucher(self) -> None:
        """Keep what this forwarder holds from looking idle to the others."""
        interval = max(0.05, self.options.claim_idle / 3)
        while True:
            await anyio.sleep(interval)
            await self._touch_held()

    async def _touch_held(self) -> None:
        by_stream: dict[str, list[str]] = {}
        for stream, entry_id in list(self._held):
            by_stream.setdefault(stream, []).append(entry_id)
        for stream, ids in by_stream.items():  # the script names one stream: one slot
            for start in range(0, len(ids), _PAGE):
                chunk = ids[start : start + _PAGE]
                try:
                    lost = await self._touch(
                        keys=[stream], args=[self.options.group, self.options.consumer, *chunk]
                    )
                except RedisError as exc:
                    if not is_transient(exc):
                        raise
                    self._log.warning("redis unavailable, retrying", op="touch", error=str(exc))
                    return
                if lost:
                    self._log.warning(
                        "entries taken over by another forwarder", count=len(lost)
                    )  # fmt: skip

    # -- per-job delivery -------------------------------------------------------------------

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
                job = _text(value) if value is not None else None
            self._job_of_cache[key] = job
        return self._job_of_cache[key]

    async def blocked_by(self, held: _Held) -> str | None:
        """An older pending entry of the same job that this forwarder does not hold, if any
        (in the job's stream: a job is in one shard)."""
        low = "-"
        while True:
            rows = await self.redis.xpending_range(
                held.stream, self.options.group, min=low, max=f"({held.entry_id}", count=_PAGE
            )
            for row in rows:
                entry_id = _text(row["message_id"])
                mine = _text(row["consumer"]) == self.options.consumer
                if mine and (held.stream, entry_id) in self._held:
                    continue
                if await self._job_of(held.stream, entry_id) == held.job_id:
                    return entry_id
            if len(rows) < _PAGE:
                return None
            low = f"({_text(rows[-1]['message_id'])}"

    async def _job_worker(self, job: _Key) -> None:
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
                    await self._deliver(held)
                finally:
                    self._release((stream, entry_id))
        finally:
            if self._queues.get(job) is queue:
                del self._queues[job]
                self._wake.pop(job, None)

    async def _attempt(self, msg_id: str, body: bytes) -> _Attempt:
        assert self._session is not None
        stamp = int(time.time())
        try:
            async with self._session.post(
                self.options.webhook,
                data=body,
                headers=headers(self.options.secret, msg_id, stamp, body),
                allow_redirects=False,
            ) as resp:
                await resp.read()
                if 200 <= resp.status < 300:
                    return _Attempt(ok=True)
                return _Attempt(
                    ok=False,
                    error=f"HTTP {resp.status}",
                    cause=str(resp.status),
                    retry_after=parse_retry_after(resp.headers.get("Retry-After")),
                )
        except TimeoutError:
            return _Attempt(ok=False, error="timeout", cause="timeout")
        except (aiohttp.ClientError, OSError) as exc:
            return _Attempt(ok=False, error=f"{type(exc).__name__}: {exc}", cause="error")

    async def _deliver(self, held: _Held) -> None:
        if held.event is None:
            await self._park(held, "malformed event: " + json.dumps(sorted(held.raw)), 0)
            return
        event = held.event
        msg_id = webhook_id(event.job_id, event.seq)
        body = webhook_body(held.raw)
        log = self._log.bind(webhook_id=msg_id, entry_id=held.entry_id)
        attempt = 0
        while True:
            attempt += 1
            async with self._sem:
                result = await self._attempt(msg_id, body)
            if result.ok:
                await self._redis(
                    lambda: self.redis.xack(held.stream, self.options.group, held.entry_id),
                    "xack",
                )
                self.metrics.delivered.inc()
                self.metrics.latency.observe(time.monotonic() - held.taken)
                log.debug("delivered", attempts=attempt)
                return
            if attempt >= self.options.max_attempts:
                await self._park(held, result.error, attempt)
                log.warning("delivery parked", attempts=attempt, error=result.error)
                return
            self.metrics.retried.labels(result.cause).inc()
            floor = result.retry_after
            if floor is not None:
                floor = min(floor, self.options.retry_after_max)
            delay = full_jitter(
                attempt,
                initial=self.options.backoff_initial,
                cap=self.options.backoff_max,
                rng=_RNG,
                floor=floor,
            )
            log.info(
                "delivery failed, retrying",
                attempt=attempt,
                error=result.error,
                retry_after=result.retry_after,
                delay=round(delay, 3),
            )
            await anyio.sleep(delay)

    async def _park(self, held: _Held, error: str, attempts: int) -> None:
        record = json.dumps(
            {
                "event": held.raw,
                "entry_id": held.entry_id,
                "webhook_id": webhook_id(held.job_id, held.raw.get("seq", "")),
                "webhook": public_url(self.options.webhook),
                "group": self.options.group,
                "error": error,
                "attempts": attempts,
                "at": datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z"),
            },
            ensure_ascii=False,
        )

        async def park() -> Any:
            async with self.redis.pipeline(transaction=True) as pipe:
                pipe.rpush(self.keys.forward_dead, record)
                pipe.xack(held.stream, self.options.group, held.entry_id)
                return await pipe.execute()

        if self.keys.shards == 1:  # the list and the stream share a slot: one MULTI
            await self._redis(park, "park")
        else:  # other slots: the record first, then the ack (see the module docstring)
            await self._redis(lambda: self.redis.rpush(self.keys.forward_dead, record), "park")
            await self._redis(
                lambda: self.redis.xack(held.stream, self.options.group, held.entry_id), "xack"
            )
        self.metrics.parked.inc()

    # -- running ----------------------------------------------------------------------------

    async def run(
        self, *, task_status: anyio.abc.TaskStatus[None] = anyio.TASK_STATUS_IGNORED
    ) -> None:
        """Forward until cancelled.  ``task_status.started()`` once the group exists."""
        await self._redis(self.ensure_group, "xgroup_create")
        own_session = self._session is None
        if own_session:
            self._session = aiohttp.ClientSession(
                timeout=aiohttp.ClientTimeout(total=self.options.timeout),
                connector=aiohttp.TCPConnector(limit=max(1, self.options.concurrency)),
            )
        try:
            async with anyio.create_task_group() as tg:
                self._tg = tg
                await self._read_own_pending()
                self._log.info(
                    "forwarding",
                    webhook=public_url(self.options.webhook),
                    consumer=self.options.consumer,
                )
                tg.start_soon(self._claimer)
                tg.start_soon(self._toucher)
                tg.start_soon(self._reader)
                task_status.started()
        finally:
            if own_session and self._session is not None:
                await self._session.close()
                self._session = None


async def dead_records(redis: RedisClient, keys: Keys) -> list[dict[str, Any]]:
    """The parked deliveries, oldest first."""
    rows: Iterable[Any] = await redis.lrange(keys.forward_dead, 0, -1)
    return [json.loads(_text(r)) for r in rows]
