"""Several shards on one Redis: admission routed by job ID, idempotent across the slot gap,
claims and commits per shard, the recorded layout, WAIT after commits."""

from __future__ import annotations

import random
from collections.abc import AsyncIterator

import anyio
import pytest

from poller.config import ConfigError
from poller.consumer import JobEvent
from poller.intake import Admission
from poller.localredis import LocalRedis
from poller.policy import Policy
from poller.servicestage.models import JobSnapshot, Task
from poller.servicestage.outcomes import Fetched
from poller.sim import SimHandle
from poller.store import Keys, Store, connect
from poller.store.schema import shard_of
from poller.tracking import plan_after_poll
from tests.integration.harness import (
    PROJECT,
    assert_consistent,
    fast_settings,
    quick_job,
    running_worker,
)

NOW = 1_700_000_000.0
POLICY = Policy()


def ids_in_every_shard(shards: int, per_shard: int = 2) -> list[str]:
    """Job IDs, ``per_shard`` of them landing in each shard."""
    out: dict[int, list[str]] = {k: [] for k in range(shards)}
    n = 0
    while any(len(v) < per_shard for v in out.values()):
        job_id = f"JOB-{n}"
        if len(out[shard_of(job_id, shards)]) < per_shard:
            out[shard_of(job_id, shards)].append(job_id)
        n += 1
    return [job_id for v in out.values() for job_id in v]


@pytest.fixture
async def sharded(redis_server: LocalRedis, prefix: str) -> AsyncIterator[Store]:
    s = Store(connect(redis_server.url), Keys("{" + prefix + "}", 3), retention=3600)
    yield s
    await s.redis.aclose()


async def take_and_admit(store: Store, replica: str = "r1") -> list[str]:
    taken = await store.take_messages(replica, 100, 0)
    parsed = [(d, Admission(d.raw.decode(), "proj")) for d in taken]
    results = await store.admit_batch(replica, parsed, NOW)
    return [str(r) for r in results]


async def test_admission_puts_each_job_in_its_shard_and_out_of_flight(sharded: Store) -> None:
    ids = ids_in_every_shard(3)
    await sharded.enqueue(*ids)
    assert await take_and_admit(sharded) == ["admitted"] * len(ids)
    for k, shard in enumerate(sharded.keys.all_shards):
        members = {m.decode() for m in await sharded.redis.zrange(shard.schedule, 0, -1)}
        assert members == {f"proj:{j}" for j in ids if shard_of(j, 3) == k}
    assert await sharded.redis.llen(sharded.keys.inflight("r1")) == 0
    assert (await sharded.counts(NOW))["tracked"] == len(ids)


async def test_a_claim_leases_due_jobs_of_every_shard(sharded: Store) -> None:
    ids = ids_in_every_shard(3, per_shard=3)
    await sharded.enqueue(*ids)
    await take_and_admit(sharded)
    claim = await sharded.claim_due("r1", NOW + 1, 30, 100)
    assert sorted(s.job_id for s in claim.jobs) == sorted(ids)
    small = await sharded.claim_due("r1", NOW + 100, 30, 2)  # leases lapsed: due again
    assert len(small.jobs) == 2  # a limit smaller than the shard count is kept
    assert claim.next_due is not None


async def test_an_admission_sent_again_after_a_crash_admits_once(sharded: Store) -> None:
    """The shard's step ran, the replica died before taking the message out of flight: the
    message goes to another replica with its ticket, and a forced re-track happens once."""
    job_id = "JOB-forced"
    raw = b'{"job_id": "JOB-forced", "force": true}'
    await sharded.enqueue(raw)
    (delivery,) = await sharded.take_messages("dies", 10, 0)
    admission = Admission(job_id, "proj", force=True)
    # only the shard's half of admit_batch, as if the replica crashed right after it
    (reply,) = await sharded._run_scripts([sharded._admit_call("dies", delivery, admission, NOW)])
    assert reply == b"admitted"
    state = (await sharded.claim_due("r1", NOW, 30, 10)).jobs[0]
    done = Fetched(
        JobSnapshot(job_id, "SUCCEEDED", "PROVISION", (Task("T1", 1, "A", "SUCCEEDED"),))
    )
    plan = plan_after_poll(state, done, now=NOW, policy=POLICY, rng=random.Random(1))
    assert await sharded.commit(state, plan, NOW) == "ok"
    await sharded.heartbeat("dies", NOW + 1)
    assert await sharded.recover_orphans(NOW + 2) == 1
    (again,) = await sharded.take_messages("r2", 10, 0)
    assert again.ticket == delivery.ticket
    assert again.raw == raw
    assert await sharded.admit("r2", again, admission, NOW + 3) == "tracked"
    assert await sharded.redis.llen(sharded.keys.inflight("r2")) == 0
    view = await sharded.get_job("proj", job_id)
    assert view is not None
    assert not view.tracking  # finished, not tracked a second time
    events = await sharded.read_events(job_id)
    assert [f["seq"] for _, f in events] == ["1", "2"]


