"""The Redis edge's shared parts: the values its operations return, which Redis failures
may pass, and :class:`RedisEdge`, the client, keys and registered scripts every part of
:class:`poller.store.Store` works with."""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import Callable, Sequence
from dataclasses import KW_ONLY, dataclass, field
from typing import Any, Literal

from redis.commands.core import AsyncScript
from redis.exceptions import (
    ClusterDownError,
    MasterDownError,
    NoScriptError,
    OutOfMemoryError,
    ReadOnlyError,
    RedisError,
    ResponseError,
    TryAgainError,
)
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

from poller.errors import PollerError
from poller.snapshot import StoredSnapshot
from poller.store import schema
from poller.store.connection import RedisClient
from poller.store.schema import (
    F,
    Keys,
    job_member,
    unwrap_entry,
)
from poller.tracking import JobState

CommitResult = Literal["ok", "duplicate", "fenced", "gone", "corrupt"]
AdmitResult = Literal["admitted", "tracked", "finished", "conflict", "corrupt"]


# Failures that say "not now" rather than "never": worth retrying with backoff.  (redis-py
# maps LOADING to BusyLoadingError, a ConnectionError; BUSY and NOREPLICAS keep their code.)
_TRANSIENT_ERRORS = (
    RedisConnectionError, RedisTimeoutError, OutOfMemoryError, ReadOnlyError, TryAgainError,
    ClusterDownError, MasterDownError, NoScriptError,
)  # fmt: skip
_TRANSIENT_CODES = ("BUSY", "NOREPLICAS")


def is_transient(exc: BaseException) -> bool:
    """True for Redis failures that may pass (connection lost, timeout, a server loading its
    data, busy with a script, failing over or out of memory); False for deterministic errors
    (``WRONGTYPE``, a script error) that would fail the same way on every retry."""
    if isinstance(exc, _TRANSIENT_ERRORS):
        return True
    return isinstance(exc, ResponseError) and str(exc).startswith(_TRANSIENT_CODES)


def settle(waiter: asyncio.Future[Any], outcome: Any) -> None:
    """Resolve ``waiter`` with ``outcome`` (an exception is raised to its caller)."""
    if waiter.done():  # its caller was cancelled meanwhile
        return
    if isinstance(outcome, BaseException):
        waiter.set_exception(outcome)
    else:
        waiter.set_result(outcome)


def as_text(value: Any) -> str:
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace")
    return "" if value is None else str(value)


def _float(value: str) -> float | None:
    return float(value) if value else None


def state_from_hash(fields: dict[str, str]) -> JobState:
    """Decode a job hash (all values as text); raises ``ValueError`` when it is not valid."""
    job_member(fields.get(F.project, ""), fields.get(F.job, ""))  # both IDs well-formed
    return JobState(
        job_id=fields.get(F.job, ""),
        project_id=fields.get(F.project, ""),
        instance_id=fields.get(F.instance, ""),
        meta=fields.get(F.meta, ""),
        snapshot=StoredSnapshot.from_json(fields.get(F.snap, "")),
        interval=float(fields.get(F.interval) or 0),
        attempts=int(fields.get(F.attempts) or 0),
        not_found_since=_float(fields.get(F.nf_since, "")),
        taken_at=float(fields.get(F.taken_at) or 0),
        seq=int(fields.get(F.seq) or 1),
        token=fields.get(F.token, ""),
        owner=fields.get(F.owner, ""),
        lease_until=_float(fields.get(F.lease_until, "")),
        finished_at=_float(fields.get(F.finished_at, "")),
        last_error=fields.get(F.last_error, ""),
        last_poll_at=_float(fields.get(F.last_poll_at, "")),
        due_at=_float(fields.get(F.due, "")),
        crashes=int(fields.get(F.crashes) or 0),
    )


class CorruptJobState(PollerError, ValueError):
    """A job's stored state cannot be decoded (a hand edit, another program's keys)."""

    label = "unreadable job state in Redis"


@dataclass(frozen=True, slots=True)
class Delivery:
    """One intake message in flight: the entry as it sits in the in-flight list, and its
    ticket and raw message (see ``schema.MOVE_TO_INFLIGHT``)."""

    entry: bytes
    ticket: str
    raw: bytes

    @classmethod
    def of(cls, entry: bytes) -> Delivery:
        ticket, raw = unwrap_entry(entry)
        return cls(entry, ticket, raw)


