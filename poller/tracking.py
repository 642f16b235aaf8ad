"""Pure decisions about one tracked job: what a poll's outcome means for events and schedule.

``plan_after_poll`` is the whole per-job state machine.  It takes the job's state as claimed
from Redis, the outcome of the poll, the time and an RNG, and returns a :class:`Plan` that the
store commits atomically.  No I/O, no clock.
"""

from __future__ import annotations

import dataclasses
import random
from dataclasses import dataclass, field
from enum import StrEnum

from poller.policy import Policy, backoff_delay, next_interval, with_jitter
from poller.servicestage.outcomes import (
    AuthFailed,
    Fetched,
    NotFound,
    PollOutcome,
    Rejected,
    Transient,
)
from poller.snapshot import (
    AbandonReason,
    Event,
    JobIdentity,
    StoredSnapshot,
    abandoned_event,
    diff_snapshots,
    format_timestamp,
    merge_snapshot,
)
from poller.statuses import is_terminal


class Outcome(StrEnum):
    """What one poll came to (``Plan.outcome``; also the ``outcome`` label of the metrics)."""

    CHANGED = "changed"
    UNCHANGED = "unchanged"
    TERMINAL = "terminal"
    TRANSIENT = "transient"
    AUTH_FAILED = "auth_failed"
    NOT_FOUND = "not_found"
    REJECTED = "rejected"
    TIMEOUT = "timeout"
    CANCELLED = "cancelled"

    @property
    def failed(self) -> bool:
        """The poll got no snapshot and will be retried."""
        return self in (Outcome.TRANSIENT, Outcome.AUTH_FAILED, Outcome.NOT_FOUND)


@dataclass(frozen=True, slots=True)
class JobState:
    """A tracked job as stored in its Redis hash (see ``poller.store.schema``)."""

    job_id: str
    project_id: str
    instance_id: str = ""
    meta: str = ""
    snapshot: StoredSnapshot | None = None
    interval: float = 0.0
    attempts: int = 0
    not_found_since: float | None = None
    taken_at: float = 0.0
    seq: int = 1
    token: str = ""
    owner: str = ""
    lease_until: float | None = None
    finished_at: float | None = None
    last_error: str = ""
    last_poll_at: float | None = None
    due_at: float | None = None
    crashes: int = 0  # polls in a row that ended in an error instead of an outcome

    @property
    def identity(self) -> JobIdentity:
        return JobIdentity(job_id=self.job_id, project_id=self.project_id, meta=self.meta)


@dataclass(frozen=True, slots=True)
class Plan:
    """What to commit after a poll: events, the new state, and when to poll next.

    ``due_at`` is ``None`` when the job is finished (terminal or abandoned) and must retire.
    """

    outcome: Outcome
    events: tuple[Event, ...] = ()
    snapshot: StoredSnapshot | None = None
    interval: float = 0.0
    attempts: int = 0
    not_found_since: float | None = None
    due_at: float | None = None
    last_error: str = ""
    retry_after: float | None = field(default=None)
    request_id: str = ""

    @property
    def retires(self) -> bool:
        return self.due_at is None


def _abandon(
    state: JobState, now: float, reason: AbandonReason, detail: str, outcome: Outcome
) -> Plan:
    event = abandoned_event(
        state.snapshot,
        identity=state.identity,
        observed_at=format_timestamp(now),
        seq=state.seq,
        reason=reason,
        detail=detail,
    )
    return Plan(
        outcome=outcome,
        events=(event,),
        snapshot=state.snapshot,
        interval=state.interval,
        attempts=state.attempts,
        not_found_since=state.not_found_since,
        due_at=None,
        last_error=f"{reason}: {detail}",
    )


def timed_out(state: JobState, now: float, policy: Policy) -> bool:
    """True once ``job_timeout`` has passed since the job was first taken."""
    return now - state.taken_at >= policy.job_timeout