async def test_a_new_delivery_of_the_same_message_gets_a_new_ticket(sharded: Store) -> None:
    await sharded.enqueue(b"JOB-1", b"JOB-1")
    first, second = await sharded.take_messages("r1", 10, 0)
    assert first.raw == second.raw
    assert first.ticket != second.ticket


async def test_the_shard_count_is_recorded_and_another_is_refused(
    redis_server: LocalRedis, prefix: str, live_sim: SimHandle
) -> None:
    one = Store(connect(redis_server.url), Keys("{" + prefix + "}"))
    assert await one.check_layout() == 1
    await one.redis.aclose()
    settings = fast_settings(redis_server.url, "{" + prefix + "}", live_sim.url, shards=3)
    with pytest.raises(ExceptionGroup) as raised:  # from the worker's task group
        async with running_worker(settings):
            await anyio.sleep_forever()
    assert raised.group_contains(ConfigError, match=r"^POLLER_SHARDS: 3, but .* for 1 shard")


async def test_a_worker_over_three_shards_publishes_every_change_once(
    redis_server: LocalRedis, prefix: str, live_sim: SimHandle
) -> None:
    ids = [await live_sim.create_job(quick_job(0.3)) for _ in range(24)]
    assert {shard_of(j, 3) for j in ids} == {0, 1, 2}
    settings = fast_settings(redis_server.url, "{" + prefix + "}", live_sim.url, shards=3)
    async with running_worker(settings) as worker:
        store = worker.store
        await store.enqueue(*ids)
        finals: dict[str, list[JobEvent]] = {}
        with anyio.fail_after(60):
            while len(finals) < len(ids):
                for job_id in ids:
                    if job_id in finals:
                        continue
                    reply = await store.redis.xread({store.keys.job_events(job_id): "0-0"},
                                                    block=50)  # fmt: skip
                    events = [JobEvent.from_entry(i, f) for _, entries in reply for i, f in entries]
                    if events and events[-1].is_final:
                        finals[job_id] = events
        per_shard = [
            {JobEvent.from_entry(i, f).job_id for i, f in await store.redis.xrange(s.events)}
            for s in store.keys.all_shards
        ]
    for events in finals.values():
        assert_consistent(events)
        assert events[-1].to_status == "SUCCEEDED"
        assert events[0].project_id == PROJECT
    for k, jobs in enumerate(per_shard):  # each shard's global stream holds its jobs only
        assert jobs == {j for j in ids if shard_of(j, 3) == k}


async def test_wait_short_of_replicas_is_reported_not_fatal(store: Store) -> None:
    """A lone server has no replica: WAIT 1 comes back with 0 after its timeout, the commit
    stands and the shortfall is reported."""
    short: list[tuple[int, int]] = []
    waiting = Store(store.redis, store.keys, wait_replicas=1, wait_timeout=0.05)
    waiting.on_wait_short = lambda wanted, got: short.append((wanted, got))
    await waiting.enqueue(b"JOB-1")
    (delivery,) = await waiting.take_messages("r1", 10, 0)
    assert await waiting.admit("r1", delivery, Admission("JOB-1", "proj"), NOW) == "admitted"
    state = (await waiting.claim_due("r1", NOW, 30, 10)).jobs[0]
    done = Fetched(JobSnapshot("JOB-1", "RUNNING", "PROVISION", ()))
    plan = plan_after_poll(state, done, now=NOW, policy=POLICY, rng=random.Random(1))
    assert await waiting.commit(state, plan, NOW) == "ok"
    assert short == [(1, 0)]
    assert [f["event"] for _, f in await waiting.read_events("JOB-1")] == ["job.status_changed"]


