"""The cluster and sentinel helpers of poller.localredis, checked against redis-py's own clients."""

from __future__ import annotations

import asyncio
import os
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from redis.asyncio.cluster import ClusterNode, RedisCluster
from redis.asyncio.sentinel import Sentinel
from redis.crc import REDIS_CLUSTER_HASH_SLOTS, key_slot

from poller import localredis
from poller.localredis import (
    LocalCluster,
    LocalRedis,
    LocalSentinel,
    LocalSentinelProcess,
    RedisUnavailable,
    redis_binary,
)

pytestmark = pytest.mark.timeout(60)

# Three SETs and a GET from one script: KEYS share a hash tag, so one primary runs it all.
THREE_SETS = """
for i = 1, #KEYS do redis.call('SET', KEYS[i], ARGV[1]) end
return redis.call('GET', KEYS[1])
"""


@pytest.fixture(scope="module")
def cluster() -> Iterator[LocalCluster]:
    """A cluster shared by the tests that only read its shape or its command counts."""
    with LocalCluster() as c:
        yield c


@pytest.fixture
def own_cluster() -> Iterator[LocalCluster]:
    """A cluster of this test's own, free to fail over."""
    with LocalCluster() as c:
        yield c


@pytest.fixture
def sentinel_set() -> Iterator[LocalSentinel]:
    with LocalSentinel() as s:
        yield s


def cluster_client(c: LocalCluster) -> RedisCluster:
    nodes = [ClusterNode("127.0.0.1", n.port) for n in c.nodes]
    return RedisCluster(startup_nodes=nodes, decode_responses=True)


def sentinel_client(s: LocalSentinel) -> Sentinel:
    return Sentinel(
        [("127.0.0.1", p.port) for p in s.sentinels], socket_timeout=5, decode_responses=True
    )


def test_cluster_has_three_primaries_owning_a_third_of_the_slots_and_a_replica_each(
    cluster: LocalCluster,
) -> None:
    primaries, replicas = cluster.primaries(), cluster.replicas()
    assert len(primaries) == 3
    assert len(replicas) == 3
    counts = sorted(sum(len(r) for r in p.slots()) for p in primaries)
    assert sum(counts) == REDIS_CLUSTER_HASH_SLOTS
    assert counts[0] >= REDIS_CLUSTER_HASH_SLOTS // 3 - 1
    assert counts[-1] <= REDIS_CLUSTER_HASH_SLOTS // 3 + 1
    # each replica follows a different primary, and says so itself
    followed = {r.myself().master_id for r in replicas}
    assert followed == {p.node_id for p in primaries}
    assert all(r.info("replication")["master_link_status"] == "up" for r in replicas)
    assert cluster.primary_of_slot(0) in primaries
    assert cluster.primary_of_slot(REDIS_CLUSTER_HASH_SLOTS - 1) in primaries
    assert cluster.url == "redis+cluster://" + ",".join(
        f"127.0.0.1:{n.port}" for n in cluster.nodes
    )
    assert all(n.pid is not None for n in cluster.nodes)


async def test_a_client_of_its_own_sees_the_same_cluster(cluster: LocalCluster) -> None:
    rc = cluster_client(cluster)
    try:
        await rc.initialize()
        assert {n.port for n in rc.get_primaries()} == {p.port for p in cluster.primaries()}
        assert {n.port for n in rc.get_replicas()} == {r.port for r in cluster.replicas()}
        assert rc.get_node_from_key("{x}").port == cluster.primary_of_slot(key_slot(b"{x}")).port
    finally:
        await rc.aclose()


async def test_command_counts_include_the_commands_a_script_runs(cluster: LocalCluster) -> None:
    tag = uuid.uuid4().hex[:8]
    keys = [f"{{{tag}}}:{i}" for i in range(3)]
    owner = cluster.primary_of_slot(key_slot(keys[0].encode()))
    rc = cluster_client(cluster)
    try:
        await rc.get(keys[0])  # connects (and its CLIENT SETINFO) before the count starts
        cluster.reset_stats()
        assert await rc.eval(THREE_SETS, 3, *keys, "v") == "v"
        counts = cluster.command_counts()
        stats = cluster.command_stats()
    finally:
        await rc.aclose()
    assert counts == {p.port: (5 if p.port == owner.port else 0) for p in cluster.primaries()}
    assert stats[owner.port]["eval"] == 1
    assert stats[owner.port]["set"] == 3
    assert stats[owner.port]["get"] == 1
    # the raw totals also hold the helper's own probes, never fewer than the script's
    assert cluster.command_counts(exclude=())[owner.port] > 5


