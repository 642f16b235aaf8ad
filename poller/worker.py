"""The daemon's loop: take intake messages, claim due jobs, poll them, commit what changed.

:class:`Worker` is one replica.  It claims due jobs and runs one poll per claimed job, from
fetch to commit, and composes the parts that do the rest: :class:`~poller.intake_loop.IntakeLoop`
(messages into tracking), :class:`~poller.housekeeping.Housekeeping` (registration,
heart-beat, recovery of dead replicas' messages, gauges) and :class:`~poller.leases.Leases`
(polls in flight, renewal, hand-back).  What they share (store, clocks, telemetry, the stop
signal, how a Redis failure is reported) is one :class:`~poller.replica.ReplicaContext`.

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
from typing import Any, Final, Generic, TypeVar

import anyio
import anyio.abc
from redis.exceptions import RedisError

from poller.backoff import Backoff
from poller.clock import SYSTEM_CLOCK, Clock, ServerClock
from poller.config import Settings
from poller.housekeeping import Housekeeping
from poller.intake_loop import IntakeLoop
from poller.leases import Lease, Leases, ShutdownBudget
from poller.policy import Policy
from poller.ports import JobFetcher, JobStore
from poller.replica import ReplicaContext
from poller.snapshot import AbandonReason, EventKind
from poller.store import is_transient, job_member
from poller.telemetry import Health, Metrics, get_logger
from poller.tracking import JobState, Plan, plan_after_poll, plan_timeout, timed_out

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
        self.replica_id = replica_id or settings.replica_id or default_replica_id()
        self._replica = ReplicaContext(
            replica_id=self.replica_id,
            store=store,
            clock=clock,
            # Replicas compare times (due, lease deadlines) through Redis, so they all read
            # Redis's clock, estimated from this host's monotonic clock.
            server_clock=ServerClock(clock),
            rng=rng or random.Random(),
            metrics=metrics or Metrics(),
            health=health or Health(),
            log=get_logger(replica=self.replica_id),
            stopping=anyio.Event(),
        )
        self._clock = clock
        self.metrics = self._replica.metrics
        self.health = self._replica.health
        self.log = self._replica.log
        self.rng = self._replica.rng
        self._stopping = self._replica.stopping
        self.policy = Policy.from_settings(settings)
        self.budget = ShutdownBudget.of(settings.shutdown_grace)
        self._wake = anyio.Event()
        self._commit_ids = itertools.count(1)
        self.leases = Leases(
            store,
            clock,
            self.clock,
            lease_seconds=settings.lease_seconds,
            budget=self.budget,
            metrics=self.metrics,
            redis_failed=self._replica.redis_failed,
            on_lost=lambda member: self.log.warning(
                "lease lost; abandoning this poll", member=member
            ),
        )
        self.intake = IntakeLoop(
            self._replica, project_id=settings.project_id, on_admitted=self._nudge
        )
        self.housekeeping = Housekeeping(self._replica, settings, on_recovered=self._nudge)

    def clock(self) -> float:
        """Now, on the Redis server's clock (epoch seconds)."""
        return self._replica.now()

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
            await self.housekeeping.register()
            async with anyio.create_task_group() as tg:
                tg.start_soon(self.intake.run)
                tg.start_soon(self.housekeeping.beat_forever)
                tg.start_soon(self.leases.renew_forever)
                tg.start_soon(self.housekeeping.sweep_forever)
                await self._claim_loop()
                tg.cancel_scope.cancel()
        finally:
            with anyio.CancelScope(shield=True), anyio.move_on_after(self.budget.hand_back):
                await self._hand_back()
        self.log.info("worker stopped")

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
            self._replica.redis_failed("claim", exc)
            await self._replica.sleep_unless_stopping(backoff.failed())
            return 0.0
        backoff.succeeded()
        for error in claim.errors:  # a shard that could not be claimed from; the others were
            self._replica.redis_failed("claim", error)
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
                self._replica.redis_failed("commit", exc)
                await self._clock.sleep(backoff.failed())
        if result == "corrupt":
            await self._retire_corrupt(lease, "a key of this job holds another Redis type")
            return
        lease.committed = True
        self.metrics.commits.labels(result).inc()
        self.metrics.polls.labels(plan.outcome).inc()
        if result in ("ok", "duplicate"):
            _log_committed(
                self.log, self.metrics, state, plan, counted=result == "ok", now=self.clock()
            )
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

    async def _hand_back(self) -> None:
        await self.leases.hand_back_all()
        await self.housekeeping.deregister()


def _log_committed(
    log: Any, metrics: Metrics, state: JobState, plan: Plan, *, counted: bool, now: float
) -> None:
    """Log the events of a committed plan, then the poll's outcome; ``counted``: count the
    events too (not when the commit was found applied already, a retry after a lost reply)."""
    bound = log.bind(job_id=state.job_id, project_id=state.project_id)
    for event in plan.events:
        if counted:
            metrics.events.labels(event.kind).inc()
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
        bound.debug("polled", outcome=plan.outcome, next_in=_next_in(plan, now))


def _next_in(plan: Plan, now: float) -> float | None:
    return None if plan.due_at is None else round(plan.due_at - now, 3)