async def test_keys_laid_out_before_the_count_was_recorded_are_one_shards(
    redis_server: LocalRedis, prefix: str
) -> None:
    """An upgrade that also asks for shards must not strand the jobs tracked already."""
    tagged = "{" + prefix + "}"
    old = Store(connect(redis_server.url), Keys(tagged))
    await old.enqueue(b"JOB-1")
    (delivery,) = await old.take_messages("r1", 10, 0)
    assert await old.admit("r1", delivery, Admission("JOB-1", "proj"), NOW) == "admitted"
    await old.redis.delete(old.keys.layout)  # as a version without the record left it
    new = Store(old.redis, Keys(tagged, 4))
    assert await new.check_layout() == 1
    assert await Store(old.redis, Keys("{" + prefix + "-fresh}", 4)).check_layout() == 4
    await old.redis.aclose()


async def test_a_shard_that_fails_a_claim_leaves_the_others_leases_standing(
    sharded: Store,
) -> None:
    ids = ids_in_every_shard(3, per_shard=2)
    await sharded.enqueue(*ids)
    await take_and_admit(sharded)
    broken = sharded.keys.shard(2)
    members = await sharded.redis.zrange(broken.schedule, 0, -1)
    await sharded.redis.delete(broken.schedule)
    await sharded.redis.set(broken.schedule, "not a schedule")
    claim = await sharded.claim_due("r1", NOW + 1, 30, 100)
    assert len(claim.errors) == 1
    assert "WRONGTYPE" in str(claim.errors[0])
    assert sorted(s.job_id for s in claim.jobs) == sorted(
        j for j in ids if shard_of(j, 3) != 2
    )  # leased and handed out, not left to lapse
    assert members  # the broken shard had jobs: they wait for it to be repaired


async def test_a_claim_smaller_than_the_shard_count_still_sees_every_due_job(
    redis_server: LocalRedis, prefix: str
) -> None:
    store = Store(connect(redis_server.url), Keys("{" + prefix + "}", 8))
    ids = ids_in_every_shard(8, per_shard=1)
    await store.enqueue(*ids)
    await take_and_admit(store)
    claim = await store.claim_due("r1", NOW + 1, 30, 1)
    assert len(claim.jobs) == 1
    assert claim.next_due is not None
    assert claim.next_due <= NOW + 1  # the shards it skipped have jobs due now
    await store.redis.aclose()


async def test_quarantining_a_key_of_another_type_twice_publishes_once(sharded: Store) -> None:
    ids = ids_in_every_shard(3, per_shard=1)
    job_id = ids[0]
    await sharded.enqueue(job_id)
    await take_and_admit(sharded)
    key = sharded.keys.job(f"proj:{job_id}")
    await sharded.redis.delete(key)
    await sharded.redis.set(key, "someone else's string")
    claim = await sharded.claim_due("r1", NOW + 1, 30, 10)  # quarantines it
    assert [m for m, _ in claim.quarantined] == [f"proj:{job_id}"]
    # the same abandon sent again (a client retry after a lost reply) changes nothing
    assert not await sharded.quarantine(f"proj:{job_id}", "", "unreadable", NOW + 2)
    events = await sharded.read_events(job_id)
    assert [(f["event"], f["seq"]) for _, f in events] == [("job.abandoned", "1")]
    assert await sharded.redis.llen(sharded.keys.dead) == 1


async def test_a_delivery_admitted_before_is_not_a_conflict_when_retried(sharded: Store) -> None:
    await sharded.enqueue(b"JOB-1")
    (delivery,) = await sharded.take_messages("r1", 10, 0)
    assert await sharded.admit("r1", delivery, Admission("JOB-1", "proj"), NOW) == "admitted"
    assert await sharded.cancel("proj", "JOB-1", "test", NOW)
    await sharded.enqueue(b'{"job_id": "JOB-1", "project_id": "other"}')
    (other,) = await sharded.take_messages("r1", 10, 0)
    assert await sharded.admit("r1", other, Admission("JOB-1", "other"), NOW) == "admitted"
    # the first delivery, retried as after a crash before it left flight: not a conflict
    assert await sharded.admit("r1", delivery, Admission("JOB-1", "proj"), NOW) == "tracked"
