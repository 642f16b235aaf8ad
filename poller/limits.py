"""Limits every replica keeps to: the global rate limit's parameters and the pauses after a
401 under AK/SK or a 429.  The pure part: no I/O, and time only as the numbers callers pass.

The shared state lives in Redis (``P:limits``, see :mod:`poller.store.schema`);
:mod:`poller.shared_limits` reads and writes it.  Each replica keeps a :class:`LimitView`: the
last state Redis answered (with local monotonic deadlines), plus what the replica had to decide
alone while Redis did not answer (the same rules, kept per process).  Before each request the
view decides, without I/O, whether it may go.

Per access key (a *scope*, a fingerprint of the AK) the standing is ``unknown`` until a request
signed with it was answered, ``ok`` after that, ``paused`` after a 401.  A key that is unknown
or whose pause has just ended is *probed*: one request across all replicas goes, the others
wait for its answer.  So a wrong secret key costs one bad signature per pause window, the first
one included, whatever the number of replicas and polls in flight.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Sequence
from dataclasses import dataclass
from enum import StrEnum
from typing import Final

from poller.backoff import exponential_ceiling

#: What the rate limit leaves for the API's view of it: requests granted at most ``rate`` per
#: window of ``1 s + RATE_MARGIN`` on Redis's clock reach the API at most ``rate`` per second
#: unless their trips there differ by more than this.
RATE_MARGIN: Final = 0.1
#: Rates from which one request of burst is allowed (it absorbs the lateness of retries).
BURST_FROM: Final = 20


class Cause(StrEnum):
    """Why every replica pauses."""

    THROTTLED = "throttled"  # a 429 from the API gateway
    UNAUTHORIZED = "unauthorized"  # a 401 under AK/SK


class AuthStatus(StrEnum):
    """An access key's standing, as all replicas share it."""

    UNKNOWN = "unknown"  # no request signed with it was answered yet: probe first
    OK = "ok"
    PAUSED = "paused"  # after a 401; once the pause ends, one probe goes first


def scope_of(access_key: str) -> str:
    """The scope of the pauses a 401 signed with ``access_key`` brings: a fingerprint, so the AK
    (which logs treat as sensitive) is not written to Redis."""
    return hashlib.sha256(b"poller-limits\0" + access_key.encode()).hexdigest()[:16]


@dataclass(frozen=True, slots=True)
class LimitPolicy:
    """The lengths of the pauses, in seconds."""

    auth_pause: float = 30.0  # after the first 401 under AK/SK
    auth_pause_max: float = 300.0  # doubling per 401 in a row up to this
    throttle_default: float = 2.0  # after a 429 without a usable Retry-After
    throttle_min: float = 0.5  # a 429 always pauses at least this (even "Retry-After: 0")
    throttle_max: float = 60.0  # and at most this, whatever it says (the job itself waits longer)
    probe_lease: float = 15.0  # how long a probe may take before another may go instead

    def auth_pause_for(self, failures: int) -> float:
        """The pause after ``failures`` 401s in a row (the project's one backoff formula)."""
        return exponential_ceiling(failures, self.auth_pause, self.auth_pause_max)

    def auth_pause_table(self) -> tuple[float, ...]:
        """The pause after 1, 2, ... 401s in a row until the cap; the last one repeats."""
        table = [self.auth_pause_for(1)]
        while table[-1] < self.auth_pause_max and len(table) < 64:
            table.append(self.auth_pause_for(len(table) + 1))
        return tuple(table)

    def throttle_pause_for(self, retry_after: float | None) -> float:
        """The pause after a 429 that said ``retry_after`` (None: it said nothing usable)."""
        wanted = self.throttle_default if retry_after is None else retry_after
        return min(self.throttle_max, max(self.throttle_min, wanted))


@dataclass(frozen=True, slots=True)
class RatePlan:
    """The GCRA's parameters for a rate: ``interval`` seconds between grants on average,
    ``burst`` grants at once at most.

    Any window of ``window`` seconds holds at most ``per_window`` grants: with emission
    interval T and tolerance τ = (burst - 1)·T, grants n and 1 of a window satisfy
    t_n - t_1 ≥ (n - 1)·T - τ, so n < 1 + (window + τ)/T.
    """

    interval: float
    burst: int
    window: float

    @property
    def interval_us(self) -> int:
        """The interval in whole microseconds, rounded up (what the script counts in: never
        closer than ``interval``)."""
        return math.ceil(self.interval * 1_000_000 - 1e-6)

    @property
    def per_window(self) -> int:
        """The most grants any window of ``window`` seconds can hold."""
        bound = 1 + (self.window + (self.burst - 1) * self.interval) / self.interval
        return math.ceil(bound - 1e-9) - 1

    @property
    def sustained(self) -> float:
        """Grants per second when every slot is taken."""
        return 1.0 / self.interval


