"""Reading and feeding the poller's Redis interfaces from Python.

Everything a consumer or producer needs, against the same Redis and key prefix as the daemon::

    settings = load_settings()                 # POLLER_* variables / POLLER_CONFIG, as the daemon
    keys = keys_from_settings(settings)         # the key names under POLLER_KEY_PREFIX
    redis = Redis.from_url(settings.redis_url)

Queue a job, then wait for its end (rides out Redis restarts until ``timeout``)::

    await enqueue_job(redis, keys, "JOB-1", meta={"change": "CHG-42"})
    final = await wait_for_job(redis, keys, "JOB-1", timeout=1800)
    print(final.reason or final.to_status)

Tail one job's stream (or every job's) as it grows::

    async for event in tail_events(redis, keys, job_id="JOB-1"):
        print(event.seq, event.event, event.to_status)
        if event.is_final:
            break

Consume every job's events durably, at least once, taking over what a crashed consumer of the
same group left pending (at start and every ``claim_interval`` seconds after)::

    group = ConsumerGroup.for_events(redis, keys, group="notifier", consumer="pod-1")
    async for event in group.events():
        await notify(event)
        await group.ack(event)

Delivery through a group is at least once: dedupe on ``(job_id, seq)`` if a redelivered
event would hurt.

Shards.  With ``POLLER_SHARDS=N`` every job's events go to its shard's global stream
(:attr:`Keys.event_streams`, one per shard; in Redis Cluster each in its own hash slot, so
no command here names two of them).  Everything above reads all of them: :func:`tail_events`
follows every shard's stream, :meth:`ConsumerGroup.for_events` is one group on each.  A job
never leaves its shard, so its events keep their order; across shards there is no total
order, and events are merged by entry ID (a millisecond timestamp) as the best
approximation.  :class:`StreamCursor` is the reader underneath, for whoever needs the
positions themselves (e.g. to resume later).
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import anyio
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import RedisError, ResponseError

from poller.backoff import Backoff
from poller.config import Settings, load_settings
from poller.intake import Invalid, JobRequest, build_message, parse_message
from poller.snapshot import EventKind
from poller.statuses import is_terminal
from poller.store.connection import RedisClient
from poller.store.schema import Keys, entry_order
from poller.store.store import is_transient

__all__ = [
    "ConsumerGroup",
    "JobEvent",
    "Keys",
    "StreamCursor",
    "StreamEntry",
    "WaitTimeout",
    "enqueue_job",
    "keys_from_settings",
    "stream_id_since",
    "tail_events",
    "wait_for_job",
]

# Blocking reads must return before the client's socket timeout (5 s in ``store.connect``).


def _text(value: Any) -> str:
    return value.decode("utf-8", "replace") if isinstance(value, bytes) else str(value)


@dataclass(frozen=True, slots=True)
class JobEvent:
    """One stream entry, typed.  ``fields`` keeps the raw map for anything not named here;
    ``stream`` is the stream it was read from, when the reader knows (every reader here sets
    it: :meth:`ConsumerGroup.ack` acknowledges it there)."""

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
    stream: str | None = field(default=None, repr=False, compare=False)

    @classmethod
    def from_entry(
        cls, entry_id: Any, raw: Mapping[Any, Any], *, stream: str | None = None
    ) -> JobEvent:
        """Decode a stream entry (bytes or text) into a :class:`JobEvent`; ``stream``: the
        stream it was read from."""
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
            stream=stream,
        )

    @property
    def is_final(self) -> bool:
        """True for a job's last event: terminal job status, or abandoned."""
        return self.event == EventKind.JOB_ABANDONED or (
            self.event == EventKind.JOB_STATUS_CHANGED and is_terminal(self.to_status)
        )


def keys_from_settings(settings: Settings | None = None) -> Keys:
    """The key names the daemon uses, from the same settings it reads.

    :param settings: settings already loaded; by default they are loaded like the daemon's
        (``POLLER_*`` variables over the ``POLLER_CONFIG`` TOML file), so ``POLLER_KEY_PREFIX``
        means the same here as there.  Raises :class:`poller.config.ConfigError` on a bad value.
    """
    settings = settings if settings is not None else load_settings()
    return Keys(settings.key_prefix, settings.shards)