def plan_timeout(state: JobState, now: float, policy: Policy) -> Plan:
    """Abandon a job whose ``job_timeout`` has run out, without polling it again."""
    return _abandon(
        state,
        now,
        AbandonReason.TIMEOUT,
        f"job_timeout of {policy.job_timeout:g}s exceeded",
        Outcome.TIMEOUT,
    )


def plan_after_poll(
    state: JobState, outcome: PollOutcome, *, now: float, policy: Policy, rng: random.Random
) -> Plan:
    """Decide events and next schedule for ``state`` after a poll that ended in ``outcome``."""
    if isinstance(outcome, Fetched):
        return _plan_fetched(state, outcome, now, policy, rng)
    if timed_out(state, now, policy):
        return plan_timeout(state, now, policy)
    if isinstance(outcome, Rejected):
        plan = _abandon(state, now, AbandonReason.REJECTED, outcome.detail, Outcome.REJECTED)
        return dataclasses.replace(plan, request_id=outcome.request_id)
    if isinstance(outcome, NotFound):
        since = state.not_found_since if state.not_found_since is not None else now
        if now - since >= policy.not_found_grace:
            plan = _abandon(state, now, AbandonReason.NOT_FOUND, outcome.detail, Outcome.NOT_FOUND)
            return dataclasses.replace(plan, request_id=outcome.request_id)
        attempts = state.attempts + 1
        delay = max(
            backoff_delay(policy, attempts, rng), policy.poll_interval * rng.uniform(0.5, 1)
        )
        due = min(now + delay, since + policy.not_found_grace)
        return Plan(
            outcome=Outcome.NOT_FOUND,
            snapshot=state.snapshot,
            interval=state.interval,
            attempts=attempts,
            not_found_since=since,
            due_at=max(due, now),
            last_error=f"not_found: {outcome.detail}",
            request_id=outcome.request_id,
        )
    retry_after = outcome.retry_after if isinstance(outcome, Transient) else None
    detail = outcome.reason if isinstance(outcome, Transient) else f"unauthorized: {outcome.detail}"
    attempts = state.attempts + 1
    kind = Outcome.TRANSIENT if isinstance(outcome, Transient) else Outcome.AUTH_FAILED
    assert isinstance(outcome, Transient | AuthFailed)
    return Plan(
        outcome=kind,
        snapshot=state.snapshot,
        interval=state.interval,
        attempts=attempts,
        not_found_since=state.not_found_since,
        due_at=now + backoff_delay(policy, attempts, rng, retry_after=retry_after),
        last_error=detail,
        retry_after=retry_after,
        request_id=outcome.request_id,
    )


def _plan_fetched(
    state: JobState, outcome: Fetched, now: float, policy: Policy, rng: random.Random
) -> Plan:
    current = outcome.snapshot
    events = diff_snapshots(
        state.snapshot,
        current,
        identity=state.identity,
        observed_at=format_timestamp(now),
        first_seq=state.seq,
    )
    stored = merge_snapshot(state.snapshot, current)
    changed = bool(events)
    if is_terminal(current.status):
        return Plan(outcome=Outcome.TERMINAL, events=tuple(events), snapshot=stored, due_at=None)
    if timed_out(state, now, policy):
        bumped = dataclasses.replace(state, snapshot=stored, seq=state.seq + len(events))
        final = plan_timeout(bumped, now, policy)
        return Plan(
            outcome=Outcome.TIMEOUT,
            events=(*events, *final.events),
            snapshot=stored,
            due_at=None,
            last_error=final.last_error,
        )
    interval = next_interval(policy, state.interval, changed=changed)
    return Plan(
        outcome=Outcome.CHANGED if changed else Outcome.UNCHANGED,
        events=tuple(events),
        snapshot=stored,
        interval=interval,
        attempts=0,
        not_found_since=None,
        due_at=now + with_jitter(policy, interval, rng),
    )