async def test_a_cluster_write_survives_a_failover(own_cluster: LocalCluster) -> None:
    key = f"survivor:{uuid.uuid4().hex}"
    old = own_cluster.primary_of_slot(key_slot(key.encode()))
    replica = own_cluster.replica_of(old)
    rc = cluster_client(own_cluster)
    try:
        await rc.set(key, "before")
        # a manual CLUSTER FAILOVER waits for the replica to catch up: nothing acked is lost
        promoted = await asyncio.to_thread(own_cluster.failover, replica.port)
        assert promoted is replica
        assert promoted.role() == "primary"
        assert old.role() == "replica"
        assert own_cluster.primary_of_slot(key_slot(key.encode())) is promoted
        assert await rc.get(key) == "before"  # the client follows the MOVED to the new primary
        await rc.set(key, "after")
        assert rc.get_node_from_key(key).port == promoted.port
        assert promoted.command("GET", key) == "after"
    finally:
        await rc.aclose()


async def test_a_sentinel_write_survives_a_failover(sentinel_set: LocalSentinel) -> None:
    old = sentinel_set.primary_port()
    (replica,) = (p.port for p in sentinel_set.servers if p.port != old)
    sentinel = sentinel_client(sentinel_set)
    master = sentinel.master_for("mymaster", socket_timeout=5, decode_responses=True)
    try:
        await master.set("k", "before")
        assert await master.wait(1, 10_000) == 1  # the replica has it before the switch
        new = await asyncio.to_thread(sentinel_set.failover)
        assert new == replica
        assert sentinel_set.primary_port() == replica
        # the sentinels disconnected the old primary's clients: this reconnects via them
        await master.set("k2", "after")
        assert await master.get("k") == "before"
        assert int((await master.info("server"))["tcp_port"]) == replica
        assert (await master.info("replication"))["role"] == "master"
        assert sentinel_set.server(old).role() == "replica"
    finally:
        await master.aclose()
        for s in sentinel.sentinels:
            await s.aclose()


async def test_a_sentinel_write_survives_the_primary_crashing(sentinel_set: LocalSentinel) -> None:
    old = sentinel_set.primary_port()
    (replica,) = (p.port for p in sentinel_set.servers if p.port != old)
    sentinel = sentinel_client(sentinel_set)
    master = sentinel.master_for("mymaster", socket_timeout=5, decode_responses=True)
    try:
        await master.set("k", "before")
        assert await master.wait(1, 10_000) == 1
        new = await asyncio.to_thread(sentinel_set.kill_primary)
        assert new == replica
        assert not sentinel_set.server(old).running
        assert await master.get("k") == "before"
        await master.set("k", "after")
        assert int((await master.info("server"))["tcp_port"]) == replica
        assert (await master.info("replication"))["role"] == "master"
    finally:
        await master.aclose()
        for s in sentinel.sentinels:
            await s.aclose()


@pytest.fixture
def started_pids(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """The PIDs of every redis-server that LocalRedis (or a subclass) starts in this test."""
    pids: list[int] = []
    start = LocalRedis.start

    def recording_start(self: LocalRedis, timeout: float = 10.0) -> LocalRedis:
        try:
            return start(self, timeout)
        finally:
            if self.proc is not None:
                pids.append(self.proc.pid)

    monkeypatch.setattr(LocalRedis, "start", recording_start)
    return pids


def gone(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    return False


def test_a_cluster_that_fails_to_form_leaves_no_process_behind(
    monkeypatch: pytest.MonkeyPatch, started_pids: list[int]
) -> None:
    monkeypatch.setattr(localredis, "_redis_cli", lambda: "false")  # "create" fails at once
    c = LocalCluster()
    with pytest.raises(RedisUnavailable, match="cluster create failed"):
        c.start()
    assert len(started_pids) == 6
    assert all(gone(pid) for pid in started_pids)
    assert not any(Path(n.dir).exists() for n in c.nodes)


def test_sentinels_that_fail_to_start_leave_no_process_behind(
    monkeypatch: pytest.MonkeyPatch, started_pids: list[int]
) -> None:
    def bad_argv(self: LocalSentinelProcess) -> list[str]:
        return [redis_binary(), str(self.conf), "--sentinel", "--no-such-option", "1"]

    monkeypatch.setattr(LocalSentinelProcess, "argv", bad_argv)
    s = LocalSentinel()
    with pytest.raises(RedisUnavailable, match="exited"):
        s.start()
    assert len(started_pids) == 3  # the primary, the replica, the first sentinel
    assert all(gone(pid) for pid in started_pids)
    assert not any(Path(p.dir).exists() for p in [*s.servers, *s.sentinels])
