"""The schedule and leases: claiming due jobs shard by shard, renewing and releasing
leases, and ending tracking of a job (an operator's cancel, a job whose state is unreadable)."""

from __future__ import annotations

import contextlib
import json
import os
from collections.abc import Sequence
from typing import Any

from redis.exceptions import (
    RedisError,
)

from poller.snapshot import AbandonReason, format_timestamp
from poller.store import schema
from poller.store.edge import (
    Claim,
    CorruptJobState,
    RedisEdge,
    ScriptCall,
    as_text,
    state_from_hash,
)
from poller.store.schema import (
    STATE_QUARANTINED,
    ShardKeys,
    job_member,
    member_job_id,
)
from poller.tracking import JobState, Outcome


class LeaseStore(RedisEdge):
    """Claims, lease renewals and releases, abandons (see ``schema.CLAIM_DUE``,
    ``RENEW_LEASES``, ``RELEASE``, ``ABANDON``)."""

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
            (self.script(schema.CLAIM_DUE), [shard.schedule, shard.claim(owner)],
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
            if isinstance(reply, RedisError):
                claim.errors.append(reply)  # that shard's jobs wait; the others' leases stand
            elif isinstance(reply, Exception):
                raise reply
            else:
                await self._read_claim(claim, reply, now)
        if len(claim.errors) == len(replies):
            raise claim.errors[0]
        if len(shares) < self.keys.shards:  # the shards this claim skipped may be due too
            visited = {shard for shard, _ in shares}
            async with self.redis.pipeline(transaction=False) as pipe:
                for shard in self.keys.all_shards:
                    if shard not in visited:
                        pipe.zrange(shard.schedule, 0, 0, withscores=True)
                for first in await pipe.execute():
                    if first:
                        claim.saw_due(float(first[0][1]))
        return claim

    async def _read_claim(self, claim: Claim, flat: list[Any], now: float) -> None:
        if as_text(flat[0]):
            claim.saw_due(float(as_text(flat[0])))
        i = 1
        while i < len(flat):
            member, token, count = as_text(flat[i]), as_text(flat[i + 1]), int(flat[i + 2])
            values = [as_text(v) for v in flat[i + 3 : i + 3 + max(0, count)]]
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
        result = await self.script(schema.ABANDON)(
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
            calls.append((self.script(schema.RENEW_LEASES), [shard.schedule], args))
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
        result = await self.script(schema.RELEASE)(
            keys=[shard.schedule, shard.job(member)],
            args=[member, state.token, repr(due), crash],
        )
        return bool(int(result))
