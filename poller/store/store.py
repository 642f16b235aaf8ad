"""The Redis edge: typed async operations over the keys and scripts of ``schema``."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import os
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, cast

from redis.asyncio.cluster import RedisCluster
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
from poller.intake import Admission, Invalid
from poller.snapshot import AbandonReason, StoredSnapshot, format_timestamp
from poller.store import schema
from poller.store.connection import RedisClient, connect
from poller.store.schema import (
    STATE_QUARANTINED,
    F,
    Keys,
    ShardKeys,
    job_member,
    member_job_id,
    unwrap_entry,
)
from poller.tracking import JobState, Outcome, Plan

__all__ = ["Claim", "Delivery", "JobView", "Store", "connect", "is_transient", "state_from_hash"]

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


@dataclass(frozen=True, slots=True)
class JobView:
    """A job's stored state plus its schedule score (for ``poller status``)."""

    state: JobState
    tracking: bool
    due_at: float | None
    outcome: str


ScriptCall = tuple[AsyncScript, list[str], list[Any]]


class Store:
    """Async operations on one prefix of one Redis database or cluster, over its shards."""

    def __init__(
        self,
        redis: RedisClient,
        keys: Keys,
        *,
        retention: float = 86400.0,
        maxlen: int = 1_000_000,
        seq_memory: float = 30 * 86400.0,
        wait_replicas: int = 0,
        wait_timeout: float = 1.0,
    ) -> None:
        self.redis = redis
        self.keys = keys
        self.retention = retention
        self.maxlen = maxlen
        self.seq_memory = seq_memory
        self.wait_replicas = wait_replicas
        self.wait_timeout_ms = max(1, int(wait_timeout * 1000))
        #: Called with (replicas wanted, replicas that acknowledged) after a short ``WAIT``.
        self.on_wait_short: Callable[[int, int], None] | None = None
        # With several shards the intake side and a job's shard are different slots: a step
        # that spans both is two scripts (see ``admit_batch``).
        self.split = keys.shards > 1
        self._claims = itertools.count()
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
        self._gate_limits = redis.register_script(schema.GATE_LIMITS)
        self._report_limits = redis.register_script(schema.REPORT_LIMITS)
        self._requeue = redis.register_script(schema.REQUEUE_DEAD)

    async def _run_scripts(self, calls: Sequence[ScriptCall]) -> list[Any]:
        """Send script calls in one pipeline (in a cluster, one per primary, all at once) and
        return each reply, or the error it met, in order.  A call that met a server without
        the script (restarted, failed over) did not run: it is sent again, loading it."""
        async with self.redis.pipeline(transaction=False) as pipe:
            for script, keys, args in calls:
                pipe.evalsha(script.sha, len(keys), *keys, *args)
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
        await self.redis.set(self.keys.layout, str(self.keys.shards), nx=True)
        return int(_text(await self.redis.get(self.keys.layout)) or self.keys.shards)

    # --- intake -------------------------------------------------------------------------

    async def enqueue(self, *messages: str | bytes) -> int:
        """LPUSH messages onto the intake queue, as a producer would."""
        return int(await self.redis.lpush(self.keys.intake, *messages))

    async def _move_to_inflight(self, inflight: str, limit: int) -> int:
        k = self.keys
        return int(await self._move(keys=[k.intake, inflight, k.retry, k.tickets], args=[limit]))

    async def take_messages(self, replica: str, limit: int, block: float) -> list[Delivery]:
        """Messages in this replica's in-flight list (oldest first), moving new ones there.

        Blocks up to ``block`` seconds when the queue is empty.  Whatever sits in the in-flight
        list is returned again until admitted or dead-lettered, so a lost reply loses nothing;
        the list never grows past ``limit``, so a message that cannot be admitted holds back
        at most that many.
        """
        inflight = self.keys.inflight(replica)
        moved = await self._move_to_inflight(inflight, limit)
        if moved == 0 and block > 0 and not await self.redis.llen(inflight):
            # Wait for a message without taking it (the list's tail moved onto itself), then
            # take it the one way that hands out a ticket.
            intake = self.keys.intake
            if await self.redis.blmove(intake, intake, cast(int, block), "RIGHT", "RIGHT"):
                await self._move_to_inflight(inflight, limit)
        raw = await self.redis.lrange(inflight, -limit, -1)
        return [Delivery.of(m if isinstance(m, bytes) else m.encode()) for m in reversed(raw)]

    async def admit(
        self, replica: str, delivery: Delivery, admission: Admission, now: float
    ) -> AdmitResult:
        """Start tracking an admitted message's job (idempotent; see ``schema.ADMIT``)."""
        (result,) = await self.admit_batch(replica, [(delivery, admission)], now)
        if isinstance(result, RedisError):
            raise result
        return cast(AdmitResult, result)

    async def admit_batch(
        self, replica: str, messages: Sequence[tuple[Delivery, Admission | Invalid]], now: float
    ) -> list[AdmitResult | Literal["dead_letter"] | RedisError]:
        """Admit the valid messages and dead-letter the invalid ones, in one round trip.

        One result per message, in order: what ``schema.ADMIT`` answered, ``"dead_letter"``,
        or the Redis error that message met (each message is its own script call, so one
        failure leaves the others done).  Every step is idempotent, so a batch may be sent
        again after a lost reply.  With several shards a second round trip takes the
        admitted messages out of flight; until it has, a message sent again is known by its
        ticket and admitted once.
        """
        calls = [
            self._dead_letter_call(replica, d, parsed.reason, now)
            if isinstance(parsed, Invalid)
            else self._admit_call(replica, d, parsed, now)
            for d, parsed in messages
        ]
        replies = await self._run_scripts(calls)
        out: list[AdmitResult | Literal["dead_letter"] | RedisError] = []
        for (_, parsed), reply in zip(messages, replies, strict=True):
            if isinstance(reply, RedisError):
                out.append(reply)
            elif isinstance(parsed, Invalid):
                out.append("dead_letter")
            else:
                out.append(cast(AdmitResult, _text(reply)))
        if self.split:
            done = [d.entry for (d, _), r in zip(messages, out, strict=True)
                    if r in ("admitted", "tracked", "finished")]  # fmt: skip
            if done:
                async with self.redis.pipeline(transaction=False) as pipe:
                    for entry in done:
                        pipe.lrem(self.keys.inflight(replica), 1, cast(Any, entry))
                    await pipe.execute()
        return out

    def _admit_call(
        self, replica: str, delivery: Delivery, admission: Admission, now: float
    ) -> ScriptCall:
        member = job_member(admission.project_id, admission.job_id)
        shard = self.keys.for_job(admission.job_id)
        keys = [
            shard.schedule,
            shard.job(member),
            shard.job_events(admission.job_id),
            shard.jobref(admission.job_id),
        ]
        if not self.split:
            keys.append(self.keys.inflight(replica))
        args = [
            delivery.entry, member, admission.project_id, admission.job_id,
            admission.instance_id, admission.meta, "1" if admission.force else "0", repr(now),
            shard.job_prefix, delivery.ticket,
        ]  # fmt: skip
        return self._admit, keys, args

    def _dead_letter_call(
        self, replica: str, delivery: Delivery, reason: str, now: float
    ) -> ScriptCall:
        record = json.dumps(
            {"raw": delivery.raw.decode("utf-8", "backslashreplace"), "reason": reason,
             "at": format_timestamp(now)},
            ensure_ascii=False,
        )  # fmt: skip
        return self._dead, [self.keys.dead, self.keys.inflight(replica)], [delivery.entry, record]

    async def dead_letter(self, replica: str, delivery: Delivery, reason: str, now: float) -> None:
        """Park a message in the dead-letter list with ``reason`` and take it out of flight."""
        script, keys, args = self._dead_letter_call(replica, delivery, reason, now)
        await script(keys=keys, args=args)

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
        """Hand the in-flight messages of replicas that stopped heart-beating back (onto the
        retry list, tickets kept, taken before new messages)."""
        return int(
            await self._recover(
                keys=[self.keys.replicas, self.keys.retry],
                args=[repr(now), self.keys.inflight_prefix],
            )
        )

    async def _hand_back_list(self, inflight: str) -> int:
        moved = 0
        while await self.redis.lmove(inflight, self.keys.retry, "RIGHT", "RIGHT") is not None:
            moved += 1
        return moved

    async def deregister(self, replica: str) -> int:
        """On clean exit: hand back this replica's in-flight messages and forget it."""
        moved = await self._hand_back_list(self.keys.inflight(replica))
        await self.redis.zrem(self.keys.replicas, replica)
        return moved

    # --- schedule and leases --------------------------------------------------------------

    def _shares(self, limit: int) -> list[tuple[ShardKeys, int]]:
        """``limit`` split over the shards, the remainder to a rotating few (so a small limit
        still reaches every shard in turn)."""
        shards = self.keys.all_shards
        base, extra = divmod(limit, len(shards))
        start = next(self._claims) % len(shards)
        shares = [(shards[i], base + (1 if (i - start) % len(shards) < extra else 0))
                  for i in range(len(shards))]  # fmt: skip
        return [(shard, n) for shard, n in shares if n > 0]

    async def claim_due(
        self, owner: str, now: float, lease: float, limit: int, claim_id: str | None = None
    ) -> Claim:
        """Atomically lease up to ``limit`` due jobs to ``owner`` until ``now + lease``.

        Also says when the schedule's earliest remaining entry is due (``None``: empty).  A job
        whose stored state cannot be decoded is quarantined (out of the schedule, a final
        ``job.abandoned`` for its consumers, a record in the dead-letter list) instead of being
        returned.  The claim carries an ID, so the client's retry after a lost reply gets the
        same leases back.  With several shards, each gets its share of ``limit`` (one script
        per shard, in one round trip).
        """
        claim_id = claim_id or os.urandom(8).hex()
        shares = self._shares(limit)
        calls: list[ScriptCall] = [
            (self._claim, [shard.schedule, shard.claim(owner)],
             [repr(now), repr(now + lease), share, owner, shard.job_prefix, claim_id,
              max(1, int(lease * 1000))])
            for shard, share in shares
        ]  # fmt: skip
        if len(calls) == 1:
            script, keys, args = calls[0]
            replies: list[Any] = [await script(keys=keys, args=args)]
        else:
            replies = await self._run_scripts(calls)
        claim = Claim()
        for reply in replies:
            if isinstance(reply, Exception):
                raise reply
        for reply in replies:
            await self._read_claim(claim, reply, now)
        return claim

    async def _read_claim(self, claim: Claim, flat: list[Any], now: float) -> None:
        if _text(flat[0]):
            due = float(_text(flat[0]))
            claim.next_due = due if claim.next_due is None else min(claim.next_due, due)
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
        shard = self.keys.for_job(job_id)
        keys = [shard.schedule, shard.job(member), shard.events, shard.job_events(job_id),
                shard.jobref(job_id)]  # fmt: skip
        if not self.split:
            keys.append(self.keys.dead)
        result = await self._abandon(
            keys=keys,
            args=[
                member, token, record, max(1, int(self.retention)), job_id, project_id,
                format_timestamp(now), detail, self.maxlen, max(1, int(self.seq_memory)),
                reason, final_state, outcome, repr(now),
            ],
        )  # fmt: skip
        done = bool(int(result))
        if done and record and self.split:  # the dead-letter list is in another slot
            await self.redis.lpush(self.keys.dead, record)
        return done

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
            moved += await self._hand_back_list(_text(key))
        return moved

    async def renew(self, leases: Sequence[tuple[str, str]], until: float) -> list[bool]:
        """Extend ``(member, token)`` leases to ``until``; False where the lease was lost."""
        if not leases:
            return []
        by_shard: dict[int, list[int]] = {}
        for n, (member, _) in enumerate(leases):
            by_shard.setdefault(self.keys.shard_index(member_job_id(member)), []).append(n)
        calls: list[ScriptCall] = []
        for index, positions in by_shard.items():
            shard = self.keys.shard(index)
            args: list[Any] = [repr(until), shard.job_prefix]
            for n in positions:
                args += list(leases[n])
            calls.append((self._renew, [shard.schedule], args))
        if len(calls) == 1:
            script, keys, args = calls[0]
            replies: list[Any] = [await script(keys=keys, args=args)]
        else:
            replies = await self._run_scripts(calls)
        held = [False] * len(leases)
        for positions, reply in zip(by_shard.values(), replies, strict=True):
            if isinstance(reply, Exception):
                raise reply
            for n, ok in zip(positions, reply, strict=True):
                held[n] = bool(int(ok))
        return held

    async def release(self, state: JobState, due: float, crash: str = "") -> bool:
        """Give an unused lease back; the job is due again at ``due``.

        ``crash`` (the error) says the poll ended in an error rather than an outcome: it is
        counted in the job's ``crashes``, so a job that can never be polled is retired.
        """
        member = job_member(state.project_id, state.job_id)
        shard = self.keys.for_job(state.job_id)
        result = await self._release(
            keys=[shard.schedule, shard.job(member)],
            args=[member, state.token, repr(due), crash],
        )
        return bool(int(result))

    async def commit(
        self, state: JobState, plan: Plan, now: float, commit_id: str | None = None
    ) -> CommitResult:
        """Apply ``plan`` if ``state``'s lease and ``seq`` still hold (see ``schema.COMMIT``).

        With ``wait_replicas``, returns only after ``WAIT`` saw that many replicas take the
        commit (or ``wait_timeout`` passed: then :attr:`on_wait_short` hears of it).
        """
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
        shard = self.keys.for_job(state.job_id)
        keys = [
            shard.schedule,
            shard.job(member),
            shard.events,
            shard.job_events(state.job_id),
            shard.jobref(state.job_id),
        ]
        return cast(CommitResult, _text(await self._group_commit(keys, args)))

    async def _group_commit(self, keys: list[str], args: list[str | int]) -> Any:
        """Send this commit together with every other commit that is ready in the same turn
        of the event loop: one pipeline, one socket write, one round trip for all of them
        (in a cluster, one per primary, sent at once).

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
                waits = self._queue_waits(pipe, [keys[0] for keys, _, _ in batch])
                replies = await pipe.execute(raise_on_error=False)
            for (keys, args, waiter), reply in zip(batch, replies, strict=False):
                if isinstance(reply, NoScriptError):  # a restarted Redis forgot the script
                    reply = await self._commit(keys=keys, args=args)
                    if self.wait_replicas:
                        await self._wait_after(keys[0])
                _settle(waiter, reply)
            self._check_waits(replies[len(batch) :][:waits])
        except Exception as exc:  # the whole pipeline failed: every caller hears why
            for _, _, waiter in batch:
                _settle(waiter, exc)

    # --- durability -----------------------------------------------------------------------

    def _queue_waits(self, pipe: Any, first_keys: list[str]) -> int:
        """Queue ``WAIT`` behind the commits, on each connection that carried some: a
        cluster pipeline gets one per primary (pinned to the node owning those keys)."""
        if not self.wait_replicas:
            return 0
        if not isinstance(self.redis, RedisCluster):
            pipe.execute_command("WAIT", self.wait_replicas, self.wait_timeout_ms)
            return 1
        nodes = {}
        for key in first_keys:
            node = self.redis.get_node_from_key(key)
            if node is not None:
                nodes[node.name] = node
        for node in nodes.values():
            pipe.execute_command("WAIT", self.wait_replicas, self.wait_timeout_ms,
                                 target_nodes=node)  # fmt: skip
        return len(nodes)

    def _check_waits(self, replies: Sequence[Any]) -> None:
        for reply in replies:
            acked = -1 if isinstance(reply, Exception) else int(reply)
            if acked < self.wait_replicas and self.on_wait_short is not None:
                self.on_wait_short(self.wait_replicas, max(0, acked))

    async def _wait_after(self, key: str) -> None:
        """``WAIT`` after a commit sent on its own (not on the pipeline's connection: this
        covers the writes of the connection the retry used, the pool's first free one)."""
        async with self.redis.pipeline(transaction=False) as pipe:
            self._queue_waits(pipe, [key])
            self._check_waits(await pipe.execute(raise_on_error=False))

    # --- reads ----------------------------------------------------------------------------

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
        reply = await self._gate_limits(
            keys=[self.keys.ratelimit, self.keys.limits],
            args=[mode, interval_us, burst, scope, owner, lease_ms],
        )
        return list(reply)

    async def report_limits(
        self, what: str, scope: str, owner: str, pause_ms: int, table_ms: Sequence[int]
    ) -> list[Any]:
        """``REPORT_LIMITS``: what an API answer means for every replica's pauses."""
        reply = await self._report_limits(
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
                text = _text(entry_id)
                decoded = {_text(k): _text(v) for k, v in (fields or {}).items()}
                merged.append((_entry_order(text), text, decoded))
        merged.sort(key=lambda e: e[0])
        rows = [(entry_id, fields) for _, entry_id, fields in merged]
        return rows[:count] if count is not None else rows


def _entry_order(entry_id: str) -> tuple[int, int]:
    ms, _, n = entry_id.partition("-")
    return int(ms), int(n or 0)
