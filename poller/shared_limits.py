"""The limits every replica keeps to, shared through Redis: the edge around
:class:`poller.limits.LimitView`.

Before each API request :meth:`SharedLimits.admit` decides from the local view, so a replica
that knows of no pause and has no rate limit pays nothing.  Redis is asked when the rate limit
is on (``GATE_LIMITS`` takes the slot and reads the pauses in the same call: every request
granted after a pause was written is held back) or when a key needs its probe.  A background
refresh (:meth:`SharedLimits.maintain`, every :data:`REFRESH` seconds unless a request asked
just before) brings other replicas' pauses into the view when nothing else does.  After each
answer :meth:`SharedLimits.settle` tells Redis what it means (a 429, a 401, a key that works)
when it changes something, and only then.

Redis not answering never holds a request back by itself: the replica logs it once, goes on
with the rules applied to itself alone (the pause after a 401 or a 429 kept by this process,
one probe per process), retries Redis in the background, and says when it answers again.
"""

from __future__ import annotations

import itertools
import random
import uuid
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from enum import StrEnum
from typing import Any, Final, Protocol

import anyio
from redis.exceptions import RedisError

from poller.backoff import Backoff
from poller.clock import SYSTEM_CLOCK, Clock
from poller.limits import (
    AwaitProbe,
    Cause,
    GateReply,
    Hold,
    LimitPolicy,
    LimitView,
    Probe,
    RatePlan,
    ReportReply,
    Snapshot,
    parse_gate,
    parse_report,
    rate_plan,
)
from poller.telemetry import Metrics, get_logger

#: Seconds between two background reads of the shared state (skipped when a request read it).
REFRESH: Final = 0.1
#: The most a Redis call on a request's path may take before the replica goes on alone.
CALL_TIMEOUT: Final = 1.0
#: A rate-limit slot whose grant took longer than this to reach the request is not used: the
#: limit promises the API its count only while requests' delays differ by less than
#: :data:`poller.limits.RATE_MARGIN`, and this keeps the replica's own share of it small.
STALE_GRANT: Final = 0.025
#: A probe whose lease is held locally (Redis unreachable) is named this.
LOCAL_PROBE: Final = "local"


class LimitsStore(Protocol):
    """The two scripts (see :class:`poller.store.Store`)."""

    async def gate_limits(
        self, mode: str, interval_us: int, burst: int, scope: str, owner: str, lease_ms: int
    ) -> Sequence[Any]: ...

    async def report_limits(
        self, what: str, scope: str, owner: str, pause_ms: int, table_ms: Sequence[int]
    ) -> Sequence[Any]: ...


class Answer(StrEnum):
    """What one API answer says about the limits."""

    ACCEPTED = "accepted"  # the gateway judged the credentials and let the request through
    UNAUTHORIZED = "unauthorized"  # 401 where the key pair locks after repeated ones
    THROTTLED = "throttled"  # 429
    INCONCLUSIVE = "inconclusive"  # no answer, or one that says nothing about the key


@dataclass(frozen=True, slots=True)
class Pass:
    """The request may go.  ``probe`` names its probe lease when it is the key's probe."""

    scope: str
    probe: str = ""


@dataclass(frozen=True, slots=True)
class Held:
    """The request must not go: every replica pauses for ``remaining`` seconds."""

    cause: Cause
    remaining: float


@dataclass(frozen=True, slots=True)
class Trip:
    """A pause this replica's answer began (``began``) or only met (a request in flight)."""

    cause: Cause
    length: float
    began: bool