async def enqueue_job(
    redis: RedisClient,
    keys: Keys,
    job_id: str,
    *,
    project_id: str = "",
    instance_id: str = "",
    meta: Mapping[str, Any] | None = None,
    force: bool = False,
) -> str:
    """Queue a job for tracking, as a deployment system does (``LPUSH {prefix}:jobs``).

    The message is validated first, so an invalid one raises instead of being dead-lettered.
    Queueing a job that is tracked already is a no-op for the daemon, so a retry is harmless.

    :param job_id: the ``job_id`` a ServiceStage call returned.
    :param project_id: its project; empty: the daemon's ``POLLER_PROJECT_ID``.
    :param instance_id: optional ``instance_id`` query parameter for the API.
    :param meta: a small JSON object copied into every event of the job (e.g. a change ID).
    :param force: track it again even if it finished less than the retention period ago.
    :returns: the message pushed.
    :raises ValueError: the job ID, project ID, instance ID or ``meta`` is not valid.
    """
    request = JobRequest(
        job_id, project_id=project_id, instance_id=instance_id, meta=meta, force=force
    )
    message = build_message(request)
    # Without a project the daemon fills in its default: any valid placeholder checks the rest.
    parsed = parse_message(message.encode(), project_id or "default")
    if isinstance(parsed, Invalid):
        raise ValueError(f"{job_id!r}: {parsed.reason}")
    await redis.lpush(keys.intake, message)
    return message


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


def _after(last: str) -> str:
    """XRANGE's ``min`` for the entries after ``last``."""
    return last if last == "0-0" else f"({last}"


def _first_error(group: BaseExceptionGroup[BaseException]) -> BaseException:
    """The first error of a task group that is not a cancellation (callers catch
    ``RedisError``, not groups)."""
    for exc in group.exceptions:
        if isinstance(exc, BaseExceptionGroup):
            return _first_error(exc)
        if not isinstance(exc, anyio.get_cancelled_exc_class()):
            return exc
    return group.exceptions[0]


@dataclass(frozen=True, slots=True)
class StreamEntry:
    """One raw entry of one of the streams a :class:`StreamCursor` reads."""

    stream: str
    entry_id: str
    raw: Mapping[Any, Any]

    def event(self) -> JobEvent:
        """The entry as a :class:`JobEvent` (raises ``KeyError``/``ValueError`` when it is not
        one)."""
        return JobEvent.from_entry(self.entry_id, self.raw, stream=self.stream)


def merge_entries(pages: Sequence[tuple[str, Sequence[tuple[Any, Any]]]]) -> list[StreamEntry]:
    """Entries of several streams (each page in its stream's order) in entry-ID order; ties
    in the order of ``pages``.  One stream's order is always kept."""
    merged = [
        StreamEntry(stream, _text(entry_id), raw or {})
        for stream, entries in pages
        for entry_id, raw in entries
    ]
    if len(pages) > 1:
        merged.sort(key=lambda e: entry_order(e.entry_id))  # stable: ties keep page order
    return merged


async def newest_entry_ids(redis: RedisClient, streams: Sequence[str]) -> dict[str, str]:
    """Each stream's newest entry ID (``0-0`` for an empty or missing one), one round trip
    per node (a pipeline: in a cluster, one per primary)."""
    if len(streams) == 1:
        return {streams[0]: await _last_entry_id(redis, streams[0])}
    async with redis.pipeline(transaction=False) as pipe:
        for stream in streams:
            pipe.xrevrange(stream, count=1)
        replies = await pipe.execute()
    return {s: _text(r[0][0]) if r else "0-0" for s, r in zip(streams, replies, strict=True)}


