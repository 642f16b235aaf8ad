"""The consumer's side: ``poller wait`` exit codes and timing, consumer groups and recovery."""

from __future__ import annotations

import io
import os
import sys
from collections.abc import AsyncIterator
from typing import Any

import anyio
import pytest

from poller.commands import events as print_events
from poller.commands import wait
from poller.consumer import ConsumerGroup, JobEvent, stream_id_since, tail_events
from poller.localredis import LocalRedis
from poller.sim import SimHandle
from poller.store import Store
from tests.integration.harness import (
    PROJECT,
    all_final,
    events_until,
    fast_settings,
    running_worker,
)


def ending(final: str, **extra: Any) -> dict[str, Any]:
    """A job that runs, then ends in ``final`` one emulated second later."""
    return {
        "job_type": "PROVISION",
        "job_status": [[0, "RUNNING"], [1, final]],
        "tasks": [{"task_name": "STEP", "task_index": 1, "steps": [[0, "RUNNING"], [1, final]]}],
        **extra,
    }


@pytest.mark.parametrize(
    ("final", "code"),
    [("SUCCEEDED", 0), ("FAILED", 1), ("PARTIALLY_FAILED", 1), ("ROLLBACKED", 1),
     ("CANCELLED", 1)],
)  # fmt: skip
async def test_wait_exit_code_follows_the_final_status(
    sim: SimHandle, store: Store, redis_server: LocalRedis, prefix: str, final: str, code: int
) -> None:
    job_id = await sim.create_job(ending(final))
    out = io.StringIO()
    async with running_worker(fast_settings(redis_server.url, prefix, sim.url)):
        await store.enqueue(job_id)
        await events_until(store, lambda ev: len(ev) >= 2, job_id=job_id)
        await sim.advance(1)
        result = await wait(store, PROJECT, job_id, give_up_after=30, out=out)
    assert result == code
    assert f"→ {final}" in out.getvalue()


async def test_wait_exits_2_when_the_job_is_abandoned(
    sim: SimHandle, store: Store, redis_server: LocalRedis, prefix: str
) -> None:
    job_id = await sim.create_job(ending("SUCCEEDED", forbidden=True))
    async with running_worker(fast_settings(redis_server.url, prefix, sim.url)):
        await store.enqueue(job_id)
        result = await wait(store, PROJECT, job_id, give_up_after=30, out=io.StringIO())
    assert result == 2


async def test_wait_exits_124_when_its_timeout_passes_first(store: Store) -> None:
    out = io.StringIO()
    assert await wait(store, PROJECT, "JOB-never", give_up_after=0.3, out=out) == 124
    assert "timed out" in out.getvalue()


async def test_wait_started_before_tracking_sees_everything(
    sim: SimHandle, store: Store, redis_server: LocalRedis, prefix: str
) -> None:
    job_id = await sim.create_job(ending("SUCCEEDED"))
    out = io.StringIO()
    codes: list[int] = []
    async with anyio.create_task_group() as tg:

        async def waiter() -> None:
            codes.append(await wait(store, PROJECT, job_id, give_up_after=30, out=out))

        tg.start_soon(waiter)
        async with running_worker(fast_settings(redis_server.url, prefix, sim.url)):
            await store.enqueue(job_id)
            await events_until(store, lambda ev: len(ev) >= 2, job_id=job_id)
            await sim.advance(1)
            await events_until(store, all_final([job_id]), job_id=job_id)
    assert codes == [0]
    assert len(out.getvalue().splitlines()) == 4  # every event, from the first


async def test_wait_started_during_tracking_replays_from_the_start(
    sim: SimHandle, store: Store, redis_server: LocalRedis, prefix: str
) -> None:
    job_id = await sim.create_job(ending("FAILED"))
    out = io.StringIO()
    async with running_worker(fast_settings(redis_server.url, prefix, sim.url)):
        await store.enqueue(job_id)
        await events_until(store, lambda ev: len(ev) >= 2, job_id=job_id)
        async with anyio.create_task_group() as tg:
            codes: list[int] = []

            async def waiter() -> None:
                codes.append(await wait(store, PROJECT, job_id, give_up_after=30, out=out))

            tg.start_soon(waiter)
            await sim.advance(1)
    assert codes == [1]
    assert "#1 " in out.getvalue()
    assert "#4 " in out.getvalue()


async def test_wait_started_after_the_job_ended_answers_at_once(
    sim: SimHandle, store: Store, redis_server: LocalRedis, prefix: str
) -> None:
    job_id = await sim.create_job(ending("SUCCEEDED"))
    async with running_worker(fast_settings(redis_server.url, prefix, sim.url)):
        await store.enqueue(job_id)
        await events_until(store, lambda ev: len(ev) >= 2, job_id=job_id)
        await sim.advance(1)
        await events_until(store, all_final([job_id]), job_id=job_id)
    assert await wait(store, PROJECT, job_id, give_up_after=5, out=io.StringIO()) == 0