def rate_plan(per_second: float, margin: float = RATE_MARGIN) -> RatePlan:
    """Parameters under which no window of ``1 s + margin`` holds more than ``per_second``
    grants (at least one: below 1/s, one per ``(1 + margin) / per_second`` seconds).

    So the API, seeing each request some network delay after it was granted, counts at most
    ``per_second`` in any second unless two delays differ by more than ``margin``.  The price is
    throughput: ``(n - burst + 1) / (1 + margin)`` per second for ``n = floor(per_second)``.
    """
    if not per_second > 0 or not math.isfinite(per_second):
        raise ValueError("the rate must be a positive number")
    window = 1.0 + margin
    if per_second < 1:
        return RatePlan(interval=window / per_second, burst=1, window=window)
    n = math.floor(per_second)
    burst = 2 if n >= BURST_FROM else 1
    return RatePlan(interval=window / (n - burst + 1), burst=burst, window=window)


# --- what Redis answers ---------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Snapshot:
    """The shared state as one script left it; durations are seconds from that moment."""

    stamp: int  # Redis's clock in µs when it was read: orders the replies
    throttle: float = 0.0
    status: AuthStatus = AuthStatus.OK
    failures: int = 0
    auth: float = 0.0
    probe: float = 0.0


@dataclass(frozen=True, slots=True)
class GateReply:
    """``GATE_LIMITS``'s answer: ``go``, ``probe``, ``rate`` (wait ``wait`` s), ``paused``."""

    verdict: str
    wait: float
    snapshot: Snapshot


@dataclass(frozen=True, slots=True)
class ReportReply:
    """``REPORT_LIMITS``'s answer: ``tripped``, ``extended``, ``recovered``, ``same``,
    ``corrupt``, and the length of the pause it set."""

    result: str
    length: float
    snapshot: Snapshot


def _text(value: object) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def parse_snapshot(tail: Sequence[object]) -> Snapshot:
    """The snapshot of a script's reply tail (see ``schema.GATE_LIMITS``); ``ValueError`` when
    it is not one."""
    if len(tail) != 6:
        raise ValueError(f"expected 6 values, got {len(tail)}")
    stamp, throttle, status, failures, auth, probe = tail
    return Snapshot(
        stamp=int(_text(stamp)),
        throttle=max(0, int(_text(throttle))) / 1000.0,
        status=AuthStatus(_text(status)),
        failures=max(0, int(_text(failures))),
        auth=max(0, int(_text(auth))) / 1000.0,
        probe=max(0, int(_text(probe))) / 1000.0,
    )


def parse_gate(reply: Sequence[object]) -> GateReply:
    verdict, wait, *tail = reply
    return GateReply(_text(verdict), max(0, int(_text(wait))) / 1000.0, parse_snapshot(tail))


def parse_report(reply: Sequence[object]) -> ReportReply:
    result, length, *tail = reply
    return ReportReply(_text(result), max(0, int(_text(length))) / 1000.0, parse_snapshot(tail))


# --- the decision before a request ----------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Go:
    """Send the request (ask Redis first only for the rate limit)."""


@dataclass(frozen=True, slots=True)
class Probe:
    """The key must be probed and nobody is probing it: this request may be the probe (Redis
    decides when it answers; alone, the replica takes the probe itself)."""


@dataclass(frozen=True, slots=True)
class AwaitProbe:
    """Another request is probing the key: wait for its answer, at most until ``until``."""

    until: float


@dataclass(frozen=True, slots=True)
class Hold:
    """Paused: send nothing for ``remaining`` seconds."""

    cause: Cause
    remaining: float


Decision = Go | Probe | AwaitProbe | Hold

#: How far back a reply may be stamped before the last one applied and still be taken: only a
#: step of Redis's clock (a failover to another host), not a reply overtaken by a newer one.
_CLOCK_STEP_US: Final = 1_000_000


@dataclass(slots=True)
class _Scope:
    status: AuthStatus = AuthStatus.UNKNOWN
    failures: int = 0
    until: float = 0.0  # the shared pause ends (local monotonic)
    probe_until: float = 0.0  # someone's probe lease ends
    # decided alone while Redis did not answer: the same rules, for this process only
    local_failures: int = 0
    local_until: float = 0.0
    local_probe_until: float = 0.0  # this process's own probe (0: none)