class StreamCursor:
    """A position in each of several streams (e.g. every shard's global stream), read
    together and merged by entry ID.

    Each stream is read with commands that name that stream only, so the streams may live in
    different hash slots (Redis Cluster).  Reads do not move the cursor: call :meth:`advance`
    for each entry consumed, so whatever was read but not consumed is read again.

    :param positions: stream -> the ID of the last entry already seen there (``0-0``: none).
    :param count: entries per stream per read.
    """

    def __init__(self, redis: RedisClient, positions: Mapping[str, str], *, count: int = 500):
        if not positions:
            raise ValueError("StreamCursor: no streams")
        self.redis = redis
        self.positions = dict(positions)
        self.count = count

    @classmethod
    async def start_at(
        cls,
        redis: RedisClient,
        streams: Sequence[str],
        start: str | Mapping[str, str] = "0-0",
        *,
        count: int = 500,
    ) -> StreamCursor:
        """A cursor over ``streams``.

        :param start: ``0-0`` every stream from its beginning; ``$`` after each stream's
            newest entry now (fixed here, per stream); another ID: after that ID in every
            stream; or a mapping stream -> ID (``$`` allowed), streams it leaves out from
            their beginning.
        """
        wanted = {
            s: (start.get(s, "0-0") if isinstance(start, Mapping) else start) for s in streams
        }
        now = [s for s, at in wanted.items() if at == "$"]
        if now:
            wanted |= await newest_entry_ids(redis, now)
        return cls(redis, wanted, count=count)

    @property
    def streams(self) -> tuple[str, ...]:
        return tuple(self.positions)

    def advance(self, entry: StreamEntry) -> None:
        """Record ``entry`` as consumed: reads go on after it in its stream."""
        self.positions[entry.stream] = entry.entry_id

    async def fetch(self) -> list[StreamEntry]:
        """Entries after the positions, without waiting, in entry-ID order.

        With several streams, only up to the lowest last ID of the streams that filled a
        page: whatever the streams hold beyond that (read again later) may sort before the
        others' entries, so the merge stays in order over any backlog.
        """
        if len(self.positions) == 1:
            ((stream, last),) = self.positions.items()
            entries: Any = await self.redis.xrange(stream, min=_after(last), count=self.count)
            return merge_entries([(stream, entries)])
        async with self.redis.pipeline(transaction=False) as pipe:
            for stream, last in self.positions.items():
                pipe.xrange(stream, min=_after(last), count=self.count)
            replies = await pipe.execute()
        pages = list(zip(self.positions, replies, strict=True))
        full = [entry_order(_text(page[-1][0])) for _, page in pages if len(page) >= self.count]
        merged = merge_entries(pages)
        if full:
            limit = min(full)
            merged = [e for e in merged if entry_order(e.entry_id) <= limit]
        return merged

    async def wait(self, block_ms: int) -> list[StreamEntry]:
        """Wait up to ``block_ms`` (``0``: without limit) for entries after the positions,
        then return them (empty: none came).

        With several streams, one blocking ``XREAD`` per stream runs at once (each on a
        connection of its own); the first to answer with entries ends the others.  Ended
        reads only wait (``XREAD`` takes nothing), so no entry is lost: what they would have
        returned is there for the next :meth:`fetch`.  (An ended read's connection is closed
        and opened again on its next use: the price of waiting on several slots at once.)
        """
        if len(self.positions) == 1:
            ((stream, last),) = self.positions.items()
            reply = await self.redis.xread({stream: last}, block=block_ms, count=self.count)
            return merge_entries([(stream, _entries(reply))])
        got: dict[str, list[tuple[Any, Any]]] = {}
        try:
            async with anyio.create_task_group() as tg:

                async def one(stream: str, last: str) -> None:
                    reply = await self.redis.xread({stream: last}, block=block_ms, count=self.count)
                    entries = _entries(reply)
                    if entries:
                        got[stream] = entries
                        tg.cancel_scope.cancel()

                for stream, last in self.positions.items():
                    tg.start_soon(one, stream, last)
        except BaseExceptionGroup as group:
            raise _first_error(group) from None
        return merge_entries([(s, got[s]) for s in self.positions if s in got])


async def _last_entry_id(redis: RedisClient, stream: str) -> str:
    """The ID of ``stream``'s newest entry, ``0-0`` when it is empty or missing."""
    newest = await redis.xrevrange(stream, count=1)
    return _text(newest[0][0]) if newest else "0-0"


async def _read_after(redis: RedisClient, stream: str, last: str) -> list[JobEvent]:
    """Entries after ``last`` (exclusive), without waiting."""
    entries: Any = await redis.xrange(stream, min=_after(last), count=500)
    return [JobEvent.from_entry(entry_id, raw, stream=stream) for entry_id, raw in entries]


async def _read_new(redis: RedisClient, stream: str, last: str, block_ms: int) -> list[JobEvent]:
    """Entries after ``last``, waiting up to ``block_ms`` for the first to arrive."""
    reply = await redis.xread({stream: last}, block=block_ms, count=500)
    return [JobEvent.from_entry(entry_id, raw, stream=stream) for entry_id, raw in _entries(reply)]