@dataclass(slots=True)
class Claim:
    """The result of one claim: leased jobs, quarantined ones, and the next due time."""

    jobs: list[JobState] = field(default_factory=list)
    quarantined: list[tuple[str, str]] = field(default_factory=list)
    next_due: float | None = None
    #: what the shards that could not be claimed from answered (the others' leases stand)
    errors: list[RedisError] = field(default_factory=list)

    def saw_due(self, due: float) -> None:
        self.next_due = due if self.next_due is None else min(self.next_due, due)


@dataclass(frozen=True, slots=True)
class JobView:
    """A job's stored state plus its schedule score (for ``poller status``)."""

    state: JobState
    tracking: bool
    due_at: float | None
    outcome: str


ScriptCall = tuple[AsyncScript, list[str], list[Any]]
PendingCommit = tuple[list[str], list[str | int], asyncio.Future[Any]]


@dataclass(eq=False, repr=False)
class RedisEdge:
    """The client, the key names and the registered scripts, and how to send many script
    calls at once: what every part of :class:`poller.store.Store` builds on."""

    redis: RedisClient
    keys: Keys
    _: KW_ONLY
    retention: float = 86400.0
    maxlen: int = 1_000_000
    seq_memory: float = 30 * 86400.0
    wait_replicas: int = 0
    wait_timeout: float = 1.0
    #: Called with (replicas wanted, replicas that acknowledged) after a short ``WAIT``.
    on_wait_short: Callable[[int, int], None] | None = field(default=None, init=False)

    def __post_init__(self) -> None:
        # With several shards the intake side and a job's shard are different slots: a step
        # that spans both is two scripts (see ``admit_batch``).
        self.split = self.keys.shards > 1
        self._claims = itertools.count()
        self._pending_commits: list[PendingCommit] = []
        self._sending: set[asyncio.Task[None]] = set()
        self._scripts: dict[str, AsyncScript] = {}

    @property
    def wait_timeout_ms(self) -> int:
        """``wait_timeout`` as ``WAIT`` takes it: whole milliseconds, at least one."""
        return max(1, int(self.wait_timeout * 1000))

    def script(self, source: str) -> AsyncScript:
        """The registered script for ``source``, one of :mod:`poller.store.schema`'s (each is
        registered with the client once, on first use: ``EVALSHA``, loading it if missing)."""
        found = self._scripts.get(source)
        if found is None:
            found = self._scripts[source] = self.redis.register_script(source)
        return found

    async def _run_scripts(self, calls: Sequence[ScriptCall]) -> list[Any]:
        """Send script calls in one pipeline (in a cluster, one per primary, all at once) and
        return each reply, or the error it met, in order.  A call that met a server without
        the script (restarted, failed over) did not run: it is sent again, loading it."""
        async with self.redis.pipeline(transaction=False) as pipe:
            for script, keys, args in calls:
                # by name: redis-py's cluster pipeline blocks its evalsha() method, not the
                # command (routed by its keys' slot like any other)
                pipe.execute_command("EVALSHA", script.sha, len(keys), *keys, *args)
            replies: list[Any] = await pipe.execute(raise_on_error=False)
        for i, ((script, keys, args), reply) in enumerate(zip(calls, replies, strict=True)):
            if isinstance(reply, NoScriptError):
                try:
                    replies[i] = await script(keys=keys, args=args)
                except RedisError as exc:
                    replies[i] = exc
        return replies

    # --- layout -------------------------------------------------------------------------

    async def check_layout(self) -> int:
        """Record this shard count under the prefix, or return the one recorded before.

        Jobs live in the shard their ID hashes to for the count they were admitted under;
        a replica with another count would look for them in the wrong place.
        """
        keys = [self.keys.layout, self.keys.one_shard_schedule]
        recorded = await self.script(schema.RECORD_LAYOUT)(keys=keys, args=[self.keys.shards])
        return int(as_text(recorded) or self.keys.shards)

    async def server_time(self) -> float:
        """The Redis server's clock, in epoch seconds."""
        seconds, micros = await self.redis.time()
        return float(seconds) + float(micros) / 1e6
