"""A replica's intake: take messages off the queue, admit the valid ones, dead-letter the rest.

Taking moves a batch into this replica's in-flight list (handed back if it dies); admitting
and dead-lettering are idempotent, so a batch cut short by a Redis outage is simply taken
again.  One bad message never holds up the ones behind it.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Final, Literal

from redis.exceptions import RedisError

from poller.backoff import Backoff
from poller.intake import Admission, Invalid, parse_message
from poller.replica import ReplicaContext
from poller.store import is_transient
from poller.store.store import AdmitResult, Delivery

INTAKE_BATCH: Final = 500


class IntakeLoop:
    """Moves intake messages into tracking for one replica, until it stops; ``on_admitted``
    is called for each job that starts being tracked (it is due at once)."""

    def __init__(
        self, replica: ReplicaContext, *, project_id: str, on_admitted: Callable[[], None]
    ) -> None:
        self._replica = replica
        self._store = replica.store
        self._metrics = replica.metrics
        self._log = replica.log
        self._project_id = project_id
        self._on_admitted = on_admitted

    async def run(self) -> None:
        """Take and admit batches until the replica stops, riding out Redis outages."""
        replica = self._replica
        backoff = Backoff(initial=0.1, cap=5.0, rng=replica.rng)
        while not replica.stopping.is_set():
            try:
                taken = await self._store.take_messages(
                    replica.replica_id, limit=INTAKE_BATCH, block=1
                )
                if taken:
                    await self._take_batch(taken)
                backoff.succeeded()
            except RedisError as exc:
                replica.redis_failed("intake", exc)
                await replica.sleep_unless_stopping(backoff.failed())

    async def _take_batch(self, taken: list[Delivery]) -> None:
        """Admit the valid messages and dead-letter the others, in one round trip.

        Only a transient Redis failure propagates (the messages stay in flight and are tried
        again; every step is idempotent); anything else about one message sends that message
        to the dead-letter list, so one message can never hold up the ones behind it.
        """
        parsed = [(d, parse_message(d.raw, self._project_id)) for d in taken]
        await self._admit_parsed(parsed)

    async def _admit_parsed(self, parsed: list[tuple[Delivery, Admission | Invalid]]) -> None:
        try:
            results = await self._store.admit_batch(
                self._replica.replica_id, parsed, self._replica.now()
            )
        except RedisError:
            raise
        except Exception as exc:  # the batch could not even be sent: find the culprit alone
            if len(parsed) > 1:
                for one in parsed:
                    await self._admit_parsed([one])
                return
            self._log.exception("intake message could not be admitted")
            await self._dead_letter(parsed[0][0], f"could not be admitted: {type(exc).__name__}")
            return
        transient = [r for r in results if isinstance(r, RedisError) and is_transient(r)]
        if transient:
            raise transient[0]
        for (delivery, message), result in zip(parsed, results, strict=True):
            try:
                await self._admitted(delivery, message, result)
            except RedisError as exc:
                if is_transient(exc):
                    raise
                await self._dead_letter(
                    delivery, f"could not be admitted: {type(exc).__name__}: {exc}"
                )
            except Exception as exc:
                self._log.exception("intake message could not be admitted")
                await self._dead_letter(delivery, f"could not be admitted: {type(exc).__name__}")

    async def _admitted(
        self,
        delivery: Delivery,
        message: Admission | Invalid,
        result: AdmitResult | Literal["dead_letter"] | RedisError,
    ) -> None:
        """Account for one message's fate (and dead-letter it where admission refused it)."""
        if isinstance(result, RedisError):
            raise result
        if isinstance(message, Invalid):
            self._metrics.intake.labels("dead_letter").inc()
            self._log.warning("intake message dead-lettered", reason=message.reason)
            return
        if result == "conflict":
            await self._dead_letter(delivery, "project_conflict: the job ID is tracked under "
                                    "another project")  # fmt: skip
            return
        if result == "corrupt":
            await self._dead_letter(delivery, "corrupt_state: a key of this job holds another type")
            return
        self._metrics.intake.labels(result).inc()
        log = self._log.bind(job_id=message.job_id, project_id=message.project_id)
        if result == "admitted":
            log.info("tracking job", force=message.force or None)
            self._on_admitted()
        else:
            log.info("intake message ignored", why=f"already {result}")

    async def _dead_letter(self, delivery: Delivery, reason: str) -> None:
        reason = reason[:500]
        await self._store.dead_letter(
            self._replica.replica_id, delivery, reason, self._replica.now()
        )
        self._metrics.intake.labels("dead_letter").inc()
        self._log.warning("intake message dead-lettered", reason=reason)
