"""Interval and backoff policy, and the per-job plan after each kind of poll outcome."""

from __future__ import annotations

import random

import pytest

from poller.policy import Policy, backoff_delay, next_interval, with_jitter
from poller.servicestage.models import JobSnapshot, Task
from poller.servicestage.outcomes import AuthFailed, Fetched, NotFound, Rejected, Transient
from poller.snapshot import merge_snapshot
from poller.tracking import JobState, plan_after_poll, plan_timeout

POLICY = Policy(poll_interval=2, poll_interval_max=30, backoff_initial=1, backoff_max=60,
                job_timeout=100, not_found_grace=60)  # fmt: skip


def rng() -> random.Random:
    return random.Random(42)


def test_interval_resets_on_change_and_grows_by_half_until_the_cap() -> None:
    assert next_interval(POLICY, 0, changed=False) == 2
    assert next_interval(POLICY, 2, changed=False) == 3
    assert next_interval(POLICY, 3, changed=False) == 4.5
    assert next_interval(POLICY, 25, changed=False) == 30
    assert next_interval(POLICY, 30, changed=False) == 30
    assert next_interval(POLICY, 30, changed=True) == 2


def test_jitter_stays_within_ten_percent() -> None:
    r = rng()
    values = [with_jitter(POLICY, 10, r) for _ in range(1000)]
    assert min(values) >= 9
    assert max(values) <= 11
    assert max(values) - min(values) > 1  # it does scatter


@pytest.mark.parametrize(("attempt", "ceiling"), [(1, 1), (2, 2), (3, 4), (7, 60), (50, 60)])
def test_backoff_is_full_jitter_under_a_capped_exponential(attempt: int, ceiling: float) -> None:
    r = rng()
    values = [backoff_delay(POLICY, attempt, r) for _ in range(500)]
    assert all(0 <= v <= ceiling for v in values)
    assert max(values) > ceiling * 0.8


def test_retry_after_is_honoured_even_beyond_backoff_max() -> None:
    r = rng()
    assert all(backoff_delay(POLICY, 1, r, retry_after=5) >= 5 for _ in range(100))
    assert backoff_delay(POLICY, 1, r, retry_after=300) == 300


def state(**kw: object) -> JobState:
    base: dict[str, object] = {"job_id": "J", "project_id": "P", "taken_at": 1000.0, "seq": 1}
    base.update(kw)
    return JobState(**base)  # type: ignore[arg-type]


def snapshot(status: str, *statuses: str) -> JobSnapshot:
    tasks = tuple(Task(f"T{i}", i, f"N{i}", s) for i, s in enumerate(statuses, 1))
    return JobSnapshot("J", status, "PROVISION", tasks)


def test_first_fetch_publishes_and_schedules_at_the_base_interval() -> None:
    plan = plan_after_poll(state(), Fetched(snapshot("RUNNING", "RUNNING")), now=1001,
                           policy=POLICY, rng=rng())  # fmt: skip
    assert plan.outcome == "changed"
    assert len(plan.events) == 2
    assert plan.interval == 2
    assert plan.due_at is not None
    assert 1001 + 1.8 <= plan.due_at <= 1001 + 2.2


def test_unchanged_fetch_grows_the_interval() -> None:
    current = snapshot("RUNNING", "RUNNING")
    s = state(snapshot=merge_snapshot(None, current), interval=2.0, seq=3)
    plan = plan_after_poll(s, Fetched(current), now=1010, policy=POLICY, rng=rng())
    assert plan.outcome == "unchanged"
    assert plan.events == ()
    assert plan.interval == 3


def test_terminal_fetch_retires_the_job() -> None:
    plan = plan_after_poll(state(), Fetched(snapshot("SUCCEEDED", "SUCCEEDED")), now=1001,
                           policy=POLICY, rng=rng())  # fmt: skip
    assert plan.retires
    assert plan.events[-1].as_dict()["terminal"] == "true"


