"""The daemon's loop: take intake messages, claim due jobs, poll them, commit what changed.

One anyio task group owns every task of a replica.  ``stop()`` begins a drain: no new claims,
polls in flight get ``shutdown_grace`` to finish, and whatever is left is cancelled and its
lease handed back (due at once) so another replica picks it up without waiting.
"""

from __future__ import annotations

import random
import socket
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass

import anyio
import anyio.abc
from redis.exceptions import RedisError

from poller.config import Settings
from poller.intake import Invalid, parse_message
from poller.schedule import Policy
from poller.servicestage.client import ServiceStageClient
from poller.store import Store, job_member
from poller.telemetry import Health, Metrics, get_logger
from poller.tracking import JobState, Plan, plan_after_poll, plan_timeout, timed_out

Clock = Callable[[], float]


def default_replica_id() -> str:
    """A name unique to this process: host, pid and a random suffix."""
    return f"{socket.gethostname()}-{uuid.uuid4().hex[:8]}"


@dataclass
class _InFlight:
    state: JobState
    scope: anyio.CancelScope
    committed: bool = False


class Worker:
    """One replica of the daemon."""

    def __init__(
        self,
        settings: Settings,
        store: Store,
        client: ServiceStageClient,
        *,
        metrics: Metrics | None = None,
        health: Health | None = None,
        clock: Clock = time.time,
        rng: random.Random | None = None,
        replica_id: str | None = None,
    ) -> None:
        self.settings = settings
        self.store = store
        self.client = client
        self.metrics = metrics or Metrics()
        self.health = health or Health()
        self._local_clock = clock
        # Replicas compare times (due, lease deadlines) through Redis, so they all read
        # Redis's clock: the local clock plus the offset measured by housekeeping.
        self._clock_offset = 0.0
        self._clock_synced = False
        self.rng = rng or random.Random()
        self.replica_id = replica_id or settings.replica_id or default_replica_id()
        self.policy = Policy.from_settings(settings)
        self.log = get_logger(replica=self.replica_id)
        # keyed by (member, lease token): a job re-claimed after a lapsed lease is a new entry
        self._inflight: dict[tuple[str, str], _InFlight] = {}
        self._wake = anyio.Event()
        self._stopping = anyio.Event()
        self._idle = anyio.Event()
        self._idle.set()

    def clock(self) -> float:
        """Now, on the Redis server's clock (epoch seconds)."""
        return self._local_clock() + self._clock_offset

    async def _sync_clock(self) -> None:
        before = self._local_clock()
        server = await self.store.server_time()
        after = self._local_clock()
        # A slow round trip (busy loop, stalled Redis) would skew the estimate by half of it;
        # keep the last good offset instead, unless there is none yet.
        if after - before <= 0.05 or not self._clock_synced:
            self._clock_offset = server - (before + after) / 2
            self._clock_synced = True

    # --- control --------------------------------------------------------------------------

    def stop(self) -> None:
        """Begin a graceful drain (idempotent)."""
        if not self._stopping.is_set():
            self.log.info("draining", in_flight=len(self._inflight))
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
                tg.start_soon(self._renew_loop)
                tg.start_soon(self._sweep_loop)
                await self._schedule_loop()
                tg.cancel_scope.cancel()
        finally:
            grace = max(0.5, self.settings.shutdown_grace * 0.1)
            with anyio.CancelScope(shield=True), anyio.move_on_after(grace):
                await self._hand_back()
        self.log.info("worker stopped")

    async def _register(self) -> None:
        failures = 0
        while not self._stopping.is_set():
            try:
                await self._sync_clock()
                await self.store.heartbeat(self.replica_id, self.clock() + self._heartbeat_ttl)
                return
            except RedisError as exc:
                failures += 1
                self._redis_failed("register", exc)
                await self._sleep_unless_stopping(min(5.0, 0.1 * 2**failures))

    @property
    def _housekeeping_period(self) -> float:
        return max(0.2, min(5.0, self.settings.lease_seconds / 3))

    @property
    def _heartbeat_ttl(self) -> float:
        return max(3 * self._housekeeping_period, 10.0)

    # --- scheduling -------------------------------------------------------------------------

    async def _schedule_loop(self) -> None:
        async with anyio.create_task_group() as polls:
            failures = 0
            while not self._stopping.is_set():
                self.health.tick()
                self._wake = anyio.Event()
                free = self.settings.concurrency - len(self._inflight)
                wait = 1.0
                if free > 0:
                    now = self.clock()
                    limit = min(free, self.settings.claim_batch)
                    try:
                        claim = await self.store.claim_due(
                            self.replica_id, now, self.settings.lease_seconds, limit
                        )
                        failures = 0
                    except RedisError as exc:
                        failures += 1
                        self._redis_failed("claim", exc)
                        await self._sleep_unless_stopping(min(5.0, 0.1 * 2**failures))
                        continue
                    for member, reason in claim.quarantined:
                        self.log.error("job state unreadable; moved to dead letters",
                                       member=member, reason=reason)  # fmt: skip
                    claimed, next_due = claim.jobs, claim.next_due
                    for state in claimed:
                        scope = anyio.CancelScope()
                        member = job_member(state.project_id, state.job_id)
                        self._inflight[(member, state.token)] = _InFlight(state, scope)
                        self._idle = anyio.Event()
                        self.metrics.inflight.set(len(self._inflight))
                        polls.start_soon(self._poll_one, member, state, scope)
                    if len(claimed) + len(claim.quarantined) == limit:
                        continue  # more may be due right now
                    if next_due is not None:
                        wait = min(wait, max(0.0, next_due - self.clock()))
                with anyio.move_on_after(wait):
                    await self._wake.wait()
            await self._drain(polls)

    async def _drain(self, polls: anyio.abc.TaskGroup) -> None:
        # Most of the grace goes to polls in flight; the rest to handing back what is left.
        with anyio.move_on_after(self.settings.shutdown_grace * 0.9):
            await self._idle.wait()
        if self._inflight:
            self.log.warning("shutdown grace over; handing back polls", count=len(self._inflight))
        polls.cancel_scope.cancel()

    async def _sleep_unless_stopping(self, seconds: float) -> None:
        with anyio.move_on_after(seconds):
            await self._stopping.wait()

    def _redis_failed(self, op: str, exc: BaseException) -> None:
        self.metrics.redis_errors.labels(op).inc()
        self.health.redis_ok = False
        self.health.redis_error = f"{type(exc).__name__} during {op}"
        self.log.warning("redis operation failed", op=op, error=str(exc))

    # --- one poll ------------------------------------------------------------------------

    async def _poll_one(self, member: str, state: JobState, scope: anyio.CancelScope) -> None:
        started = self.clock()
        if state.due_at is not None:
            self.metrics.poll_lag.observe(max(0.0, started - state.due_at))
        retry_in = 0.0  # when the poll ends uncommitted: due again at once (drain, lost lease)
        try:
            with scope:
                if timed_out(state, started, self.policy):
                    plan = plan_timeout(state, started, self.policy)
                else:
                    outcome = await self.client.fetch_job(
                        state.project_id, state.job_id, state.instance_id
                    )
                    plan = plan_after_poll(
                        state, outcome, now=self.clock(), policy=self.policy, rng=self.rng
                    )
                await self._commit(member, state, plan)
        except Exception:
            # A bug must not take the replica down: hand the job back for a later retry.
            self.log.exception("poll crashed", job_id=state.job_id, project_id=state.project_id)
            retry_in = self.settings.lease_seconds
        finally:
            entry = self._inflight.pop((member, state.token), None)
            if entry is not None and not entry.committed:
                await self._release(state, retry_in)
            self.metrics.inflight.set(len(self._inflight))
            self.metrics.poll_duration.observe(max(0.0, self.clock() - started))
            if not self._inflight:
                self._idle.set()
            self._nudge()

    async def _release(self, state: JobState, delay: float) -> None:
        """Give an uncommitted lease back (shielded: it runs while a drain cancels polls)."""
        # bounded so a slow Redis cannot stretch the drain past shutdown_grace
        limit = min(2.0, max(0.2, 0.1 * self.settings.shutdown_grace))
        with anyio.CancelScope(shield=True), anyio.move_on_after(limit):
            try:
                await self.store.release(state, self.clock() + delay)
            except RedisError as exc:
                self._redis_failed("release", exc)

    async def _commit(self, member: str, state: JobState, plan: Plan) -> None:
        commit_id = uuid.uuid4().hex
        failures = 0
        while True:
            try:
                result = await self.store.commit(state, plan, self.clock(), commit_id)
                break
            except RedisError as exc:
                failures += 1
                self._redis_failed("commit", exc)
                await anyio.sleep(min(2.0, 0.05 * 2**failures))
        entry = self._inflight.get((member, state.token))
        if entry is not None:
            entry.committed = True
        self.metrics.commits.labels(result).inc()
        self.metrics.polls.labels(plan.outcome).inc()
        bound = self.log.bind(job_id=state.job_id, project_id=state.project_id)
        if result in ("ok", "duplicate"):
            if result == "ok":
                for event in plan.events:
                    self.metrics.events.labels(event.kind).inc()
            for event in plan.events:
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
            if plan.outcome in ("transient", "auth_failed", "not_found"):
                bound.info(
                    "poll failed",
                    outcome=plan.outcome,
                    error=plan.last_error,
                    attempt=plan.attempts,
                    request_id=plan.request_id or None,
                )
            else:
                bound.debug("polled", outcome=plan.outcome, next_in=_next_in(plan, self.clock()))
        else:
            self.metrics.leases_lost.inc()
            bound.warning("commit refused; another replica owns the job now", result=result)

    # --- intake --------------------------------------------------------------------------

    async def _intake_loop(self) -> None:
        failures = 0
        while not self._stopping.is_set():
            try:
                raws = await self.store.take_messages(self.replica_id, limit=100, block=1)
                for raw in raws:
                    await self._admit(raw)
                failures = 0
            except RedisError as exc:
                failures += 1
                self._redis_failed("intake", exc)
                await self._sleep_unless_stopping(min(5.0, 0.1 * 2**failures))
            except Exception:
                failures += 1
                self.log.exception("intake failed")
                await self._sleep_unless_stopping(min(5.0, 0.1 * 2**failures))

    async def _admit(self, raw: bytes) -> None:
        now = self.clock()
        parsed = parse_message(raw, self.settings.project_id)
        if isinstance(parsed, Invalid):
            await self.store.dead_letter(self.replica_id, raw, parsed.reason, now)
            self.metrics.intake.labels("dead_letter").inc()
            self.log.warning("intake message dead-lettered", reason=parsed.reason)
            return
        result = await self.store.admit(self.replica_id, raw, parsed, now)
        self.metrics.intake.labels(result).inc()
        log = self.log.bind(job_id=parsed.job_id, project_id=parsed.project_id)
        if result == "admitted":
            log.info("tracking job", force=parsed.force or None)
            self._nudge()
        else:
            log.info("intake message ignored", why=f"already {result}")

    # --- leases and housekeeping ------------------------------------------------------------

    async def _renew_loop(self) -> None:
        period = max(0.05, self.settings.lease_seconds / 3)
        while True:
            await anyio.sleep(period)
            entries = [(m, e) for (m, _), e in self._inflight.items() if not e.committed]
            if not entries:
                continue
            try:
                held = await self.store.renew(
                    [(m, e.state.token) for m, e in entries],
                    self.clock() + self.settings.lease_seconds,
                )
            except RedisError as exc:
                self._redis_failed("renew", exc)
                continue
            for (member, entry), ok in zip(entries, held, strict=True):
                # a poll that finished (and released its lease) meanwhile lost nothing
                still_running = self._inflight.get((member, entry.state.token)) is entry
                if not ok and not entry.committed and still_running:
                    self.metrics.leases_lost.inc()
                    self.log.warning("lease lost; abandoning this poll", member=member)
                    entry.scope.cancel()

    async def _housekeeping_loop(self) -> None:
        period = self._housekeeping_period
        while True:
            try:
                await self._sync_clock()
                now = self.clock()
                await self.store.heartbeat(self.replica_id, now + self._heartbeat_ttl)
                recovered = await self.store.recover_orphans(now)
                if recovered:
                    self.metrics.orphans_recovered.inc(recovered)
                    self.log.warning(
                        "handed back intake messages of a dead replica", count=recovered
                    )
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
            except RedisError as exc:
                self._redis_failed("housekeeping", exc)
            await anyio.sleep(period)

    async def _sweep_loop(self) -> None:
        """Once a minute, hand back in-flight lists of replicas that died before registering.

        Apart from the heartbeat loop, so a long SCAN of a big keyspace cannot delay
        heartbeats and make this replica look dead to the others.
        """
        while True:
            await anyio.sleep(60.0)
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
        for entry in list(self._inflight.values()):  # normally empty: polls release their own
            if not entry.committed:
                await self._release(entry.state, 0.0)
        self._inflight.clear()
        try:
            returned = await self.store.deregister(self.replica_id)
            if returned:
                self.log.info("returned in-flight intake messages", count=returned)
        except RedisError as exc:
            self._redis_failed("deregister", exc)


def _next_in(plan: Plan, now: float) -> float | None:
    return None if plan.due_at is None else round(plan.due_at - now, 3)