async def tail_events(
    redis: RedisClient,
    keys: Keys,
    *,
    job_id: str | None = None,
    start: str | Mapping[str, str] = "0-0",
    block_ms: int = 2000,
    follow: bool = True,
) -> AsyncIterator[JobEvent]:
    """Events of every job (every shard's global stream, :attr:`Keys.event_streams`) or of
    ``job_id``, oldest first.

    A job's events come in order; events of jobs in different shards are merged by entry ID
    (each event's ``stream`` says which it came from).

    :param job_id: read that job's own stream instead of the global ones.
    :param start: ``0-0`` from the beginning; ``$`` only what is appended from now on (like
        ``tail -f``; fixed once per stream, at the first read, so nothing between two reads
        is missed); a stream entry ID, exclusive (in every shard's stream: entries after
        that time); or a mapping stream -> ID (see :meth:`StreamCursor.start_at`).
    :param block_ms: how long one wait for new events takes at most (keep it below the
        client's socket timeout); with several shards it waits on all of them at once.
    :param follow: keep waiting for new events; otherwise stop at the end of the streams.
    """
    streams = (keys.job_events(job_id),) if job_id else keys.event_streams
    cursor = await StreamCursor.start_at(redis, streams, start, count=500)
    while True:
        batch = await cursor.fetch()
        if not batch and follow:
            batch = await cursor.wait(block_ms)
        for entry in batch:
            event = entry.event()
            cursor.advance(entry)
            yield event
        if not batch and not follow:
            return


class WaitTimeout(TimeoutError):
    """:func:`wait_for_job`'s timeout passed before the job's final event.

    ``redis_error`` is set when Redis was unreachable at that moment (the latest attempt
    failed, or none had been answered yet); ``None`` means Redis answered and the job simply
    had not ended.
    """

    def __init__(self, job_id: str, timeout: float | None, redis_error: RedisError | None) -> None:
        self.job_id = job_id
        self.timeout = timeout
        self.redis_error = redis_error
        within = f" within {timeout:g}s" if timeout is not None else ""
        why = f"; Redis unreachable: {redis_error}" if redis_error is not None else ""
        super().__init__(f"no final event of {job_id}{within}{why}")


@dataclass(slots=True)
class _Reachability:
    """Whether Redis answers, across the retries of one :func:`wait_for_job`.

    Tells ``on_redis_error`` when Redis stops answering (the first error of an outage) and
    when it answers again (``None``), paces the retries with ``backoff``, and knows what a
    timeout should report as the reason.
    """

    backoff: Backoff
    on_redis_error: Callable[[RedisError | None], object] | None
    error: RedisError | None = None  # of the latest attempt, None once Redis answers
    answered: bool = False

    def answer(self) -> None:
        """Redis answered a command: an outage, if any, is over."""
        if self.error is not None and self.on_redis_error is not None:
            self.on_redis_error(None)
        self.error, self.answered = None, True
        self.backoff.succeeded()

    async def retry_after(self, exc: RedisError) -> None:
        """Record a transient error, then wait the backoff's delay before the next attempt."""
        if self.error is None and self.on_redis_error is not None:
            self.on_redis_error(exc)
        self.error = exc
        await anyio.sleep(self.backoff.failed())

    def timeout_error(self) -> RedisError | None:
        """The Redis error to report with a timeout: the latest attempt's, or one saying Redis
        never answered at all; ``None`` when it was answering."""
        if self.error is None and not self.answered:
            return RedisConnectionError("Redis did not answer")
        return self.error


async def _next_batch(
    redis: RedisClient, stream: str, last: str, block_ms: int, reachability: _Reachability
) -> list[JobEvent]:
    """The events after ``last``: those already there, or else the next to arrive (if any
    within ``block_ms``)."""
    batch = await _read_after(redis, stream, last)
    reachability.answer()
    if not batch:
        batch = await _read_new(redis, stream, last, block_ms)
        reachability.answer()
    return batch


def _final_event(
    batch: Sequence[JobEvent],
    project_id: str | None,
    on_event: Callable[[JobEvent], object] | None,
) -> JobEvent | None:
    """The job's final event in ``batch``, if there is one; ``on_event`` sees each event of
    ``project_id`` (any project: ``None``) up to it."""
    for event in batch:
        if project_id is not None and event.project_id != project_id:
            continue
        if on_event is not None:
            on_event(event)
        if event.is_final:
            return event
    return None


