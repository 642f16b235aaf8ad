"""Intake: taking messages from the queue into a replica's in-flight list, admitting them
into their jobs' shards or dead-lettering them, and handing back what dead replicas held."""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any, Literal, cast

from redis.exceptions import (
    RedisError,
)

from poller.intake import Admission, Invalid
from poller.snapshot import format_timestamp
from poller.store import schema
from poller.store.edge import (
    AdmitResult,
    Delivery,
    RedisEdge,
    ScriptCall,
    as_text,
)
from poller.store.schema import (
    job_member,
)


class IntakeStore(RedisEdge):
    """The intake side's operations (see ``schema.MOVE_TO_INFLIGHT``, ``ADMIT``,
    ``DEAD_LETTER``, ``RECOVER_ORPHANS``)."""

    async def enqueue(self, *messages: str | bytes) -> int:
        """LPUSH messages onto the intake queue, as a producer would."""
        return int(await self.redis.lpush(self.keys.intake, *messages))

    async def _move_to_inflight(self, inflight: str, limit: int) -> int:
        k = self.keys
        move = self.script(schema.MOVE_TO_INFLIGHT)
        return int(await move(keys=[k.intake, inflight, k.retry, k.tickets], args=[limit]))

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
                out.append(cast(AdmitResult, as_text(reply)))
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
        return self.script(schema.ADMIT), keys, args

    def _dead_letter_call(
        self, replica: str, delivery: Delivery, reason: str, now: float
    ) -> ScriptCall:
        record = json.dumps(
            {"raw": delivery.raw.decode("utf-8", "backslashreplace"), "reason": reason,
             "at": format_timestamp(now)},
            ensure_ascii=False,
        )  # fmt: skip
        return (
            self.script(schema.DEAD_LETTER),
            [self.keys.dead, self.keys.inflight(replica)],
            [delivery.entry, record],
        )

    async def dead_letter(self, replica: str, delivery: Delivery, reason: str, now: float) -> None:
        """Park a message in the dead-letter list with ``reason`` and take it out of flight."""
        script, keys, args = self._dead_letter_call(replica, delivery, reason, now)
        await script(keys=keys, args=args)

    async def requeue_dead(self, records: Sequence[tuple[str, str]]) -> list[bool]:
        """Move ``(record, raw message)`` dead letters back onto the intake queue, each
        atomically (see ``schema.REQUEUE_DEAD``); False where the record was gone already."""
        if not records:
            return []
        done = await self.script(schema.REQUEUE_DEAD)(
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
            await self.script(schema.RECOVER_ORPHANS)(
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

    async def recover_unregistered(self) -> int:
        """Hand back in-flight lists whose replica never registered (died before heart-beating)."""
        known = {as_text(r) for r in await self.redis.zrange(self.keys.replicas, 0, -1)}
        moved = 0
        async for key in self.redis.scan_iter(match=self.keys.inflight_prefix + "*", count=500):
            replica = as_text(key)[len(self.keys.inflight_prefix) :]
            if replica in known:
                continue
            # Registered since the listing? Then it is alive: leave its list alone.
            if await self.redis.zscore(self.keys.replicas, replica) is not None:
                continue
            moved += await self._hand_back_list(as_text(key))
        return moved
