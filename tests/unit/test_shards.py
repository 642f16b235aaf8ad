"""The shard layout and the Redis URLs: pure functions, no Redis."""

from __future__ import annotations

import zlib
from collections import Counter

import pytest

from poller.config import ConfigError, load_settings
from poller.store.connection import BadRedisUrl, parse_redis_url
from poller.store.schema import (
    SLOTS,
    Keys,
    hash_tag,
    shard_of,
    shard_prefixes,
    slot_range,
    tag_slot,
    unwrap_entry,
)


def test_one_shard_keeps_the_layout_unchanged() -> None:
    keys = Keys("{poller}")
    assert keys.all_shards[0].prefix == "{poller}"
    assert keys.schedule == "{poller}:schedule"
    assert keys.events == "{poller}:events"
    assert keys.job_events("JOB-1") == "{poller}:events:JOB-1"
    assert keys.job("p:JOB-1") == "{poller}:job:p:JOB-1"


def test_shard_tags_extend_the_prefix_hash_tag() -> None:
    prefixes = shard_prefixes("{poller}", 3)
    assert all(p.startswith("{poller:") and p.endswith("}") for p in prefixes)
    assert len(set(prefixes)) == 3
    assert shard_prefixes("app{poller}x", 2)[0].startswith("app{poller:")
    assert all(p.endswith("}x") for p in shard_prefixes("app{poller}x", 2))
    assert all(p.startswith("poller:") for p in shard_prefixes("poller", 4))


@pytest.mark.parametrize("shards", [2, 3, 6, 12, 16])
def test_each_shard_tag_falls_in_its_own_equal_range_of_slots(shards: int) -> None:
    for k, prefix in enumerate(shard_prefixes("{poller}", shards)):
        tag = hash_tag(prefix)
        assert tag is not None
        low, high = slot_range(k, shards)
        assert low <= tag_slot(tag) < high
    assert slot_range(0, shards)[0] == 0
    assert slot_range(shards - 1, shards)[1] == SLOTS


def test_the_shard_tag_suffix_is_the_smallest_that_fits() -> None:
    for k, prefix in enumerate(shard_prefixes("{poller}", 3)):
        tag = hash_tag(prefix)
        assert tag is not None
        x = int(tag.rpartition(":")[2])
        low, high = slot_range(k, 3)
        assert all(not low <= tag_slot(f"poller:{y}") < high for y in range(x))


def test_with_three_primaries_and_three_shards_each_primary_gets_one() -> None:
    # redis-cli --cluster create splits 16384 slots as 0-5460, 5461-10922, 10923-16383
    ranges = [(0, 5460), (5461, 10922), (10923, 16383)]
    owners = Counter()
    for prefix in shard_prefixes("{poller}", 3):
        tag = hash_tag(prefix)
        assert tag is not None
        slot = tag_slot(tag)
        owners[next(i for i, (lo, hi) in enumerate(ranges) if lo <= slot <= hi)] += 1
    assert owners == Counter({0: 1, 1: 1, 2: 1})


def test_a_job_belongs_to_the_shard_of_its_ids_crc32() -> None:
    assert shard_of("JOB-1", 1) == 0
    assert shard_of("JOB-1", 5) == zlib.crc32(b"JOB-1") % 5
    keys = Keys("{poller}", 5)
    assert keys.for_job("JOB-1") == keys.shard(zlib.crc32(b"JOB-1") % 5)
    assert keys.job_events("JOB-1").startswith(keys.for_job("JOB-1").prefix + ":events:")


def test_jobs_spread_over_shards() -> None:
    counts = Counter(shard_of(f"JOB-{i:05d}", 3) for i in range(3000))
    assert set(counts) == {0, 1, 2}
    assert all(800 < n < 1200 for n in counts.values())