async def wait_for_job(
    redis: RedisClient,
    keys: Keys,
    job_id: str,
    project_id: str | None = None,
    timeout: float | None = None,  # noqa: ASYNC109 - it also decides what WaitTimeout says
    *,
    enqueue: str | None = None,
    on_event: Callable[[JobEvent], object] | None = None,
    on_redis_error: Callable[[RedisError | None], object] | None = None,
    backoff: Backoff | None = None,
    block_ms: int = 2000,
) -> JobEvent:
    """Follow one job's stream from its first event until its final one, and return that.

    Works whether called before the job is queued, while it is tracked, or after it ended
    (within the retention period, 24 h by default).  Redis errors that may pass (connection
    lost, a restart, a failover) are retried with backoff until ``timeout``, resuming after
    the last event seen, so a restart in the middle loses and repeats nothing.

    :param job_id: the job to wait for.
    :param project_id: only events of this project count (``None``: any).
    :param timeout: seconds to wait at most (``None``: no limit); then :class:`WaitTimeout`
        (one that ends before Redis answered at all counts as Redis unreachable).
    :param enqueue: an intake message (see :func:`enqueue_job`/:func:`poller.intake.build_message`)
        to push first, retried like the reads.
    :param on_event: called with each of the job's events as it is read, the final one too.
    :param on_redis_error: called with the error when Redis stops answering and with ``None``
        when it answers again.
    :param backoff: the retry delays (default: from 0.1 s, doubling, capped at 2 s, jittered).
    :param block_ms: how long one blocking read waits.
    :returns: the final event: ``job.status_changed`` to a terminal status, or ``job.abandoned``.
    :raises WaitTimeout: ``timeout`` passed first (``redis_error`` says whether Redis was down).
    :raises redis.exceptions.RedisError: an error that retrying cannot fix (e.g. ``WRONGTYPE``).
    """
    reachability = _Reachability(
        backoff if backoff is not None else Backoff(initial=0.1, cap=2.0), on_redis_error
    )
    stream = keys.job_events(job_id)
    last = "0-0"
    with anyio.move_on_after(math.inf if timeout is None else timeout):
        while True:
            try:
                if enqueue is not None:
                    await redis.lpush(keys.intake, enqueue)
                    enqueue = None
                    reachability.answer()
                batch = await _next_batch(redis, stream, last, block_ms, reachability)
            except RedisError as exc:
                if not is_transient(exc):
                    raise
                await reachability.retry_after(exc)
                continue
            final = _final_event(batch, project_id, on_event)
            if final is not None:
                return final
            if batch:
                last = batch[-1].entry_id
    raise WaitTimeout(job_id, timeout, reachability.timeout_error())


