"""Hostile input end to end: poison intake messages and API data Redis cannot encode.

A real worker, a real redis-server and the emulator over HTTP.  On the first release each of
these wedged a replica's intake or stalled a job until ``job_timeout``.
"""

from __future__ import annotations

import json
from typing import Any

from poller.localredis import LocalRedis
from poller.sim import SimHandle
from poller.store import Store
from tests.integration.harness import (
    all_final,
    assert_consistent,
    by_job,
    events_until,
    eventually,
    fast_settings,
    quick_job,
    running_worker,
)

POISON = [
    b"{" * 5000,  # RecursionError in json.loads
    b'{"job_id":"JOB-meta","meta":{"k":"\\ud83d"}}',  # a producer that cut an emoji in half
    b'{"job_id":"JOB-nan","meta":{"x":NaN}}',
    b'{"job_id":"JOB-zero","project_id":0}',
    b"\xff\xfe",
]


async def _any_dead(store: Store) -> bool:
    return int(await store.redis.llen(store.keys.dead)) > 0


async def _dead_reasons(store: Store) -> dict[bytes, str]:
    records = [json.loads(r) for r in await store.redis.lrange(store.keys.dead, 0, -1)]
    return {r["raw"].encode("utf-8", "surrogateescape"): r["reason"] for r in records}


async def test_poison_messages_are_dead_lettered_and_the_messages_behind_them_tracked(
    redis_server: LocalRedis, prefix: str, store: Store, live_sim: SimHandle
) -> None:
    ids = [await live_sim.create_job(quick_job(0.1)) for _ in range(150)]
    settings = fast_settings(redis_server.url, prefix, live_sim.url)
    # LPUSH and take from the right: the poison is first in line, 150 jobs wait behind it
    await store.enqueue(*POISON, *ids)
    async with running_worker(settings):
        events = await events_until(store, all_final(ids), within=60)
    for job_events in by_job(events).values():
        assert_consistent(job_events)
    reasons = await _dead_reasons(store)
    assert len(reasons) == len(POISON)
    assert all(reasons.values())
    assert reasons[b'{"job_id":"JOB-zero","project_id":0}'].startswith("invalid project_id")


async def test_a_lone_surrogate_in_task_messages_is_replaced_and_the_job_ends_on_time(
    redis_server: LocalRedis, prefix: str, store: Store, live_sim: SimHandle
) -> None:
    spec: dict[str, Any] = {**quick_job(0.2), "hostile": ["surrogate_messages"]}
    job_id = await live_sim.create_job(spec)
    settings = fast_settings(redis_server.url, prefix, live_sim.url)
    await store.enqueue(job_id)
    async with running_worker(settings):
        events = await events_until(store, all_final([job_id]), job_id=job_id, within=30)
    assert_consistent(events)
    assert events[-1].event == "job.status_changed"
    assert events[-1].to_status == "SUCCEEDED"
    task_messages = [e.fields["messages"] for e in events if e.event == "task.status_changed"]
    assert task_messages
    assert all(m.endswith("\ufffd") for m in task_messages)


async def test_a_job_id_tracked_under_another_project_is_dead_lettered_as_a_conflict(
    redis_server: LocalRedis, prefix: str, store: Store, live_sim: SimHandle
) -> None:
    job_id = await live_sim.create_job(quick_job(1000))  # keeps running
    settings = fast_settings(redis_server.url, prefix, live_sim.url)
    conflicting = json.dumps({"job_id": job_id, "project_id": "another-project"}).encode()
    await store.enqueue(job_id)
    async with running_worker(settings):
        await events_until(store, lambda evs: len(evs) >= 1, job_id=job_id)
        await store.enqueue(conflicting)
        await eventually(lambda: _any_dead(store))  # a list: nothing to await on
    reasons = await _dead_reasons(store)
    assert list(reasons) == [conflicting]
    assert reasons[conflicting].startswith("project_conflict")
