"""Daemons on real local Redis topologies: a 3-primary + 3-replica cluster with three shards,
and a primary/replica pair behind three sentinels; failovers mid-run lose and repeat nothing."""

from __future__ import annotations

import random
import signal
import statistics
import uuid
from collections.abc import Iterator
from contextlib import AsyncExitStack
from pathlib import Path

import anyio
import pytest

from poller.consumer import JobEvent
from poller.daemon import durability_warnings
from poller.intake import parse_message
from poller.localredis import LocalCluster, LocalSentinel
from poller.policy import Policy
from poller.servicestage.models import JobSnapshot
from poller.servicestage.outcomes import Fetched
from poller.sim import generate
from poller.store import Keys, Store, connect
from poller.store.schema import hash_tag, tag_slot
from poller.tracking import plan_after_poll
from tests.integration.harness import (
    PROJECT,
    all_final,
    assert_consistent,
    by_job,
    daemon,
    daemon_env,
    events_until,
    eventually,
)
from tests.integration.test_resilience import expected_end, final_of, sim_with
from tests.integration.test_shards import NOW, ids_in_every_shard

pytestmark = pytest.mark.slow


@pytest.fixture
def cluster() -> Iterator[LocalCluster]:
    with LocalCluster(primaries=3, replicas_per_primary=1) as topology:
        yield topology


@pytest.fixture
def sentinel() -> Iterator[LocalSentinel]:
    with LocalSentinel() as topology:
        yield topology


async def _stop(procs: list[anyio.abc.Process]) -> None:
    for proc in procs:
        proc.send_signal(signal.SIGTERM)
    with anyio.fail_after(30):
        for proc in procs:
            assert await proc.wait() == 0


async def _per_job(store: Store, ids: list[str]) -> dict[str, list[JobEvent]]:
    return {
        job_id: [
            JobEvent.from_entry(i, f)
            for i, f in await store.redis.xrange(store.keys.job_events(job_id))
        ]
        for job_id in ids
    }


def _finished(events: list[JobEvent]) -> int:
    return sum(1 for e in events if e.is_final)


