"""The Redis edge: typed async operations over the keys and scripts of ``schema``."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, cast

from redis.asyncio import Redis
from redis.asyncio.retry import Retry
from redis.backoff import ExponentialBackoff
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
from poller.intake import Admission, Invalid
from poller.snapshot import AbandonReason, StoredSnapshot, format_timestamp
from poller.store import schema
from poller.store.schema import STATE_QUARANTINED, F, Keys, job_member
from poller.tracking import JobState, Outcome, Plan

CommitResult = Literal["ok", "duplicate", "fenced", "gone", "corrupt"]
AdmitResult = Literal["admitted", "tracked", "finished", "conflict", "corrupt"]


def connect(url: str, *, socket_timeout: float = 5.0) -> Redis:
    """A client for ``url`` that retries a command a few times when a connection drops.

    Every write the poller makes is safe to retry: commits carry a unique ID, admissions and
    claims are checked against the state they change.
    """
    return Redis.from_url(
        url,
        socket_timeout=socket_timeout,
        socket_connect_timeout=socket_timeout,
        health_check_interval=15,
        retry=Retry(ExponentialBackoff(cap=1.0, base=0.05), 3),
        retry_on_error=[RedisConnectionError, RedisTimeoutError],
    )


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


def _settle(waiter: asyncio.Future[Any], outcome: Any) -> None:
    """Resolve ``waiter`` with ``outcome`` (an exception is raised to its caller)."""
    if waiter.done():  # its caller was cancelled meanwhile
        return
    if isinstance(outcome, BaseException):
        waiter.set_exception(outcome)
    else:
        waiter.set_result(outcome)


def _text(value: Any) -> str:
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


@dataclass(slots=True)
class Claim:
    """The result of one claim: leased jobs, quarantined ones, and the next due time."""

    jobs: list[JobState] = field(default_factory=list)
    quarantined: list[tuple[str, str]] = field(default_factory=list)
    next_due: float | None = None


@dataclass(frozen=True, slots=True)
class JobView:
    """A job's stored state plus its schedule score (for ``poller status``)."""

    state: JobState
    tracking: bool
    due_at: float | None
    outcome: str