class LimitView:
    """This replica's picture of the limits; every method takes local monotonic ``now``."""

    def __init__(self, policy: LimitPolicy | None = None) -> None:
        self.policy = policy or LimitPolicy()
        self._throttle_until = 0.0
        self._local_throttle_until = 0.0
        self._scopes: dict[str, _Scope] = {}
        self._stamp = -1

    def _scope(self, scope: str) -> _Scope:
        found = self._scopes.get(scope)
        if found is None:
            found = self._scopes[scope] = _Scope()
        return found

    # --- reading ---------------------------------------------------------------------------

    def decide(self, scope: str, now: float) -> Decision:
        """May a request whose 401 would count against ``scope`` go now (``''``: none would)?"""
        throttled = max(self._throttle_until, self._local_throttle_until) - now
        if throttled > 0:
            return Hold(Cause.THROTTLED, throttled)
        if not scope:
            return Go()
        s = self._scope(scope)
        paused = max(s.until, s.local_until) - now
        if paused > 0:
            return Hold(Cause.UNAUTHORIZED, paused)
        if s.status is AuthStatus.OK and not s.local_failures:
            return Go()
        if s.local_probe_until > now:
            return AwaitProbe(s.local_probe_until)
        if s.probe_until > now:
            return AwaitProbe(s.probe_until)
        return Probe()

    def remaining(self, cause: Cause, now: float) -> float:
        """Seconds left of the longest pause of ``cause`` this replica keeps to."""
        if cause is Cause.THROTTLED:
            return max(0.0, self._throttle_until - now, self._local_throttle_until - now)
        return max(
            [0.0, *(max(s.until, s.local_until) - now for s in self._scopes.values())],
        )

    def status(self, scope: str) -> AuthStatus:
        return self._scope(scope).status if scope else AuthStatus.OK

    def settled(self, scope: str) -> bool:
        """True when an accepted request with ``scope`` changes nothing (no need to tell)."""
        if not scope:
            return True
        s = self._scope(scope)
        return s.status is AuthStatus.OK and not s.local_failures and not s.local_probe_until

    # --- what Redis said -------------------------------------------------------------------

    def apply(self, scope: str, snap: Snapshot, now: float) -> bool:
        """Take the state one reply read at about local time ``now``; True when the picture
        changed.  A reply stamped before one applied already (overtaken on another
        connection) is ignored, unless Redis's clock stepped back."""
        if snap.stamp < self._stamp and self._stamp - snap.stamp < _CLOCK_STEP_US:
            return False
        self._stamp = snap.stamp
        before = self._picture(scope, now)
        self._throttle_until = now + snap.throttle if snap.throttle > 0 else 0.0
        if scope:
            s = self._scope(scope)
            s.status = snap.status
            s.failures = snap.failures
            s.until = now + snap.auth if snap.auth > 0 else 0.0
            s.probe_until = now + snap.probe if snap.probe > 0 else 0.0
        return self._picture(scope, now) != before

    def _picture(self, scope: str, now: float) -> tuple[object, ...]:
        s = self._scopes.get(scope) if scope else None
        auth = (s.status, s.failures, s.until > now, s.probe_until > now) if s else ()
        return (self._throttle_until > now, *auth)

    # --- decided alone (Redis did not answer) ----------------------------------------------

    def take_local_probe(self, scope: str, now: float) -> None:
        """This process probes ``scope`` itself; its other requests wait for the answer."""
        self._scope(scope).local_probe_until = now + self.policy.probe_lease

    def end_local_probe(self, scope: str) -> None:
        self._scope(scope).local_probe_until = 0.0

    def throttled_locally(self, retry_after: float | None, now: float) -> tuple[float, bool]:
        """A 429 this process could not share: its pause length and whether it began one."""
        length = self.policy.throttle_pause_for(retry_after)
        began = max(self._throttle_until, self._local_throttle_until) <= now
        self._local_throttle_until = max(self._local_throttle_until, now + length)
        return length, began

    def unauthorized_locally(self, scope: str, now: float) -> float | None:
        """A 401 this process could not share: the length of the pause it began, or None when
        the key was paused already (the request went out before the pause began)."""
        s = self._scope(scope)
        self.end_local_probe(scope)
        if max(s.until, s.local_until) > now:
            return None
        s.local_failures = max(s.local_failures, s.failures) + 1
        length = self.policy.auth_pause_for(s.local_failures)
        s.local_until = now + length
        return length

    def accepted_locally(self, scope: str) -> bool:
        """A request signed with ``scope`` was accepted; True when that ended a pause (or the
        key was not known to work)."""
        if not scope:
            return False
        s = self._scope(scope)
        changed = s.status is not AuthStatus.OK or bool(s.local_failures)
        self.end_local_probe(scope)
        s.status = AuthStatus.OK
        s.failures = s.local_failures = 0
        s.until = s.local_until = 0.0
        return changed