async def test_three_daemons_on_a_cluster_spread_shards_and_ride_out_a_failover(
    cluster: LocalCluster, tmp_path: Path
) -> None:
    prefix = "{" + f"c-{uuid.uuid4().hex[:8]}" + "}"
    keys = Keys(prefix, 3)
    shard_slots = [tag_slot(hash_tag(s.prefix) or "") for s in keys.all_shards]
    owners = {cluster.primary_of_slot(slot).port for slot in shard_slots}
    assert len(owners) == 3  # one shard on each primary
    scenario = generate(210, seed=311, duration=8.0, project_id=PROJECT)
    ids = [s.job_id for s in scenario.jobs]
    async with sim_with(scenario.jobs) as sim, AsyncExitStack() as stack:
        env = daemon_env(cluster.url, prefix, sim.url, POLLER_SHARDS="3",
                         POLLER_REDIS_WAIT_REPLICAS="1", POLLER_NOT_FOUND_GRACE="10",
                         POLLER_LEASE_SECONDS="3")  # fmt: skip
        store = Store(connect(cluster.url), keys)
        stack.push_async_callback(store.redis.aclose)
        procs = [
            await stack.enter_async_context(daemon(env, tmp_path / f"d{n}.log")) for n in range(3)
        ]
        await store.enqueue(*ids)

        async def all_admitted() -> bool:
            counts = await store.counts(await store.server_time())
            return counts["queue"] == 0 and counts["tracked"] + counts["dead"] >= len(ids) - 5

        await eventually(all_admitted, within=60)
        cluster.reset_stats()
        await events_until(store, lambda ev: _finished(ev) >= len(ids) // 3, within=120)
        polling = cluster.command_counts()  # primaries' commands while jobs are polled
        victim = cluster.primary_of_slot(shard_slots[1])
        promoted = cluster.failover(cluster.replica_of(victim).port)
        events = await events_until(store, all_final(ids), within=180)
        await _stop(procs)
        per_job = await _per_job(store, ids)
    assert promoted.role() == "primary"
    grouped = by_job(events)
    specs = {s.job_id: s for s in scenario.jobs}
    for job_id in ids:
        assert_consistent(per_job[job_id])
        assert final_of(per_job[job_id]) == expected_end(specs[job_id])
        assert [dict(e.fields) for e in per_job[job_id]] == [
            dict(e.fields) for e in grouped[job_id]
        ]
    mean = statistics.fmean(polling.values())
    assert len(polling) == 3
    assert all(abs(n - mean) <= 0.3 * mean for n in polling.values()), polling


async def test_a_daemon_behind_sentinel_follows_a_failover(
    sentinel: LocalSentinel, tmp_path: Path
) -> None:
    prefix = f"s-{uuid.uuid4().hex[:8]}"
    scenario = generate(60, seed=17, duration=6.0, project_id=PROJECT)
    ids = [s.job_id for s in scenario.jobs]
    first_primary = sentinel.primary_port()
    async with sim_with(scenario.jobs) as sim, AsyncExitStack() as stack:
        env = daemon_env(sentinel.url, prefix, sim.url, POLLER_REDIS_WAIT_REPLICAS="1",
                         POLLER_NOT_FOUND_GRACE="10", POLLER_LEASE_SECONDS="3")  # fmt: skip
        store = Store(connect(sentinel.url), Keys(prefix))
        stack.push_async_callback(store.redis.aclose)
        procs = [
            await stack.enter_async_context(daemon(env, tmp_path / f"d{n}.log")) for n in range(2)
        ]
        await store.enqueue(*ids)
        await events_until(store, lambda ev: _finished(ev) >= len(ids) // 4, within=120)
        assert sentinel.failover() != first_primary
        await events_until(store, all_final(ids), within=180)
        await _stop(procs)
        per_job = await _per_job(store, ids)
    specs = {s.job_id: s for s in scenario.jobs}
    for job_id in ids:
        assert_consistent(per_job[job_id])
        assert final_of(per_job[job_id]) == expected_end(specs[job_id])


async def test_commits_on_a_cluster_wait_for_a_replica_on_each_primary(
    cluster: LocalCluster,
) -> None:
    keys = Keys("{" + f"w-{uuid.uuid4().hex[:8]}" + "}", 3)
    short: list[tuple[int, int]] = []
    store = Store(connect(cluster.url), keys, wait_replicas=1, wait_timeout=10)
    store.on_wait_short = lambda wanted, got: short.append((wanted, got))
    ids = ids_in_every_shard(3, per_shard=1)
    try:
        await store.enqueue(*ids, b"bad/id")
        taken = await store.take_messages("r1", 10, 0)
        parsed = [(d, parse_message(d.raw, "proj")) for d in taken]
        results = await store.admit_batch("r1", parsed, NOW)
        assert sorted(map(str, results)) == ["admitted"] * 3 + ["dead_letter"]
        claim = await store.claim_due("r1", NOW, 30, 10)
        assert sorted(s.job_id for s in claim.jobs) == sorted(ids)
        cluster.reset_stats()
        async with anyio.create_task_group() as tg:  # one group commit over three primaries
            for state in claim.jobs:
                done = Fetched(JobSnapshot(state.job_id, "SUCCEEDED", "PROVISION", ()))
                plan = plan_after_poll(state, done, now=NOW, policy=Policy(), rng=random.Random(1))
                tg.start_soon(store.commit, state, plan, NOW)
        stats = cluster.command_stats()
        # at least once on each (twice where the script had to be loaded first)
        assert all(stats[p.port].get("wait", 0) >= 1 for p in cluster.primaries()), stats
        assert short == []
        for job_id in ids:
            assert [f["event"] for _, f in await store.read_events(job_id)] == [
                "job.status_changed"
            ]
    finally:
        await store.redis.aclose()


async def test_sweeps_and_start_up_checks_reach_every_node_of_a_cluster(
    cluster: LocalCluster,
) -> None:
    store = Store(connect(cluster.url), Keys("{" + f"u-{uuid.uuid4().hex[:8]}" + "}", 3))
    try:
        await store.enqueue(b"JOB-1", b"JOB-2")
        await store.take_messages("ghost", 10, 0)  # took them, died before heart-beating
        assert await store.recover_unregistered() == 2  # SCAN over the cluster's nodes
        assert sorted(d.raw for d in await store.take_messages("r2", 10, 0)) == [b"JOB-1", b"JOB-2"]
        warnings = await durability_warnings(store.redis)  # the test cluster keeps nothing
        assert warnings == [w for w in warnings if w.startswith("Redis persistence is off")]
        assert len(warnings) == 1  # one line, not one per primary
    finally:
        await store.redis.aclose()