async def test_wait_command_enqueues_and_returns_the_exit_code(
    sim: SimHandle, store: Store, redis_server: LocalRedis, prefix: str
) -> None:
    job_id = await sim.create_job(ending("ROLLBACKED"))
    await sim.advance(1)  # already over when first polled
    env = {k: v for k, v in os.environ.items() if not k.startswith("POLLER_")}
    env.update({"POLLER_REDIS_URL": redis_server.url, "POLLER_KEY_PREFIX": prefix,
                "POLLER_PROJECT_ID": PROJECT})  # fmt: skip
    async with running_worker(fast_settings(redis_server.url, prefix, sim.url)):
        result = await anyio.run_process(
            [sys.executable, "-m", "poller", "wait", job_id, "--enqueue", "--timeout", "60"],
            env=env, check=False,
        )  # fmt: skip
    assert result.returncode == 1, result.stderr
    assert b"ROLLBACKED" in result.stdout


async def _publish(store: Store, job_id: str, count: int) -> None:
    for seq in range(1, count + 1):
        await store.redis.xadd(store.keys.events, {
            "event": "task.status_changed", "job_id": job_id, "project_id": PROJECT,
            "seq": str(seq), "observed_at": "2026-11-27T00:00:00.000Z", "from_status": "",
            "to_status": "RUNNING", "job_status": "RUNNING", "task_id": f"T{seq}",
            "task_index": str(seq), "task_name": "X", "task_created_at": "",
            "task_updated_at": "", "messages": "{}",
        })  # fmt: skip


async def _take(events: AsyncIterator[JobEvent], n: int) -> list[JobEvent]:
    taken: list[JobEvent] = []
    with anyio.fail_after(10):
        async for event in events:
            taken.append(event)
            if len(taken) == n:
                break
    return taken


async def test_crashed_consumers_pending_events_are_recovered_by_another(store: Store) -> None:
    await _publish(store, "JOB-c", 5)
    crashed = ConsumerGroup(store.redis, store.keys.events, group="notify", consumer="a")
    got = await _take(crashed.events(follow=False), 5)
    for event in got[:2]:
        await crashed.ack(event)
    # consumer "a" dies here with seq 3..5 delivered but never acknowledged
    rescuer = ConsumerGroup(
        store.redis, store.keys.events, group="notify", consumer="b", claim_idle_ms=0
    )
    recovered = [e async for e in rescuer.events(follow=False)]
    assert [e.seq for e in recovered] == [3, 4, 5]
    for event in recovered:
        await rescuer.ack(event)
    pending = await store.redis.xpending(store.keys.events, "notify")
    assert pending["pending"] == 0


async def test_consumer_resumes_its_own_pending_entries_after_a_restart(store: Store) -> None:
    await _publish(store, "JOB-r", 3)
    first = ConsumerGroup(store.redis, store.keys.events, group="g", consumer="same")
    await _take(first.events(follow=False), 3)  # delivered, not acknowledged
    again = [
        e
        async for e in ConsumerGroup(
            store.redis, store.keys.events, group="g", consumer="same"
        ).events(follow=False)
    ]
    assert [e.seq for e in again] == [1, 2, 3]


async def test_events_group_prints_and_acknowledges_so_a_rerun_prints_only_new(
    store: Store,
) -> None:
    await _publish(store, "JOB-g", 2)
    out = io.StringIO()
    await print_events(store, job_id=None, follow=False, as_json=True, group="cli", out=out)
    assert len(out.getvalue().splitlines()) == 2
    await _publish(store, "JOB-h", 1)
    again = io.StringIO()
    await print_events(store, job_id=None, follow=False, as_json=True, group="cli", out=again)
    assert [line.count('"job_id": "JOB-h"') for line in again.getvalue().splitlines()] == [1]


async def test_tail_follows_new_events_as_they_are_published(store: Store) -> None:
    await _publish(store, "JOB-old", 1)
    async with anyio.create_task_group() as tg:
        got: list[JobEvent] = []

        async def reader() -> None:
            got.extend(await _take(tail_events(store.redis, store.keys, block_ms=100), 2))

        tg.start_soon(reader)
        await _publish(store, "JOB-new", 1)
    assert [e.job_id for e in got] == ["JOB-old", "JOB-new"]


def test_since_accepts_ids_epoch_seconds_and_rfc3339() -> None:
    assert stream_id_since("1700000000000-3") == "1700000000000-3"
    assert stream_id_since("1700000000") == "1700000000000-0"
    assert stream_id_since("2023-11-14T22:13:20Z") == "1700000000000-0"
    assert stream_id_since("$") == "$"
    with pytest.raises(ValueError, match="--since"):
        stream_id_since("yesterday")