class Store:
    """Async operations on one prefix of one Redis database."""

    def __init__(
        self,
        redis: Redis,
        keys: Keys,
        *,
        retention: float = 86400.0,
        maxlen: int = 1_000_000,
        seq_memory: float = 30 * 86400.0,
    ) -> None:
        self.redis = redis
        self.keys = keys
        self.retention = retention
        self.maxlen = maxlen
        self.seq_memory = seq_memory
        self._pending_commits: list[tuple[list[str], list[str | int], asyncio.Future[Any]]] = []
        self._sending: set[asyncio.Task[None]] = set()
        self._move = redis.register_script(schema.MOVE_TO_INFLIGHT)
        self._admit = redis.register_script(schema.ADMIT)
        self._dead = redis.register_script(schema.DEAD_LETTER)
        self._recover = redis.register_script(schema.RECOVER_ORPHANS)
        self._claim = redis.register_script(schema.CLAIM_DUE)
        self._renew = redis.register_script(schema.RENEW_LEASES)
        self._release = redis.register_script(schema.RELEASE)
        self._commit = redis.register_script(schema.COMMIT)
        self._abandon = redis.register_script(schema.ABANDON)
        self._rate = redis.register_script(schema.ACQUIRE_RATE)
        self._requeue = redis.register_script(schema.REQUEUE_DEAD)

    # --- intake -------------------------------------------------------------------------

    async def enqueue(self, *messages: str | bytes) -> int:
        """LPUSH messages onto the intake queue, as a producer would."""
        return int(await self.redis.lpush(self.keys.intake, *messages))

    async def take_messages(self, replica: str, limit: int, block: float) -> list[bytes]:
        """Messages in this replica's in-flight list (oldest first), moving new ones there.

        Blocks up to ``block`` seconds when the queue is empty.  Whatever sits in the in-flight
        list is returned again until admitted or dead-lettered, so a lost reply loses nothing;
        the list never grows past ``limit`` (plus one message a blocking wait brought), so a
        message that cannot be admitted holds back at most that many.
        """
        inflight = self.keys.inflight(replica)
        moved = int(await self._move(keys=[self.keys.intake, inflight], args=[limit]))
        if moved == 0 and block > 0:
            pending = await self.redis.llen(inflight)
            if not pending:
                await self.redis.blmove(
                    self.keys.intake, inflight, cast(int, block), "RIGHT", "LEFT"
                )
        raw = await self.redis.lrange(inflight, -limit, -1)
        return [m if isinstance(m, bytes) else m.encode() for m in reversed(raw)]

    async def admit(
        self, replica: str, raw: bytes, admission: Admission, now: float
    ) -> AdmitResult:
        """Start tracking an admitted message's job (idempotent; see ``schema.ADMIT``)."""
        (result,) = await self.admit_batch(replica, [(raw, admission)], now)
        if isinstance(result, RedisError):
            raise result
        return cast(AdmitResult, result)

    async def admit_batch(
        self, replica: str, messages: Sequence[tuple[bytes, Admission | Invalid]], now: float
    ) -> list[AdmitResult | Literal["dead_letter"] | RedisError]:
        """Admit the valid messages and dead-letter the invalid ones, in one round trip.

        One result per message, in order: what ``schema.ADMIT`` answered, ``"dead_letter"``,
        or the Redis error that message met (each message is its own script call, so one
        failure leaves the others done).  Every step is idempotent, so a batch may be sent
        again after a lost reply.
        """
        async with self.redis.pipeline(transaction=False) as pipe:
            for raw, parsed in messages:
                if isinstance(parsed, Invalid):
                    await self._dead_letter_call(pipe, replica, raw, parsed.reason, now)
                else:
                    await self._admit_call(pipe, replica, raw, parsed, now)
            replies = await pipe.execute(raise_on_error=False)
        out: list[AdmitResult | Literal["dead_letter"] | RedisError] = []
        for (_, parsed), reply in zip(messages, replies, strict=True):
            if isinstance(reply, RedisError):
                out.append(reply)
            elif isinstance(parsed, Invalid):
                out.append("dead_letter")
            else:
                out.append(cast(AdmitResult, _text(reply)))
        return out

    async def _admit_call(
        self, client: Any, replica: str, raw: bytes, admission: Admission, now: float
    ) -> Any:
        member = job_member(admission.project_id, admission.job_id)
        return await self._admit(
            keys=[
                self.keys.schedule,
                self.keys.job(member),
                self.keys.job_events(admission.job_id),
                self.keys.inflight(replica),
                self.keys.jobref(admission.job_id),
            ],
            args=[
                raw,
                member,
                admission.project_id,
                admission.job_id,
                admission.instance_id,
                admission.meta,
                "1" if admission.force else "0",
                repr(now),
                self.keys.job_prefix,
            ],
            client=client,
        )

    async def _dead_letter_call(
        self, client: Any, replica: str, raw: bytes, reason: str, now: float
    ) -> Any:
        record = json.dumps(
            {"raw": raw.decode("utf-8", "backslashreplace"), "reason": reason,
             "at": format_timestamp(now)},
            ensure_ascii=False,
        )  # fmt: skip
        return await self._dead(
            keys=[self.keys.dead, self.keys.inflight(replica)], args=[raw, record], client=client
        )

    async def dead_letter(self, replica: str, raw: bytes, reason: str, now: float) -> None:
        """Park ``raw`` in the dead-letter list with ``reason`` and take it out of flight."""
        await self._dead_letter_call(self.redis, replica, raw, reason, now)

    async def requeue_dead(self, records: Sequence[tuple[str, str]]) -> list[bool]:
        """Move ``(record, raw message)`` dead letters back onto the intake queue, each
        atomically (see ``schema.REQUEUE_DEAD``); False where the record was gone already."""
        if not records:
            return []
        done = await self._requeue(
            keys=[self.keys.dead, self.keys.intake], args=[v for pair in records for v in pair]
        )
        return [bool(int(ok)) for ok in done]

    async def heartbeat(self, replica: str, until: float) -> None:
        """Declare ``replica`` alive until ``until``."""
        await self.redis.zadd(self.keys.replicas, {replica: until})

    async def recover_orphans(self, now: float) -> int:
        """Hand the in-flight messages of replicas that stopped heart-beating back to intake."""
        return int(
            await self._recover(
                keys=[self.keys.replicas, self.keys.intake],
                args=[repr(now), self.keys.inflight_prefix],
            )
        )

    async def deregister(self, replica: str) -> int:
        """On clean exit: hand back this replica's in-flight messages and forget it."""
        inflight = self.keys.inflight(replica)
        moved = 0
        while await self.redis.lmove(inflight, self.keys.intake, "RIGHT", "RIGHT") is not None:
            moved += 1
        await self.redis.zrem(self.keys.replicas, replica)
        return moved

    # --- schedule and leases --------------------------------------------------------------

    async def claim_due(
        self, owner: str, now: float, lease: float, limit: int, claim_id: str | None = None
    ) -> Claim:
        """Atomically lease up to ``limit`` due jobs to ``owner`` until ``now + lease``.

        Also says when the schedule's earliest remaining entry is due (``None``: empty).  A job
        whose stored state cannot be decoded is quarantined (out of the schedule, a final
        ``job.abandoned`` for its consumers, a record in the dead-letter list) instead of being
        returned.  The claim carries an ID, so the client's retry after a lost reply gets the
        same leases back.
        """
        flat = await self._claim(
            keys=[self.keys.schedule, self.keys.claim(owner)],
            args=[
                repr(now),
                repr(now + lease),
                limit,
                owner,
                self.keys.job_prefix,
                claim_id or os.urandom(8).hex(),
                max(1, int(lease * 1000)),
            ],
        )
        claim = Claim(next_due=float(_text(flat[0])) if _text(flat[0]) else None)
        i = 1
        while i < len(flat):
            member, token, count = _text(flat[i]), _text(flat[i + 1]), int(flat[i + 2])
            values = [_text(v) for v in flat[i + 3 : i + 3 + max(0, count)]]
            i += 3 + max(0, count)
            try:
                if count < 0:
                    raise CorruptJobState("the job's key holds another type than a hash")
                fields = dict(zip(values[::2], values[1::2], strict=True))
                claim.jobs.append(state_from_hash(fields))
            except (ValueError, KeyError, TypeError) as exc:
                reason = f"unreadable job state: {type(exc).__name__}: {exc}"[:300]
                claim.quarantined.append((member, reason))
                # On failure its lease lapses and a later claim quarantines it; keep the batch.
                with contextlib.suppress(RedisError):
                    await self.quarantine(member, token, reason, now)
        return claim

    async def quarantine(self, member: str, token: str, reason: str, now: float) -> bool:
        """Retire a job whose state is unusable: a final ``job.abandoned`` (``corrupt_state``)
        on its streams, and a record of why in the dead-letter list."""
        record = json.dumps({"raw": member, "reason": reason, "at": format_timestamp(now)})
        return await self._abandon_job(
            member, token, record, now, AbandonReason.CORRUPT_STATE, reason,
            STATE_QUARANTINED, "corrupt",
        )  # fmt: skip

    async def cancel(self, project_id: str, job_id: str, who: str, now: float) -> bool:
        """End tracking on an operator's request: a final ``job.abandoned`` reason
        ``cancelled_by_operator``, in one step, whoever holds the job's lease (a worker
        polling it then commits nothing).  False when the job is not being tracked."""
        return await self._abandon_job(
            job_member(project_id, job_id), "*", "", now, AbandonReason.CANCELLED_BY_OPERATOR,
            f"cancelled by {who}", schema.STATE_FINISHED, Outcome.CANCELLED,
        )  # fmt: skip

    async def _abandon_job(
        self,
        member: str,
        token: str,
        record: str,
        now: float,
        reason: str,
        detail: str,
        final_state: str,
        outcome: str,
    ) -> bool:
        project_id, _, job_id = member.partition(":")
        result = await self._abandon(
            keys=[
                self.keys.schedule,
                self.keys.job(member),
                self.keys.dead,
                self.keys.events,
                self.keys.job_events(job_id),
                self.keys.jobref(job_id),
            ],
            args=[
                member, token, record, max(1, int(self.retention)), job_id, project_id,
                format_timestamp(now), detail, self.maxlen, max(1, int(self.seq_memory)),
                reason, final_state, outcome, repr(now),
            ],
        )  # fmt: skip
        return bool(int(result))

    async def server_time(self) -> float:
        """The Redis server's clock, in epoch seconds."""
        seconds, micros = await self.redis.time()
        return float(seconds) + float(micros) / 1e6

    async def recover_unregistered(self) -> int:
        """Hand back in-flight lists whose replica never registered (died before heart-beating)."""
        known = {_text(r) for r in await self.redis.zrange(self.keys.replicas, 0, -1)}
        moved = 0
        async for key in self.redis.scan_iter(match=self.keys.inflight_prefix + "*", count=500):
            replica = _text(key)[len(self.keys.inflight_prefix) :]
            if replica in known:
                continue
            # Registered since the listing? Then it is alive: leave its list alone.
            if await self.redis.zscore(self.keys.replicas, replica) is not None:
                continue
            while await self.redis.lmove(key, self.keys.intake, "RIGHT", "RIGHT") is not None:
                moved += 1
        return moved

    async def renew(self, leases: Sequence[tuple[str, str]], until: float) -> list[bool]:
        """Extend ``(member, token)`` leases to ``until``; False where the lease was lost."""
        if not leases:
            return []
        args: list[str] = [repr(until), self.keys.job_prefix]
        for member, token in leases:
            args += [member, token]
        result = await self._renew(keys=[self.keys.schedule], args=args)
        return [bool(int(r)) for r in result]

    async def release(self, state: JobState, due: float, crash: str = "") -> bool:
        """Give an unused lease back; the job is due again at ``due``.

        ``crash`` (the error) says the poll ended in an error rather than an outcome: it is
        counted in the job's ``crashes``, so a job that can never be polled is retired.
        """
        member = job_member(state.project_id, state.job_id)
        result = await self._release(
            keys=[self.keys.schedule, self.keys.job(member)],
            args=[member, state.token, repr(due), crash],
        )
        return bool(int(result))

    async def commit(
        self, state: JobState, plan: Plan, now: float, commit_id: str | None = None
    ) -> CommitResult:
        """Apply ``plan`` if ``state``'s lease and ``seq`` still hold (see ``schema.COMMIT``)."""
        member = job_member(state.project_id, state.job_id)
        hash_fields = [
            F.interval, repr(plan.interval),
            F.attempts, str(plan.attempts),
            F.nf_since, "" if plan.not_found_since is None else repr(plan.not_found_since),
            F.last_error, plan.last_error,
            F.outcome, plan.outcome,
            F.due, "" if plan.due_at is None else repr(plan.due_at),
        ]  # fmt: skip
        if plan.snapshot != state.snapshot:  # an unchanged poll leaves the stored snapshot be
            hash_fields += [F.snap, plan.snapshot.to_json() if plan.snapshot else ""]
        if state.crashes:
            hash_fields += [F.crashes, "0"]
        payload = {
            "member": member,
            "token": state.token,
            "seq": str(state.seq),
            "commit_id": commit_id or uuid.uuid4().hex,
            "now": repr(now),
            "due": "" if plan.due_at is None else repr(plan.due_at),
            "retention": max(1, int(self.retention)),
            "maxlen": self.maxlen,
            "seq_memory": max(1, int(self.seq_memory)),
            "set": hash_fields,
            "events": [[v for pair in event.fields for v in pair] for event in plan.events],
        }
        args: list[str | int] = [json.dumps(payload, ensure_ascii=False, separators=(",", ":"))]
        keys = [
            self.keys.schedule,
            self.keys.job(member),
            self.keys.events,
            self.keys.job_events(state.job_id),
            self.keys.jobref(state.job_id),
        ]
        return cast(CommitResult, _text(await self._group_commit(keys, args)))

    async def _group_commit(self, keys: list[str], args: list[str | int]) -> Any:
        """Send this commit together with every other commit that is ready in the same turn
        of the event loop: one pipeline, one socket write, one round trip for all of them.

        The first commit of a turn schedules the send for the end of the turn; the send runs
        on its own (a drain cancelling one caller cannot strand the others' commits) and
        always ends, bounded by the socket timeout.  Each commit's reply or error goes back
        to its caller; the scripts are fenced and carry commit IDs, so a pipeline resent after
        a dropped connection applies each once.
        """
        loop = asyncio.get_running_loop()
        waiter: asyncio.Future[Any] = loop.create_future()
        self._pending_commits.append((keys, args, waiter))
        if len(self._pending_commits) == 1:
            loop.call_soon(self._flush_commits)
        return await waiter

    def _flush_commits(self) -> None:
        batch, self._pending_commits = self._pending_commits, []
        task = asyncio.ensure_future(self._send_commits(batch))
        self._sending.add(task)  # held until done, so it is never collected mid-flight
        task.add_done_callback(self._sending.discard)

    async def _send_commits(
        self, batch: list[tuple[list[str], list[str | int], asyncio.Future[Any]]]
    ) -> None:
        try:
            async with self.redis.pipeline(transaction=False) as pipe:
                for keys, args, _ in batch:
                    pipe.evalsha(self._commit.sha, len(keys), *keys, *args)
                replies = await pipe.execute(raise_on_error=False)
            for (keys, args, waiter), reply in zip(batch, replies, strict=True):
                if isinstance(reply, NoScriptError):  # a restarted Redis forgot the script
                    reply = await self._commit(keys=keys, args=args)
                _settle(waiter, reply)
        except Exception as exc:  # the whole pipeline failed: every caller hears why
            for _, _, waiter in batch:
                _settle(waiter, exc)

    # --- reads ----------------------------------------------------------------------------

    async def get_job(self, project_id: str, job_id: str) -> JobView | None:
        """The stored state of a job, or ``None`` if it was never tracked (or has expired)."""
        member = job_member(project_id, job_id)
        async with self.redis.pipeline(transaction=True) as pipe:
            pipe.hgetall(self.keys.job(member))
            pipe.zscore(self.keys.schedule, member)
            raw, score = await pipe.execute()
        if not raw:
            return None
        fields = {_text(k): _text(v) for k, v in raw.items()}
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
        first = await self.redis.zrange(self.keys.schedule, 0, 0, withscores=True)
        return float(first[0][1]) if first else None

    async def counts(self, now: float) -> dict[str, int]:
        """Gauges: queue depth, dead letters, tracked jobs, jobs due now."""
        async with self.redis.pipeline(transaction=False) as pipe:
            pipe.llen(self.keys.intake)
            pipe.llen(self.keys.dead)
            pipe.zcard(self.keys.schedule)
            pipe.zcount(self.keys.schedule, "-inf", repr(now))
            queue, dead, tracked, due = await pipe.execute()
        return {"queue": int(queue), "dead": int(dead), "tracked": int(tracked), "due": int(due)}

    async def acquire_rate(self, per_second: float, burst: int = 1) -> float:
        """Seconds to wait before the next API request under the global rate limit (0: go)."""
        wait_ms = await self._rate(
            keys=[self.keys.ratelimit], args=[repr(1000.0 / per_second), burst]
        )
        return int(wait_ms) / 1000.0

    async def read_events(
        self, job_id: str | None = None, start: str = "-", count: int | None = None
    ) -> list[tuple[str, dict[str, str]]]:
        """Entries of the global stream (or one job's) from ``start``, as text."""
        key = self.keys.job_events(job_id) if job_id else self.keys.events
        entries = await self.redis.xrange(key, min=start, count=count)
        return [
            (_text(entry_id), {_text(k): _text(v) for k, v in (fields or {}).items()})
            for entry_id, fields in entries or []
        ]