class ConsumerGroup:
    """A named consumer in a Redis consumer group over one stream or several (the group is
    created on each if missing).

    Over several streams (every shard's global stream: :meth:`for_events`) it is one group of
    the same name on each stream, read with commands that name one stream only (the streams
    may be in different hash slots).  Events of one stream come in that stream's order (a
    job's in its order: a job is in one shard); events of different streams are merged by
    entry ID.  :meth:`ack` acknowledges an event on the stream it came from.

    :param redis: the client.
    :param stream: the stream or streams, e.g. ``keys.event_streams``, ``keys.events`` (one
        shard) or ``keys.job_events(job_id)``.
    :param group: the group's name; consumers of one group share the work.
    :param consumer: this consumer's name within the group; a restarted consumer with the same
        name first gets what it had been given but had not acknowledged.
    :param start: where a group created here starts: ``0-0`` the beginning, ``$`` from now.
    :param claim_idle_ms: entries another consumer left unacknowledged this long are taken
        over (it is presumed dead); keep it above the time one event takes to handle.
    :param claim_interval: how often, in seconds, to look for such entries while following
        (also once at the start).
    :param block_ms: how long one wait for new entries takes at most.
    :param count: entries per read (per stream).
    """

    def __init__(
        self,
        redis: RedisClient,
        stream: str | Sequence[str],
        *,
        group: str,
        consumer: str,
        start: str = "0-0",
        claim_idle_ms: int = 60_000,
        claim_interval: float = 30.0,
        block_ms: int = 2000,
        count: int = 100,
    ) -> None:
        streams = (stream,) if isinstance(stream, str) else tuple(stream)
        if not streams or len(set(streams)) != len(streams):
            raise ValueError("ConsumerGroup: one stream or more, each once")
        self.redis = redis
        self.streams = streams
        self.group = group
        self.consumer = consumer
        self.start = start
        self.claim_idle_ms = claim_idle_ms
        self.claim_interval = claim_interval
        self.block_ms = block_ms
        self.count = count

    @classmethod
    def for_events(
        cls, redis: RedisClient, keys: Keys, *, group: str, consumer: str, **options: Any
    ) -> ConsumerGroup:
        """A consumer of every job's events: the group on every shard's global stream."""
        return cls(redis, keys.event_streams, group=group, consumer=consumer, **options)

    @property
    def stream(self) -> str:
        """The stream, when there is one (see :attr:`streams`)."""
        if len(self.streams) != 1:
            raise ValueError(f"ConsumerGroup over {len(self.streams)} streams: see .streams")
        return self.streams[0]

    async def ensure(self) -> None:
        """Create the group (at ``start``) and the streams if they do not exist."""
        for stream in self.streams:
            try:
                await self.redis.xgroup_create(stream, self.group, id=self.start, mkstream=True)
            except ResponseError as exc:
                if "BUSYGROUP" not in str(exc):
                    raise

    async def recover(self) -> list[JobEvent]:
        """Take over entries other consumers left unacknowledged for ``claim_idle_ms``, on
        every stream."""
        recovered: list[JobEvent] = []
        for stream in self.streams:
            cursor = "0-0"
            while True:
                reply = await self.redis.xautoclaim(
                    stream, self.group, self.consumer, self.claim_idle_ms, cursor, count=self.count
                )
                cursor, entries = _text(reply[0]), reply[1]
                recovered += [
                    JobEvent.from_entry(i, raw, stream=stream) for i, raw in entries if raw
                ]
                if cursor == "0-0":
                    break
        return recovered

    async def _own_pending(self, stream: str) -> AsyncIterator[JobEvent]:
        """What this consumer was given on ``stream`` before and never acknowledged."""
        cursor = "0-0"
        while True:
            pending = _entries(
                await self.redis.xreadgroup(
                    self.group, self.consumer, {stream: cursor}, count=self.count
                )
            )
            if not pending:
                return
            for entry_id, raw in pending:
                cursor = _text(entry_id)
                if raw:
                    yield JobEvent.from_entry(entry_id, raw, stream=stream)

    async def _read_new(self) -> tuple[list[JobEvent], dict[str, str]]:
        """New entries of every stream (``>``) without waiting, merged, and each stream's
        newest entry ID just before (what a wait for more waits after)."""
        async with self.redis.pipeline(transaction=False) as pipe:
            for stream in self.streams:  # per stream in this order, on the stream's node
                pipe.xrevrange(stream, count=1)
                pipe.xreadgroup(self.group, self.consumer, {stream: ">"}, count=self.count)
            replies = await pipe.execute()
        tops = {
            s: _text(newest[0][0]) if newest else "0-0"
            for s, newest in zip(self.streams, replies[0::2], strict=True)
        }
        pages = [(s, _entries(r)) for s, r in zip(self.streams, replies[1::2], strict=True)]
        return [entry.event() for entry in merge_entries(pages)], tops

    async def events(self, *, follow: bool = True) -> AsyncIterator[JobEvent]:
        """This consumer's own pending entries, then others' stale ones, then new ones; while
        following, others' stale entries again every ``claim_interval`` seconds.

        :param follow: keep waiting for new entries; otherwise stop when none are left.
        """
        await self.ensure()
        for stream in self.streams:
            async for event in self._own_pending(stream):
                yield event
        for event in await self.recover():
            yield event
        claimed_at = time.monotonic()
        block = min(self.block_ms, max(1, int(self.claim_interval * 1000)))
        while True:
            if follow and time.monotonic() - claimed_at >= self.claim_interval:
                claimed_at = time.monotonic()
                for event in await self.recover():
                    yield event
            if len(self.streams) == 1:
                stream = self.streams[0]
                reply = await self.redis.xreadgroup(
                    self.group,
                    self.consumer,
                    {stream: ">"},
                    count=self.count,
                    block=block if follow else None,
                )
                batch = [JobEvent.from_entry(i, raw, stream=stream) for i, raw in _entries(reply)]
            else:
                # Several streams cannot be one blocking XREADGROUP (other slots): read each
                # without waiting; when none had anything, wait for an entry after the newest
                # each had (XREAD takes nothing, so ending a wait early loses nothing).
                batch, tops = await self._read_new()
                if not batch and follow:
                    await StreamCursor(self.redis, tops, count=1).wait(block)
                    continue
            for event in batch:
                yield event
            if not batch and not follow:
                return

    async def ack(self, event: JobEvent) -> None:
        """Acknowledge ``event``: it will not be delivered to this group again.  Over several
        streams, on the one it was read from (``event.stream``)."""
        if len(self.streams) == 1:
            stream = self.streams[0]
        elif event.stream in self.streams:
            stream = event.stream
        else:
            raise ValueError(f"event {event.entry_id} was not read from this group's streams")
        await self.redis.xack(stream, self.group, event.entry_id)