class SharedLimits:
    """One replica's side of the shared limits.  ``store=None``: this process alone."""

    def __init__(
        self,
        store: LimitsStore | None = None,
        policy: LimitPolicy | None = None,
        *,
        rate: float = 0.0,
        clock: Clock = SYSTEM_CLOCK,
        metrics: Metrics | None = None,
        owner: str = "",
        rng: random.Random | None = None,
        call_timeout: float = CALL_TIMEOUT,
    ) -> None:
        self.view = LimitView(policy)
        self.policy = self.view.policy
        self._plan: RatePlan | None = rate_plan(rate) if rate > 0 else None
        self._clock = clock
        self._metrics = metrics
        self._owner = owner or uuid.uuid4().hex[:12]
        self._probes = itertools.count(1)
        self._rng = rng or random.Random()
        self._link = RedisLink(store, clock=clock, rng=self._rng, metrics=metrics,
                               call_timeout=call_timeout)  # fmt: skip
        self._log = get_logger()
        self._changed = anyio.Event()
        self._slot = anyio.Lock()  # one task per process asks for rate-limit slots at a time
        self._scope = ""  # the scope the background refresh reads
        self._read_at = -1e9
        self.stale_grants = 0  # rate-limit slots left unused because their grant came late
        self._table_ms = [round(p * 1000) for p in self.policy.auth_pause_table()]
        if metrics is not None:
            for cause in Cause:
                metrics.limit_pause.labels(cause.value).set_function(self._remaining(cause))
                metrics.limit_trips.labels(cause.value)
                metrics.limit_held.labels(cause.value)

    def _remaining(self, cause: Cause) -> Callable[[], float]:
        return lambda: self.view.remaining(cause, self._clock.monotonic())

    @property
    def rate(self) -> RatePlan | None:
        return self._plan

    @property
    def shared(self) -> bool:
        """True while the state is shared through Redis (it answers)."""
        return self._link.shared

    # --- before a request ------------------------------------------------------------------

    async def admit(self, scope: str) -> Pass | Held:
        """Wait for the request's turn, or say why it must not go."""
        self._scope = scope or self._scope
        while True:
            now = self._clock.monotonic()
            decision = self.view.decide(scope, now)
            if isinstance(decision, Hold):
                return self._held(decision)
            if isinstance(decision, AwaitProbe):
                await self._await_change(decision.until - now)
                continue
            if (
                not (self._plan is not None or isinstance(decision, Probe))
                or not self._link.can_ask()
            ):
                if isinstance(decision, Probe):
                    self.view.take_local_probe(scope, now)
                    self._changed_now()
                    return Pass(scope, LOCAL_PROBE)
                return Pass(scope)
            if self._plan is None:
                outcome = await self._ask(scope)
            else:
                async with self._slot:
                    # while this task queued for the slot, the view may have learnt of a pause,
                    # or Redis stopped answering
                    queued = self.view.decide(scope, self._clock.monotonic())
                    if isinstance(queued, Hold | AwaitProbe) or not self._link.can_ask():
                        continue
                    outcome = await self._ask(scope)
            if outcome is not None:
                return outcome

    def check(self, scope: str) -> Held | None:
        """Whether a pause holds a request back that passed :meth:`admit` a moment ago (after
        another wait), from the local view alone."""
        decision = self.view.decide(scope, self._clock.monotonic())
        return self._held(decision) if isinstance(decision, Hold) else None

    async def _ask(self, scope: str) -> Pass | Held | None:
        """One ``GATE_LIMITS`` call: the verdict, or None to decide again."""
        owner = f"{self._owner}:{next(self._probes)}"
        plan = self._plan
        asked = self._clock.monotonic()
        reply = await self._gate(
            scope,
            owner,
            interval_us=plan.interval_us if plan else 0,
            burst=plan.burst if plan else 1,
        )
        if reply is None:
            return None  # Redis did not answer: decide alone
        if reply.verdict == "go":
            if plan is not None and self._clock.monotonic() - asked > STALE_GRANT:
                # Granted, but the answer took long to come back (or this process to run):
                # sent now, the request would reach the API late, among requests granted
                # after it.  Its slot is left unused; asking again costs only throughput.
                self.stale_grants += 1
                return None
            return Pass(scope)
        if reply.verdict == "probe":
            return Pass(scope, owner)
        if reply.verdict == "rate":
            # Spread the retries a little: every waiting replica was told the same moment.
            interval = plan.interval if plan else 0.0
            await self._clock.sleep(reply.wait + self._rng.random() * min(interval / 4, 0.005))
            return None
        decision = self.view.decide(scope, self._clock.monotonic())
        if isinstance(decision, Hold):
            return self._held(decision)
        # Waiting for a probe, or the view kept a newer reply than this one (the probe was
        # answered meanwhile): decide again.
        return None

    def _held(self, hold: Hold) -> Held:
        if self._metrics is not None:
            self._metrics.limit_held.labels(hold.cause.value).inc()
        return Held(hold.cause, hold.remaining)

    async def _await_change(self, seconds: float) -> None:
        await self._clock.wait(self._changed, max(0.0, seconds))

    def _changed_now(self) -> None:
        self._changed.set()
        self._changed = anyio.Event()

    # --- after the answer ------------------------------------------------------------------

    async def settle(
        self, ticket: Pass, answer: Answer, retry_after: float | None = None
    ) -> Trip | None:
        """Record what the answer to an admitted request means; a :class:`Trip` for a 429 or a
        401 (``began``: this answer began the pause)."""
        scope = ticket.scope
        if answer is Answer.THROTTLED:
            trip = await self._throttled(retry_after)
            if ticket.probe:
                await self._release(ticket)
            return trip
        if answer is Answer.UNAUTHORIZED and scope:
            return await self._unauthorized(ticket)
        if answer is Answer.ACCEPTED:
            if not ticket.probe and self.view.settled(scope):
                return None
            await self._accepted(ticket)
            return None
        if ticket.probe:
            await self._release(ticket)
        return None

    async def _throttled(self, retry_after: float | None) -> Trip:
        length = self.policy.throttle_pause_for(retry_after)
        reply = await self._report("throttled", self._scope, "", round(length * 1000))
        if reply is None:
            length, began = self.view.throttled_locally(retry_after, self._clock.monotonic())
            self._changed_now()
        else:
            began = reply.result == "tripped"
        return self._count(Trip(Cause.THROTTLED, length, began))

    async def _unauthorized(self, ticket: Pass) -> Trip:
        scope = ticket.scope
        reply = await self._report("unauthorized", scope, ticket.probe)
        if reply is None:
            length = self.view.unauthorized_locally(scope, self._clock.monotonic())
            self._changed_now()
            return self._count(Trip(Cause.UNAUTHORIZED, length or 0.0, length is not None))
        self.view.end_local_probe(scope)
        return self._count(Trip(Cause.UNAUTHORIZED, reply.length, reply.result == "tripped"))

    async def _accepted(self, ticket: Pass) -> None:
        scope = ticket.scope
        if self.view.accepted_locally(scope):
            self._changed_now()
        await self._report("ok", scope, ticket.probe)

    async def _release(self, ticket: Pass) -> None:
        if ticket.probe == LOCAL_PROBE or not self._link.shared:
            self.view.end_local_probe(ticket.scope)
        else:
            await self._report("release", ticket.scope, ticket.probe)
            self.view.end_local_probe(ticket.scope)
        self._changed_now()

    def _count(self, trip: Trip) -> Trip:
        if trip.began:
            if self._metrics is not None:
                self._metrics.limit_trips.labels(trip.cause.value).inc()
            if trip.cause is Cause.THROTTLED:  # a 401 is reported as an auth problem instead
                self._log.warning(
                    "throttled by the API: polling paused",
                    seconds=round(trip.length, 3),
                    replicas="all" if self._link.shared else "this one",
                )
        return trip

    # --- background ------------------------------------------------------------------------

    async def maintain(self) -> None:
        """Read the shared state every :data:`REFRESH` seconds unless a request just did, and
        ask a Redis that stopped answering again (with backoff) until it does."""
        if self._link.store is None:
            return
        while True:
            await self._clock.sleep(REFRESH)
            now = self._clock.monotonic()
            if now - self._read_at < REFRESH * 0.9 or now < self._link.retry_at:
                continue
            await self._gate(self._scope, "", mode="peek")

    # --- Redis -----------------------------------------------------------------------------

    async def _gate(
        self, scope: str, owner: str, *, mode: str = "go", interval_us: int = 0, burst: int = 1
    ) -> GateReply | None:
        lease_ms = round(self.policy.probe_lease * 1000)
        reply = await self._link.gate(mode, interval_us, burst, scope, owner, lease_ms)
        if reply is not None:
            self._apply(scope, reply.snapshot)
        return reply

    async def _report(
        self, what: str, scope: str, owner: str, pause_ms: int = 0
    ) -> ReportReply | None:
        reply = await self._link.report(what, scope, owner, pause_ms, self._table_ms)
        if reply is not None:
            self._apply(scope, reply.snapshot)
        return reply

    def _apply(self, scope: str, snap: Snapshot) -> None:
        now = self._clock.monotonic()
        self._read_at = now
        if self.view.apply(scope, snap, now):
            self._changed_now()


