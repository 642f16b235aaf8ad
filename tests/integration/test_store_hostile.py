"""The store's scripts against keys and replies nobody sends on purpose (real redis-server).

Each test pins one defect of the first release: a script that failed half-way (Lua does not
roll back) and was retried published its events twice; a lost claim reply stranded a batch;
``seq`` restarted; a job ID was tracked under two projects; a quarantined job never ended.
"""

from __future__ import annotations

import random

from poller.daemon import durability_warnings
from poller.intake import Admission
from poller.localredis import LocalRedis
from poller.store import Store, connect
from poller.tracking import plan_after_poll
from tests.integration.test_store import NOW, POLICY, admit, claim_one, snapshot


async def _events(store: Store, job_id: str | None = None) -> list[dict[str, str]]:
    return [fields for _, fields in await store.read_events(job_id)]


async def test_a_commit_meeting_a_key_of_another_type_writes_nothing(store: Store) -> None:
    await admit(store)
    state = await claim_one(store, "r1", NOW)
    await store.redis.set(store.keys.job_events("JOB-1"), "not a stream")
    plan = plan_after_poll(state, snapshot("RUNNING", "RUNNING"), now=NOW, policy=POLICY,
                           rng=random.Random(1))  # fmt: skip
    for _ in range(3):  # what a retrying caller would do
        assert await store.commit(state, plan, NOW) == "corrupt"
    assert await _events(store) == []  # no XADD before the failing check, so no duplicates


async def test_a_retried_claim_returns_the_same_leases(store: Store) -> None:
    for job in ("JOB-1", "JOB-2"):
        await admit(store, job)
    first = await store.claim_due("r1", NOW, 30, 10, claim_id="claim-1")
    again = await store.claim_due("r1", NOW, 30, 10, claim_id="claim-1")  # the lost reply
    assert sorted((s.job_id, s.token) for s in first.jobs) == [("JOB-1", "1"), ("JOB-2", "1")]
    assert sorted((s.job_id, s.token) for s in again.jobs) == sorted(
        (s.job_id, s.token) for s in first.jobs
    )


async def test_a_new_claim_id_claims_afresh(store: Store) -> None:
    await admit(store)
    await store.claim_due("r1", NOW, 30, 10, claim_id="claim-1")
    later = await store.claim_due("r1", NOW, 30, 10, claim_id="claim-2")
    assert later.jobs == []  # leased already: nothing is due


async def test_seq_continues_when_a_finished_job_is_tracked_again_after_its_state_expired(
    store: Store,
) -> None:
    await admit(store)
    state = await claim_one(store, "r1", NOW)
    plan = plan_after_poll(state, snapshot("SUCCEEDED", "SUCCEEDED"), now=NOW, policy=POLICY,
                           rng=random.Random(1))  # fmt: skip
    assert await store.commit(state, plan, NOW) == "ok"  # seq 1 (task) and 2 (job)
    await store.redis.delete(store.keys.job("proj:JOB-1"))  # what the retention expiry does
    await store.redis.delete(store.keys.job_events("JOB-1"))
    assert await admit(store, now=NOW + 10) == "admitted"
    again = await claim_one(store, "r1", NOW + 10)
    assert again.seq == 3


async def test_the_job_id_record_outlives_the_job_by_seq_memory(store: Store) -> None:
    store.seq_memory = 1234
    await admit(store)
    state = await claim_one(store, "r1", NOW)
    plan = plan_after_poll(state, snapshot("SUCCEEDED"), now=NOW, policy=POLICY,
                           rng=random.Random(1))  # fmt: skip
    await store.commit(state, plan, NOW)
    ttl = await store.redis.ttl(store.keys.jobref("JOB-1"))
    assert 1200 < ttl <= 1234


async def test_a_job_id_tracked_under_another_project_is_a_conflict(store: Store) -> None:
    await admit(store)  # JOB-1 under "proj"
    raw = b'{"job_id":"JOB-1","project_id":"other"}'
    await store.enqueue(raw)
    (delivery,) = await store.take_messages("r1", 10, 0)
    assert delivery.raw == raw
    result = await store.admit("r1", delivery, Admission("JOB-1", "other"), NOW)
    assert result == "conflict"
    # left in flight for the caller to dead-letter
    assert delivery.entry in await store.redis.lrange(store.keys.inflight("r1"), 0, -1)


async def test_a_job_id_finished_under_one_project_may_be_tracked_under_another(
    store: Store,
) -> None:
    await admit(store)
    state = await claim_one(store, "r1", NOW)
    plan = plan_after_poll(state, snapshot("SUCCEEDED"), now=NOW, policy=POLICY,
                           rng=random.Random(1))  # fmt: skip
    await store.commit(state, plan, NOW)
    raw = b'{"job_id":"JOB-1","project_id":"other"}'
    await store.enqueue(raw)
    (delivery,) = await store.take_messages("r1", 10, 0)
    assert await store.admit("r1", delivery, Admission("JOB-1", "other"), NOW) == "admitted"
    moved = await claim_one(store, "r1", NOW)
    assert (moved.project_id, moved.seq) == ("other", 2)  # the per-job stream's seq goes on


