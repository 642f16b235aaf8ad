"""The Redis store against a real redis-server: intake, claims, leases, fenced commits."""

from __future__ import annotations

import json
import random

from poller.intake import Admission
from poller.limits import parse_gate
from poller.policy import Policy
from poller.servicestage.models import JobSnapshot, Task
from poller.servicestage.outcomes import Fetched, Transient
from poller.store import Store
from poller.tracking import JobState, plan_after_poll

POLICY = Policy(poll_interval=1, poll_interval_max=5)
NOW = 1_000_000.0


def snapshot(job_status: str, *task_statuses: str) -> Fetched:
    tasks = tuple(Task(f"T{i}", i, f"STEP{i}", s) for i, s in enumerate(task_statuses, 1))
    return Fetched(JobSnapshot("JOB-1", job_status, "PROVISION", tasks))


async def admit(
    store: Store, job_id: str = "JOB-1", *, force: bool = False, now: float = NOW
) -> str:
    raw = job_id.encode()
    await store.enqueue(raw)
    (delivery,) = await store.take_messages("r1", 10, 0)
    assert delivery.raw == raw
    return await store.admit("r1", delivery, Admission(job_id, "proj", force=force), now)


async def claim_one(store: Store, owner: str, now: float, lease: float = 30) -> JobState:
    claimed = (await store.claim_due(owner, now, lease, 10)).jobs
    assert len(claimed) == 1
    return claimed[0]


async def poll_and_commit(store: Store, state: JobState, fetched: Fetched, now: float) -> str:
    plan = plan_after_poll(state, fetched, now=now, policy=POLICY, rng=random.Random(1))
    return await store.commit(state, plan, now)


async def test_admitted_job_is_due_at_once_and_claimed_with_a_lease(store: Store) -> None:
    assert await admit(store) == "admitted"
    state = await claim_one(store, "r1", NOW)
    assert (state.job_id, state.project_id, state.seq, state.owner) == ("JOB-1", "proj", 1, "r1")
    assert state.token == "1"
    again = await store.claim_due("r2", NOW + 1, 30, 10)
    assert again.jobs == []
    assert again.next_due == NOW + 30  # the lease deadline


async def test_commit_publishes_to_both_streams_and_advances_seq(store: Store) -> None:
    await admit(store)
    state = await claim_one(store, "r1", NOW)
    assert await poll_and_commit(store, state, snapshot("RUNNING", "RUNNING"), NOW + 1) == "ok"
    global_events = [f for _, f in await store.read_events()]
    job_events = [f for _, f in await store.read_events("JOB-1")]
    assert global_events == job_events
    assert [e["seq"] for e in job_events] == ["1", "2"]
    view = await store.get_job("proj", "JOB-1")
    assert view is not None
    assert view.state.seq == 3
    assert view.state.token == ""


async def test_commit_replayed_after_it_was_applied_publishes_nothing(store: Store) -> None:
    await admit(store)
    state = await claim_one(store, "r1", NOW)
    plan = plan_after_poll(state, snapshot("RUNNING", "RUNNING"), now=NOW, policy=POLICY,
                           rng=random.Random(1))  # fmt: skip
    assert await store.commit(state, plan, NOW, commit_id="c-1") == "ok"
    assert await store.commit(state, plan, NOW, commit_id="c-1") == "duplicate"
    assert len(await store.read_events("JOB-1")) == 2
    assert len(await store.read_events()) == 2


async def test_lapsed_lease_fences_the_old_owner(store: Store) -> None:
    await admit(store)
    slow = await claim_one(store, "slow", NOW, lease=5)
    # The slow replica stalls past its lease; another replica takes the job over.
    fast = await claim_one(store, "fast", NOW + 6, lease=5)
    assert fast.token != slow.token
    assert await poll_and_commit(store, fast, snapshot("RUNNING", "RUNNING"), NOW + 7) == "ok"
    assert await poll_and_commit(store, slow, snapshot("RUNNING", "RUNNING"), NOW + 8) == "fenced"
    assert [f["seq"] for _, f in await store.read_events("JOB-1")] == ["1", "2"]
    assert await store.renew([("proj:JOB-1", slow.token)], NOW + 20) == [False]


async def test_commit_with_a_stale_seq_is_fenced(store: Store) -> None:
    await admit(store)
    state = await claim_one(store, "r1", NOW)
    stale = JobState(**{**{n: getattr(state, n) for n in JobState.__slots__}, "seq": 5})  # type: ignore[arg-type]
    assert await poll_and_commit(store, stale, snapshot("RUNNING"), NOW) == "fenced"
    assert await store.read_events("JOB-1") == []


async def test_renewal_keeps_the_lease_and_pushes_the_deadline(store: Store) -> None:
    await admit(store)
    state = await claim_one(store, "r1", NOW, lease=5)
    assert await store.renew([("proj:JOB-1", state.token)], NOW + 50) == [True]
    claim = await store.claim_due("r2", NOW + 10, 5, 10)
    assert claim.jobs == []
    assert claim.next_due == NOW + 50


async def test_release_makes_the_job_due_again(store: Store) -> None:
    await admit(store)
    state = await claim_one(store, "r1", NOW)
    assert await store.release(state, NOW + 1)
    again = await claim_one(store, "r2", NOW + 1)
    assert again.owner == "r2"
    assert not await store.release(state, NOW + 1)  # the old token is dead


async def test_terminal_commit_retires_and_expires_the_job_stream(store: Store) -> None:
    await admit(store)
    state = await claim_one(store, "r1", NOW)
    assert await poll_and_commit(store, state, snapshot("SUCCEEDED", "SUCCEEDED"), NOW) == "ok"
    assert await store.redis.zscore(store.keys.schedule, "proj:JOB-1") is None
    assert 0 < await store.redis.ttl(store.keys.job_events("JOB-1")) <= 3600
    view = await store.get_job("proj", "JOB-1")
    assert view is not None
    assert not view.tracking