class RedisLink:
    """The shared limits' way to Redis: each call bounded by a timeout, never raising; a
    failure is logged once and the link asked again with backoff, so Redis trouble never
    holds a poll."""

    def __init__(
        self,
        store: LimitsStore | None,
        *,
        clock: Clock,
        rng: random.Random,
        metrics: Metrics | None,
        call_timeout: float,
    ) -> None:
        self.store = store
        self.shared = store is not None  # False while Redis does not answer
        self.retry_at = 0.0
        self._clock = clock
        self._metrics = metrics
        self._call_timeout = call_timeout
        self._backoff = Backoff(initial=0.5, cap=5.0, rng=rng)
        self._log = get_logger()

    def can_ask(self) -> bool:
        return self.store is not None and (self.shared or self._clock.monotonic() >= self.retry_at)

    async def call(
        self, op: str, call: Callable[[LimitsStore], Awaitable[Sequence[Any]]]
    ) -> Sequence[Any] | None:
        """The call's reply, or ``None`` when Redis did not answer (then it is down)."""
        store = self.store
        if store is None:
            return None
        try:
            with anyio.fail_after(self._call_timeout):
                raw: Sequence[Any] = await call(store)
        except (RedisError, TimeoutError, OSError) as exc:
            self.down(op, exc)
            return None
        self._up()
        return raw

    async def gate(
        self, mode: str, interval_us: int, burst: int, scope: str, owner: str, lease_ms: int
    ) -> GateReply | None:
        """``GATE_LIMITS``, parsed; ``None`` when Redis did not answer or answered nonsense."""
        raw = await self.call(
            "gate",
            lambda store: store.gate_limits(mode, interval_us, burst, scope, owner, lease_ms),
        )
        if raw is None:
            return None
        try:
            return parse_gate(raw)
        except (ValueError, TypeError) as exc:
            self.down("parse", exc)
            return None

    async def report(
        self, what: str, scope: str, owner: str, pause_ms: int, table_ms: Sequence[int]
    ) -> ReportReply | None:
        """``REPORT_LIMITS``, parsed; ``None`` when not asked (Redis down, not yet due for a
        retry), not answered, or the limits key holds another type."""
        if not self.can_ask():
            return None
        raw = await self.call(
            "report", lambda store: store.report_limits(what, scope, owner, pause_ms, table_ms)
        )
        if raw is None:
            return None
        try:
            reply = parse_report(raw)
        except (ValueError, TypeError) as exc:
            self.down("parse", exc)
            return None
        if reply.result == "corrupt":
            self.down("report", ValueError(f"{what}: the limits key holds another type"))
            return None
        return reply

    def down(self, op: str, exc: BaseException) -> None:
        if self._metrics is not None:
            self._metrics.redis_errors.labels("limits").inc()
        self.retry_at = self._clock.monotonic() + self._backoff.failed()
        if self.shared:
            self.shared = False
            self._log.warning(
                "shared limits unavailable: this replica keeps its pauses alone, and no rate "
                "limit, until Redis answers",
                op=op,
                error=f"{type(exc).__name__}: {exc}",
            )

    def _up(self) -> None:
        self._backoff.succeeded()
        if not self.shared:
            self.shared = True
            self._log.info("shared limits available again")
