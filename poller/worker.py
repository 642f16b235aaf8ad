"""The daemon's loop: take intake messages, claim due jobs, poll them, commit what changed.

One anyio task group owns every task of a replica.  ``stop()`` begins a drain: no new claims,
polls in flight get most of ``shutdown_grace`` to finish, and whatever is left is cancelled
and its lease handed back (due at once) so another replica picks it up without waiting.

Every Redis failure is either transient (retried with the one backoff formula, for as long as
it lasts) or deterministic (never retried in a loop: the message is dead-lettered, the poll
ends as crashed and the job is retired after a few such polls), so no input and no outage can
wedge a replica or make it publish twice.
"""

from __future__ import annotations

import itertools
import random
import socket
import uuid
from typing import Final, Generic, Literal, TypeVar

import anyio
import anyio.abc
from redis.exceptions import RedisError

from poller.backoff import Backoff
from poller.clock import SYSTEM_CLOCK, Clock, ServerClock
from poller.config import ConfigError, Settings
from poller.intake import Admission, Invalid, parse_message
from poller.leases import Lease, Leases, ShutdownBudget
from poller.policy import Policy
from poller.ports import JobFetcher, JobStore
from poller.snapshot import AbandonReason, EventKind
from poller.store import is_transient, job_member
from poller.store.store import AdmitResult, Delivery
from poller.telemetry import Health, Metrics, get_logger
from poller.tracking import JobState, Plan, plan_after_poll, plan_timeout, timed_out

INTAKE_BATCH: Final = 500
# Polls of one job in a row that may end in an error (not an outcome) before it is retired
# as ``corrupt_state``: whatever breaks them is in its stored state, not passing.
MAX_POLL_CRASHES: Final = 5


class RedisUnavailable(Exception):
    """Redis stayed unreachable for a whole lease while a poll tried to commit."""


def default_replica_id() -> str:
    """A name unique to this process: host, pid and a random suffix."""
    return f"{socket.gethostname()}-{uuid.uuid4().hex[:8]}"


StoreT = TypeVar("StoreT", bound=JobStore)