async def test_recently_finished_job_is_not_retracked_unless_forced(store: Store) -> None:
    await admit(store)
    state = await claim_one(store, "r1", NOW)
    await poll_and_commit(store, state, snapshot("SUCCEEDED", "SUCCEEDED"), NOW)
    assert await admit(store) == "finished"
    assert await admit(store, force=True) == "admitted"
    state = await claim_one(store, "r1", NOW + 5)
    assert state.seq == 3
    assert state.snapshot is None
    assert await store.redis.ttl(store.keys.job_events("JOB-1")) == -1


async def test_enqueuing_a_tracked_job_is_a_no_op(store: Store) -> None:
    assert await admit(store) == "admitted"
    assert await admit(store) == "tracked"
    assert await store.redis.zcard(store.keys.schedule) == 1


async def test_transient_failure_commits_backoff_without_events(store: Store) -> None:
    await admit(store)
    state = await claim_one(store, "r1", NOW)
    assert await poll_and_commit(store, state, Transient("HTTP 502", status=502), NOW) == "ok"
    assert await store.read_events("JOB-1") == []
    view = await store.get_job("proj", "JOB-1")
    assert view is not None
    assert view.state.attempts == 1
    assert view.state.last_error == "HTTP 502"


async def test_dead_letter_records_raw_reason_and_time(store: Store) -> None:
    await store.enqueue(b"../x")
    (delivery,) = await store.take_messages("r1", 10, 0)
    await store.dead_letter("r1", delivery, "invalid job_id", NOW)
    (record,) = await store.redis.lrange(store.keys.dead, 0, -1)
    doc = json.loads(record)
    assert doc["raw"] == "../x"
    assert doc["reason"] == "invalid job_id"
    assert doc["at"].endswith("Z")
    assert await store.redis.llen(store.keys.inflight("r1")) == 0


async def test_messages_of_a_dead_replica_are_handed_back(store: Store) -> None:
    await store.enqueue(b"JOB-A", b"JOB-B")
    assert len(await store.take_messages("crashed", 10, 0)) == 2
    await store.heartbeat("crashed", NOW + 10)
    assert await store.recover_orphans(NOW) == 0
    assert await store.recover_orphans(NOW + 11) == 2
    assert sorted(d.raw for d in await store.take_messages("r2", 10, 0)) == [b"JOB-A", b"JOB-B"]


async def test_unacknowledged_inflight_messages_are_returned_again(store: Store) -> None:
    await store.enqueue(b"JOB-A")
    first = await store.take_messages("r1", 10, 0)
    second = await store.take_messages("r1", 10, 0)
    assert first == second
    assert [d.raw for d in first] == [b"JOB-A"]


async def test_global_rate_limit_spaces_requests(store: Store) -> None:
    first = parse_gate(await store.gate_limits("go", 100_000, 1, "", "", 1000))
    second = parse_gate(await store.gate_limits("go", 100_000, 1, "", "", 1000))
    assert (first.verdict, first.wait) == ("go", 0)
    assert second.verdict == "rate"
    assert 0 < second.wait <= 0.1


async def test_unreadable_job_state_is_quarantined_not_fatal(store: Store) -> None:
    await admit(store, "JOB-bad")
    await admit(store, "JOB-good")
    await store.redis.hset(store.keys.job("proj:JOB-bad"), "snap", "{not json")
    claim = await store.claim_due("r1", NOW, 30, 10)
    assert [s.job_id for s in claim.jobs] == ["JOB-good"]
    assert [m for m, _ in claim.quarantined] == ["proj:JOB-bad"]
    assert await store.redis.zscore(store.keys.schedule, "proj:JOB-bad") is None
    (record,) = await store.redis.lrange(store.keys.dead, 0, -1)
    assert json.loads(record)["raw"] == "proj:JOB-bad"
    assert "unreadable job state" in json.loads(record)["reason"]
    assert 0 < await store.redis.ttl(store.keys.job("proj:JOB-bad")) <= 3600  # kept a while


async def test_dead_letter_retried_after_a_lost_reply_records_once(store: Store) -> None:
    await store.enqueue(b"a/b")
    (delivery,) = await store.take_messages("r1", 10, 0)
    await store.dead_letter("r1", delivery, "invalid job_id", NOW)
    await store.dead_letter("r1", delivery, "invalid job_id", NOW)  # the same call, replayed
    assert await store.redis.llen(store.keys.dead) == 1


async def test_inflight_list_of_a_replica_that_never_registered_is_recovered(store: Store) -> None:
    await store.enqueue(b"JOB-A")
    await store.take_messages("ghost", 10, 0)  # took a message, died before any heartbeat
    await store.heartbeat("alive", NOW + 100)
    await store.take_messages("alive", 10, 0)  # nothing left for it; its list stays empty
    assert await store.recover_unregistered() == 1
    assert [d.raw for d in await store.take_messages("alive", 10, 0)] == [b"JOB-A"]


async def test_a_garbled_epoch_does_not_stop_claims(store: Store) -> None:
    await admit(store, "JOB-odd")
    await store.redis.hset(store.keys.job("proj:JOB-odd"), "epoch", "not-a-number")
    (state,) = await claim_one_list(store)
    assert state.job_id == "JOB-odd"
    assert state.token == "1"


async def claim_one_list(store: Store) -> list[JobState]:
    return (await store.claim_due("r1", NOW, 30, 10)).jobs