async def test_an_unreadable_job_gets_a_final_corrupt_state_event_after_its_last_one(
    store: Store,
) -> None:
    await admit(store)
    state = await claim_one(store, "r1", NOW)
    plan = plan_after_poll(state, snapshot("RUNNING", "RUNNING"), now=NOW, policy=POLICY,
                           rng=random.Random(1))  # fmt: skip
    await store.commit(state, plan, NOW)  # seq 1, 2
    await store.redis.hset(store.keys.job("proj:JOB-1"), "seq", "garbled")
    claim = await store.claim_due("r1", NOW + 100, 30, 10)
    assert claim.jobs == []
    assert [m for m, _ in claim.quarantined] == ["proj:JOB-1"]
    events = await _events(store, "JOB-1")
    final = events[-1]
    assert (final["event"], final["reason"], final["seq"]) == (
        "job.abandoned",
        "corrupt_state",
        "3",
    )
    assert final["to_status"] == "RUNNING"  # the last status seen, from the stored snapshot
    assert await store.redis.ttl(store.keys.job_events("JOB-1")) > 0  # it expires like others
    assert await store.redis.zscore(store.keys.schedule, "proj:JOB-1") is None


async def test_a_job_key_of_another_type_is_retired_without_failing_the_claim(
    store: Store,
) -> None:
    await admit(store, "JOB-1")
    await admit(store, "JOB-2")
    await store.redis.delete(store.keys.job("proj:JOB-1"))
    await store.redis.set(store.keys.job("proj:JOB-1"), "someone else's string")
    claim = await store.claim_due("r1", NOW, 30, 10)
    assert [s.job_id for s in claim.jobs] == ["JOB-2"]
    assert [m for m, _ in claim.quarantined] == ["proj:JOB-1"]
    (final,) = await _events(store, "JOB-1")
    assert (final["event"], final["reason"]) == ("job.abandoned", "corrupt_state")
    assert await store.redis.get(store.keys.job("proj:JOB-1")) == b"someone else's string"


async def test_a_full_in_flight_list_takes_no_more_messages(store: Store) -> None:
    await store.enqueue(*[f"JOB-{i}".encode() for i in range(30)])
    first = await store.take_messages("r1", 10, 0)
    again = await store.take_messages("r1", 10, 0)  # nothing admitted meanwhile
    assert first == again
    assert await store.redis.llen(store.keys.inflight("r1")) == 10
    assert await store.redis.llen(store.keys.intake) == 20


async def test_release_after_a_crash_counts_it_and_a_commit_clears_the_count(
    store: Store,
) -> None:
    await admit(store)
    state = await claim_one(store, "r1", NOW)
    assert await store.release(state, NOW, crash="ValueError: boom")
    again = await claim_one(store, "r1", NOW + 1)
    assert (again.crashes, again.last_error) == (1, "ValueError: boom")
    plan = plan_after_poll(again, snapshot("RUNNING"), now=NOW + 1, policy=POLICY,
                           rng=random.Random(1))  # fmt: skip
    assert await store.commit(again, plan, NOW + 1) == "ok"
    third = await claim_one(store, "r1", NOW + 100)
    assert third.crashes == 0


async def test_start_up_warns_about_an_evicting_policy_and_missing_persistence() -> None:
    with LocalRedis(persistent=False) as server:
        redis = connect(server.url)
        try:
            await redis.config_set("maxmemory-policy", "allkeys-lru")
            warnings = await durability_warnings(redis)
        finally:
            await redis.aclose()
    assert len(warnings) == 2
    assert "maxmemory-policy is allkeys-lru" in warnings[0]
    assert "persistence is off" in warnings[1]


async def test_start_up_is_quiet_on_a_durable_redis(own_redis: LocalRedis) -> None:
    # appendonly yes, noeviction
    redis = connect(own_redis.url)
    try:
        assert await durability_warnings(redis) == []
    finally:
        await redis.aclose()


async def test_an_operator_cancel_is_one_step_that_fences_the_lease_holder(store: Store) -> None:
    await admit(store)
    state = await claim_one(store, "r1", NOW)  # a worker is polling it right now
    assert await store.cancel("proj", "JOB-1", "alice", NOW + 1)
    plan = plan_after_poll(state, snapshot("RUNNING", "RUNNING"), now=NOW + 2, policy=POLICY,
                           rng=random.Random(1))  # fmt: skip
    assert await store.commit(state, plan, NOW + 2) == "gone"  # the worker publishes nothing
    (only,) = await _events(store, "JOB-1")
    assert (only["event"], only["reason"], only["seq"]) == (
        "job.abandoned",
        "cancelled_by_operator",
        "1",
    )
    assert only["detail"] == "cancelled by alice"
    view = await store.get_job("proj", "JOB-1")
    assert view is not None
    assert (view.tracking, view.outcome, view.state.seq) == (False, "cancelled", 2)
    assert not await store.cancel("proj", "JOB-1", "alice", NOW + 3)  # not tracked any more