class Worker(Generic[StoreT]):
    """One replica of the daemon."""

    def __init__(
        self,
        settings: Settings,
        store: StoreT,
        client: JobFetcher,
        *,
        metrics: Metrics | None = None,
        health: Health | None = None,
        clock: Clock = SYSTEM_CLOCK,
        rng: random.Random | None = None,
        replica_id: str | None = None,
    ) -> None:
        self.settings = settings
        self.store = store
        self.client = client
        self.metrics = metrics or Metrics()
        self.health = health or Health()
        self._clock = clock
        # Replicas compare times (due, lease deadlines) through Redis, so they all read
        # Redis's clock, estimated from this host's monotonic clock.
        self.server_clock = ServerClock(clock)
        self.rng = rng or random.Random()
        self.replica_id = replica_id or settings.replica_id or default_replica_id()
        self.policy = Policy.from_settings(settings)
        self.log = get_logger(replica=self.replica_id)
        self.budget = ShutdownBudget.of(settings.shutdown_grace)
        self.leases = Leases(
            store,
            clock,
            self.clock,
            lease_seconds=settings.lease_seconds,
            budget=self.budget,
            metrics=self.metrics,
            redis_failed=self._redis_failed,
            on_lost=lambda member: self.log.warning(
                "lease lost; abandoning this poll", member=member
            ),
        )
        self._wake = anyio.Event()
        self._stopping = anyio.Event()
        self._commit_ids = itertools.count(1)

    def clock(self) -> float:
        """Now, on the Redis server's clock (epoch seconds)."""
        return self.server_clock.now()

    # --- control --------------------------------------------------------------------------

    def stop(self) -> None:
        """Begin a graceful drain (idempotent)."""
        if not self._stopping.is_set():
            self.log.info("draining", in_flight=len(self.leases))
        self._stopping.set()
        self._wake.set()

    @property
    def stopping(self) -> bool:
        return self._stopping.is_set()

    def _nudge(self) -> None:
        self._wake.set()

    async def run(self) -> None:
        """Run until :meth:`stop`, then drain and hand back unfinished work."""
        self.log.info("worker starting", concurrency=self.settings.concurrency)
        try:
            # Heart-beat before taking any message, so a crash right after the first take is
            # noticed and the message handed back.
            await self._register()
            async with anyio.create_task_group() as tg:
                tg.start_soon(self._intake_loop)
                tg.start_soon(self._housekeeping_loop)
                tg.start_soon(self.leases.renew_forever)
                tg.start_soon(self._sweep_loop)
                await self._claim_loop()
                tg.cancel_scope.cancel()
        finally:
            with anyio.CancelScope(shield=True), anyio.move_on_after(self.budget.hand_back):
                await self._hand_back()
        self.log.info("worker stopped")

    async def _register(self) -> None:
        backoff = Backoff(initial=0.1, cap=5.0, rng=self.rng)
        while not self._stopping.is_set():
            self.health.tick()  # waiting for Redis is not a wedged loop (liveness)
            try:
                await self.server_clock.sync(self.store.server_time)
                laid_out = await self.store.check_layout()
                if laid_out != self.settings.shards:
                    raise ConfigError(
                        f"POLLER_SHARDS: {self.settings.shards}, but the keys under prefix "
                        f"{self.settings.key_prefix} are laid out for {laid_out} shard(s); keep "
                        f"{laid_out}, or let every job finish and delete "
                        f"{self.settings.key_prefix}:layout before changing it"
                    )
                await self.store.heartbeat(self.replica_id, self.clock() + self._heartbeat_ttl)
                return
            except RedisError as exc:
                self._redis_failed("register", exc)
                await self._sleep_unless_stopping(backoff.failed())

    @property
    def _housekeeping_period(self) -> float:
        return max(0.2, min(5.0, self.settings.lease_seconds / 3))

    @property
    def _heartbeat_ttl(self) -> float:
        return max(3 * self._housekeeping_period, 10.0)

    async def _sleep_unless_stopping(self, seconds: float) -> None:
        await self._clock.wait(self._stopping, seconds)

    def _redis_failed(self, op: str, exc: RedisError) -> None:
        self.metrics.redis_errors.labels(op).inc()
        if is_transient(exc):
            self.health.redis_ok = False
            self.health.redis_error = f"{type(exc).__name__} during {op}"
            self.log.warning("redis operation failed", op=op, error=str(exc))
        else:
            self.log.error(
                "redis refused an operation", op=op, error=f"{type(exc).__name__}: {exc}"
            )

    # --- scheduling -------------------------------------------------------------------------

    async def _claim_loop(self) -> None:
        async with anyio.create_task_group() as polls:
            backoff = Backoff(initial=0.1, cap=5.0, rng=self.rng)
            while not self._stopping.is_set():
                self.health.tick()
                self._wake = anyio.Event()
                wait = await self._claim_and_start(polls, backoff)
                if wait > 0:
                    await self._clock.wait(self._wake, wait)
            await self._drain(polls)

    async def _claim_and_start(self, polls: anyio.abc.TaskGroup, backoff: Backoff) -> float:
        """Claim what is due and start its polls; returns how long to wait before the next
        claim (0: more may be due right now)."""
        free = self.settings.concurrency - len(self.leases)
        if free <= 0:
            return 1.0  # a finishing poll nudges us sooner
        limit = min(free, self.settings.claim_batch)
        try:
            claim = await self.store.claim_due(
                self.replica_id, self.clock(), self.settings.lease_seconds, limit
            )
        except RedisError as exc:
            self._redis_failed("claim", exc)
            await self._sleep_unless_stopping(backoff.failed())
            return 0.0
        backoff.succeeded()
        for member, reason in claim.quarantined:
            self.metrics.finished(f"abandoned:{AbandonReason.CORRUPT_STATE}")
            self.log.error("job state unreadable; retired as corrupt_state",
                           member=member, reason=reason)  # fmt: skip
        for state in claim.jobs:
            lease = self.leases.hold(job_member(state.project_id, state.job_id), state)
            polls.start_soon(self._poll_one, lease)
        if len(claim.jobs) + len(claim.quarantined) == limit:
            return 0.0
        if claim.next_due is None:
            return 1.0
        return min(1.0, max(0.0, claim.next_due - self.clock()))

    async def _drain(self, polls: anyio.abc.TaskGroup) -> None:
        await self._clock.wait(self.leases.idle, self.budget.polls)
        if len(self.leases):
            self.log.warning("shutdown grace over; handing back polls", count=len(self.leases))
        polls.cancel_scope.cancel()

    # --- one poll ------------------------------------------------------------------------

    async def _poll_one(self, lease: Lease) -> None:
        state, started = lease.state, self._clock.monotonic()
        if state.due_at is not None:
            self.metrics.poll_lag.observe(max(0.0, self.clock() - state.due_at))
        retry_in, crash = 0.0, ""  # uncommitted without a crash (drain, lost lease): due now
        try:
            with lease.scope:
                if state.crashes >= MAX_POLL_CRASHES:
                    await self._retire_corrupt(
                        lease, f"{state.crashes} polls in a row crashed; last: {state.last_error}"
                    )
                    return
                now = self.clock()
                if timed_out(state, now, self.policy):
                    plan = plan_timeout(state, now, self.policy)
                else:
                    outcome = await self.client.fetch_job(
                        state.project_id, state.job_id, state.instance_id
                    )
                    plan = plan_after_poll(
                        state, outcome, now=self.clock(), policy=self.policy, rng=self.rng
                    )
                await self._commit(lease, plan)
        except RedisUnavailable as exc:
            # Not the job's fault: hand it back (due at once) without counting a crash.
            self.log.warning("commit given up; redis unavailable", job_id=state.job_id,
                             project_id=state.project_id, error=str(exc))  # fmt: skip
        except Exception as exc:
            # A bug or a deterministic Redis error must not take the replica down: the job is
            # due again after a lease, and retired once it has crashed MAX_POLL_CRASHES times.
            self.log.exception("poll crashed", job_id=state.job_id, project_id=state.project_id)
            retry_in = self.settings.lease_seconds
            crash = f"{type(exc).__name__}: {exc}"[:300]
        finally:
            await self.leases.finish(lease, retry_in=retry_in, crash=crash)
            self.metrics.poll_duration.observe(max(0.0, self._clock.monotonic() - started))
            self._nudge()

    async def _commit(self, lease: Lease, plan: Plan) -> None:
        """Commit ``plan``; transient Redis failures are retried for up to one lease (the same
        commit ID, so a retry after a lost reply is recognised), then :class:`RedisUnavailable`;
        a deterministic Redis error raises at once."""
        state = lease.state
        commit_id = f"{self.replica_id}:{next(self._commit_ids)}"  # unique, and cheap
        backoff = Backoff(initial=0.05, cap=2.0, rng=self.rng)
        give_up = self._clock.monotonic() + self.settings.lease_seconds
        while True:
            try:
                result = await self.store.commit(state, plan, self.clock(), commit_id)
                break
            except RedisError as exc:
                if not is_transient(exc):
                    raise
                if self._clock.monotonic() >= give_up:  # the lease is gone by now anyway
                    raise RedisUnavailable(f"{type(exc).__name__}: {exc}") from exc
                self._redis_failed("commit", exc)
                await self._clock.sleep(backoff.failed())
        if result == "corrupt":
            await self._retire_corrupt(lease, "a key of this job holds another Redis type")
            return
        lease.committed = True
        self.metrics.commits.labels(result).inc()
        self.metrics.polls.labels(plan.outcome).inc()
        if result in ("ok", "duplicate"):
            self._log_committed(state, plan, counted=result == "ok")
            if plan.retires:  # applied once under this commit ID: "duplicate" = reply was lost
                self.metrics.job_finished(plan.events, state.taken_at, self.clock())
        else:
            self.metrics.leases_lost.inc()
            self.log.warning(
                "commit refused; another replica owns the job now",
                job_id=state.job_id,
                project_id=state.project_id,
                result=result,
            )

    async def _retire_corrupt(self, lease: Lease, reason: str) -> None:
        """End tracking of a job whose state cannot be used: ``job.abandoned`` with reason
        ``corrupt_state``, and a dead-letter record."""
        state = lease.state
        if await self.store.quarantine(lease.member, state.token, reason, self.clock()):
            lease.committed = True
            self.metrics.commits.labels("corrupt").inc()
            self.metrics.finished(f"abandoned:{AbandonReason.CORRUPT_STATE}")
            self.metrics.events.labels(EventKind.JOB_ABANDONED).inc()
            self.log.error("job retired as corrupt_state", job_id=state.job_id,
                           project_id=state.project_id, reason=reason)  # fmt: skip

    def _log_committed(self, state: JobState, plan: Plan, *, counted: bool) -> None:
        bound = self.log.bind(job_id=state.job_id, project_id=state.project_id)
        for event in plan.events:
            if counted:
                self.metrics.events.labels(event.kind).inc()
            fields = event.as_dict()
            bound.info(
                fields["event"],
                request_id=plan.request_id or None,
                seq=int(fields["seq"]),
                task=fields.get("task_name") or None,
                from_status=fields["from_status"],
                to_status=fields["to_status"],
                reason=fields.get("reason"),
            )
        if plan.outcome.failed:
            bound.info(
                "poll failed",
                outcome=plan.outcome,
                error=plan.last_error,
                attempt=plan.attempts,
                request_id=plan.request_id or None,
            )
        else:
            bound.debug("polled", outcome=plan.outcome, next_in=_next_in(plan, self.clock()))

    # --- intake --------------------------------------------------------------------------

    async def _intake_loop(self) -> None:
        backoff = Backoff(initial=0.1, cap=5.0, rng=self.rng)
        while not self._stopping.is_set():
            try:
                taken = await self.store.take_messages(self.replica_id, limit=INTAKE_BATCH, block=1)
                if taken:
                    await self._take_batch(taken)
                backoff.succeeded()
            except RedisError as exc:
                self._redis_failed("intake", exc)
                await self._sleep_unless_stopping(backoff.failed())

    async def _take_batch(self, taken: list[Delivery]) -> None:
        """Admit the valid messages and dead-letter the others, in one round trip.

        Only a transient Redis failure propagates (the messages stay in flight and are tried
        again; every step is idempotent); anything else about one message sends that message
        to the dead-letter list, so one message can never hold up the ones behind it.
        """
        parsed = [(d, parse_message(d.raw, self.settings.project_id)) for d in taken]
        await self._admit_parsed(parsed)

    async def _admit_parsed(self, parsed: list[tuple[Delivery, Admission | Invalid]]) -> None:
        try:
            results = await self.store.admit_batch(self.replica_id, parsed, self.clock())
        except RedisError:
            raise
        except Exception as exc:  # the batch could not even be sent: find the culprit alone
            if len(parsed) > 1:
                for one in parsed:
                    await self._admit_parsed([one])
                return
            self.log.exception("intake message could not be admitted")
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
                self.log.exception("intake message could not be admitted")
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
            self.metrics.intake.labels("dead_letter").inc()
            self.log.warning("intake message dead-lettered", reason=message.reason)
            return
        if result == "conflict":
            await self._dead_letter(delivery, "project_conflict: the job ID is tracked under "
                                    "another project")  # fmt: skip
            return
        if result == "corrupt":
            await self._dead_letter(delivery, "corrupt_state: a key of this job holds another type")
            return
        self.metrics.intake.labels(result).inc()
        log = self.log.bind(job_id=message.job_id, project_id=message.project_id)
        if result == "admitted":
            log.info("tracking job", force=message.force or None)
            self._nudge()
        else:
            log.info("intake message ignored", why=f"already {result}")

    async def _dead_letter(self, delivery: Delivery, reason: str) -> None:
        reason = reason[:500]
        await self.store.dead_letter(self.replica_id, delivery, reason, self.clock())
        self.metrics.intake.labels("dead_letter").inc()
        self.log.warning("intake message dead-lettered", reason=reason)

    # --- housekeeping ---------------------------------------------------------------------

    async def _housekeeping_loop(self) -> None:
        period = self._housekeeping_period
        while True:
            try:
                await self._housekeep()
            except RedisError as exc:
                self._redis_failed("housekeeping", exc)
            await self._clock.sleep(period)

    async def _housekeep(self) -> None:
        await self.server_clock.sync(self.store.server_time)
        now = self.clock()
        await self.store.heartbeat(self.replica_id, now + self._heartbeat_ttl)
        recovered = await self.store.recover_orphans(now)
        if recovered:
            self.metrics.orphans_recovered.inc(recovered)
            self.log.warning("handed back intake messages of a dead replica", count=recovered)
            self._nudge()
        counts = await self.store.counts(now)
        self.metrics.queue.set(counts["queue"])
        self.metrics.dead.set(counts["dead"])
        self.metrics.tracked.set(counts["tracked"])
        self.metrics.due.set(counts["due"])
        if not self.health.redis_ok:
            self.log.info("redis reachable")
        self.health.redis_ok = True
        self.health.redis_error = ""

    async def _sweep_loop(self) -> None:
        """Once a minute, hand back in-flight lists of replicas that died before registering.

        Apart from the heartbeat loop, so a long SCAN of a big keyspace cannot delay
        heartbeats and make this replica look dead to the others.
        """
        while True:
            await self._clock.sleep(60.0)
            try:
                recovered = await self.store.recover_unregistered()
            except RedisError as exc:
                self._redis_failed("sweep", exc)
                continue
            if recovered:
                self.metrics.orphans_recovered.inc(recovered)
                self.log.warning("handed back intake messages of an unregistered replica",
                                 count=recovered)  # fmt: skip
                self._nudge()

    async def _hand_back(self) -> None:
        await self.leases.hand_back_all()
        try:
            returned = await self.store.deregister(self.replica_id)
            if returned:
                self.log.info("returned in-flight intake messages", count=returned)
        except RedisError as exc:
            self._redis_failed("deregister", exc)


def _next_in(plan: Plan, now: float) -> float | None:
    return None if plan.due_at is None else round(plan.due_at - now, 3)