def test_one_shard_names_are_refused_when_there_are_several() -> None:
    keys = Keys("{poller}", 3)
    with pytest.raises(ValueError, match="one per shard"):
        _ = keys.events
    with pytest.raises(ValueError, match="one per shard"):
        _ = keys.schedule
    assert len(keys.event_streams) == 3
    assert keys.intake == "{poller}:jobs"  # the intake side stays under the prefix


def test_shard_count_out_of_range_is_refused() -> None:
    with pytest.raises(ValueError, match="between 1 and"):
        Keys("p", 0)


def test_hash_tag_follows_redis_rules() -> None:
    assert hash_tag("{poller}") == "poller"
    assert hash_tag("a{b}c{d}") == "b"
    assert hash_tag("{}poller") is None
    assert hash_tag("poller") is None


def test_in_flight_entries_carry_a_ticket() -> None:
    assert unwrap_entry(b"17:JOB-1") == ("17", b"JOB-1")
    assert unwrap_entry(b'3:{"job_id": "a:b"}') == ("3", b'{"job_id": "a:b"}')
    assert unwrap_entry(b"JOB-1") == ("", b"JOB-1")  # left by a version before tickets
    assert unwrap_entry(b"x1:JOB") == ("", b"x1:JOB")


def test_cluster_urls_list_seed_nodes() -> None:
    target = parse_redis_url("redis+cluster://:s3cret@10.0.0.1:7000,10.0.0.2,[::1]:7002")
    assert target.kind == "cluster"
    assert target.hosts == (("10.0.0.1", 7000), ("10.0.0.2", 6379), ("::1", 7002))
    assert target.password == "s3cret"
    assert not target.tls
    assert parse_redis_url("rediss+cluster://h:1").tls


def test_sentinel_urls_name_the_service_and_db() -> None:
    target = parse_redis_url("redis+sentinel://:pw@s1:26379,s2:26380/mymaster/3")
    assert (target.kind, target.service, target.db) == ("sentinel", "mymaster", 3)
    assert target.hosts == (("s1", 26379), ("s2", 26380))
    assert parse_redis_url("redis+sentinel://s1/mymaster").hosts == (("s1", 26379),)


@pytest.mark.parametrize(
    ("url", "why"),
    [
        ("redis+cluster://h:1/0", "no database index"),
        ("redis+sentinel://h:1", "service_name"),
        ("redis+sentinel://h:1/svc/x", "not a database index"),
        ("redis+cluster://h:port", "not a port"),
        ("redis+cluster://h:1,,h:2", "empty host"),
        ("memcached://h:1", "unknown scheme"),
    ],
)
def test_bad_redis_urls_say_why(url: str, why: str) -> None:
    with pytest.raises(BadRedisUrl, match=why):
        parse_redis_url(url)


def test_a_cluster_needs_a_hash_tagged_prefix() -> None:
    env = {"POLLER_REDIS_URL": "redis+cluster://127.0.0.1:7000", "POLLER_KEY_PREFIX": "poller"}
    with pytest.raises(ConfigError, match=r"^POLLER_KEY_PREFIX: Redis Cluster needs .*\{poller\}"):
        load_settings(env)
    env["POLLER_KEY_PREFIX"] = "{poller}"
    assert load_settings(env).key_prefix == "{poller}"


def test_bad_shard_and_wait_settings_name_the_variable() -> None:
    with pytest.raises(ConfigError, match=r"^POLLER_SHARDS:"):
        load_settings({"POLLER_SHARDS": "0"})
    with pytest.raises(ConfigError, match=r"^POLLER_SHARDS:"):
        load_settings({"POLLER_SHARDS": "three"})
    with pytest.raises(ConfigError, match=r"^POLLER_REDIS_WAIT_REPLICAS:"):
        load_settings({"POLLER_REDIS_WAIT_REPLICAS": "-1"})
    with pytest.raises(ConfigError, match=r"^POLLER_REDIS_URL:"):
        load_settings({"POLLER_REDIS_URL": "redis+cluster://"})