def test_transient_failure_backs_off_and_counts_attempts() -> None:
    plan = plan_after_poll(state(attempts=2), Transient("HTTP 502"), now=1001, policy=POLICY,
                           rng=rng())  # fmt: skip
    assert plan.outcome == "transient"
    assert plan.events == ()
    assert plan.attempts == 3
    assert plan.due_at is not None
    assert 1001 <= plan.due_at <= 1001 + 4


def test_transient_failure_honours_retry_after() -> None:
    plan = plan_after_poll(state(), Transient("HTTP 429", status=429, retry_after=3), now=1001,
                           policy=POLICY, rng=rng())  # fmt: skip
    assert plan.due_at is not None
    assert plan.due_at >= 1004


def test_auth_failure_is_retried_not_abandoned() -> None:
    plan = plan_after_poll(state(), AuthFailed("APIGW.0301"), now=1001, policy=POLICY, rng=rng())
    assert not plan.retires
    assert plan.outcome == "auth_failed"


def test_not_found_is_retried_within_the_grace_period() -> None:
    first = plan_after_poll(state(), NotFound("404"), now=1001, policy=POLICY, rng=rng())
    assert first.outcome == "not_found"
    assert not first.retires
    assert first.not_found_since == 1001
    later = plan_after_poll(state(not_found_since=1001), NotFound("404"), now=1050,
                            policy=POLICY, rng=rng())  # fmt: skip
    assert not later.retires
    assert later.due_at is not None
    assert later.due_at <= 1001 + 60


def test_not_found_after_the_grace_period_abandons() -> None:
    plan = plan_after_poll(state(not_found_since=1001), NotFound("SVCSTG.00100404"), now=1061,
                           policy=POLICY, rng=rng())  # fmt: skip
    assert plan.retires
    fields = plan.events[0].as_dict()
    assert (fields["event"], fields["reason"]) == ("job.abandoned", "not_found")
    assert "SVCSTG.00100404" in fields["detail"]


def test_found_again_clears_the_not_found_clock() -> None:
    plan = plan_after_poll(state(not_found_since=1001), Fetched(snapshot("RUNNING")), now=1002,
                           policy=POLICY, rng=rng())  # fmt: skip
    assert plan.not_found_since is None


def test_rejected_abandons_with_the_error_code() -> None:
    plan = plan_after_poll(state(), Rejected(403, "SVCSTG.00100403: forbidden"), now=1001,
                           policy=POLICY, rng=rng())  # fmt: skip
    fields = plan.events[0].as_dict()
    assert plan.retires
    assert fields["reason"] == "rejected"
    assert fields["detail"].startswith("SVCSTG.00100403")


def test_failures_past_the_job_timeout_abandon_with_timeout() -> None:
    plan = plan_after_poll(state(), Transient("reset"), now=1100, policy=POLICY, rng=rng())
    assert plan.retires
    assert plan.events[0].as_dict()["reason"] == "timeout"


def test_changes_seen_at_timeout_are_published_before_the_abandonment() -> None:
    plan = plan_after_poll(state(seq=1), Fetched(snapshot("RUNNING", "RUNNING")), now=1100,
                           policy=POLICY, rng=rng())  # fmt: skip
    kinds = [e.as_dict()["event"] for e in plan.events]
    assert kinds == ["task.status_changed", "job.status_changed", "job.abandoned"]
    assert [e.as_dict()["seq"] for e in plan.events] == ["1", "2", "3"]


def test_terminal_status_wins_over_timeout() -> None:
    plan = plan_after_poll(state(), Fetched(snapshot("FAILED", "FAILED")), now=5000,
                           policy=POLICY, rng=rng())  # fmt: skip
    assert [e.as_dict()["event"] for e in plan.events][-1] == "job.status_changed"


def test_a_timeout_plan_uses_the_next_seq() -> None:
    assert plan_timeout(state(seq=8), 1200, POLICY).events[0].as_dict()["seq"] == "8"
