"""A real worker against a real redis-server and the emulator over HTTP, step by step.

The emulator runs on a manual clock: each test moves it to the next point of a job's
timeline, then awaits the events that change must produce, so every expected event list is
exact (no timing luck, no sleeps).
"""

from __future__ import annotations

from typing import Any

import pytest

from poller.commands import cancel
from poller.consumer import JobEvent
from poller.localredis import LocalRedis
from poller.sim import SimHandle
from poller.store import Store
from tests.event_schema import schema_errors
from tests.integration.harness import (
    PROJECT,
    all_final,
    assert_consistent,
    events_until,
    eventually,
    fast_settings,
    running_worker,
    transitions,
)

T, J = "task.status_changed", "job.status_changed"


def steps(*pairs: tuple[float, str]) -> list[list[Any]]:
    return [[at, status] for at, status in pairs]


def job(
    job_status: list[list[Any]], tasks: dict[str, list[list[Any]]], **extra: Any
) -> dict[str, Any]:
    return {
        "job_type": "PROVISION",
        "job_status": job_status,
        "tasks": [
            {"task_name": n, "task_index": i, "steps": s}
            for i, (n, s) in enumerate(tasks.items(), 1)
        ],
        **extra,
    }


async def walk(
    sim: SimHandle,
    store: Store,
    job_id: str,
    script: list[tuple[float, list[tuple[str, str, str, str]]]],
) -> list[JobEvent]:
    """Advance the emulator to each time in ``script`` and await exactly its transitions."""
    expected: list[tuple[str, str, str, str]] = []
    now = 0.0
    seen: list[JobEvent] = []
    for at, produced in script:
        await sim.advance(at - now)
        now = at
        expected += produced
        count = len(expected)
        seen = await events_until(store, lambda ev, n=count: len(ev) >= n, job_id=job_id)
        assert transitions(seen) == expected
    return seen


ROLLOUT = ("PREPARE", "DEPLOY")


@pytest.mark.parametrize(
    ("final_job", "final_task"),
    [
        ("SUCCEEDED", "SUCCEEDED"),
        ("FAILED", "FAILED"),
        ("PARTIALLY_FAILED", "FAILED"),
        ("CANCELLED", "CANCELLED"),
    ],
)
async def test_job_is_followed_to_its_terminal_status(
    sim: SimHandle,
    store: Store,
    redis_server: LocalRedis,
    prefix: str,
    final_job: str,
    final_task: str,
) -> None:
    job_id = await sim.create_job(
        job(
            steps((0, "RUNNING"), (4, final_job)),
            {
                "PREPARE": steps((0, "RUNNING"), (2, "SUCCEEDED")),
                "DEPLOY": steps((2, "RUNNING"), (4, final_task)),
            },
        )
    )
    async with running_worker(fast_settings(redis_server.url, prefix, sim.url)):
        await store.enqueue(job_id)
        events = await walk(
            sim,
            store,
            job_id,
            [
                (0, [(T, "PREPARE", "", "RUNNING"), (J, "", "", "RUNNING")]),
                (2, [(T, "PREPARE", "RUNNING", "SUCCEEDED"), (T, "DEPLOY", "", "RUNNING")]),
                (4, [(T, "DEPLOY", "RUNNING", final_task), (J, "", "RUNNING", final_job)]),
            ],
        )
    assert_consistent(events)
    assert events[-1].terminal is True
    assert all(schema_errors(dict(e.fields)) == [] for e in events)
    global_stream = [
        e for e in await events_until(store, all_final([job_id])) if e.job_id == job_id
    ]
    assert [dict(e.fields) for e in global_stream] == [dict(e.fields) for e in events]


async def test_rollback_passes_through_rollbacking(
    sim: SimHandle, store: Store, redis_server: LocalRedis, prefix: str
) -> None:
    job_id = await sim.create_job(
        job(
            steps((0, "RUNNING"), (3, "ROLLBACKING"), (5, "ROLLBACKED")),
            {
                "CANARY": steps((0, "RUNNING"), (3, "FAILED")),
                "ROLLBACK": steps((3, "ROLLBACKING"), (5, "ROLLBACKED")),
            },
        )
    )
    async with running_worker(fast_settings(redis_server.url, prefix, sim.url)):
        await store.enqueue(job_id)
        events = await walk(
            sim,
            store,
            job_id,
            [
                (0, [(T, "CANARY", "", "RUNNING"), (J, "", "", "RUNNING")]),
                (
                    3,
                    [
                        (T, "CANARY", "RUNNING", "FAILED"),
                        (T, "ROLLBACK", "", "ROLLBACKING"),
                        (J, "", "RUNNING", "ROLLBACKING"),
                    ],
                ),
                (
                    5,
                    [
                        (T, "ROLLBACK", "ROLLBACKING", "ROLLBACKED"),
                        (J, "", "ROLLBACKING", "ROLLBACKED"),
                    ],
                ),
            ],
        )
    assert [e.terminal for e in events if e.event == J] == [False, False, True]


async def test_120_tasks_behind_a_50_task_page_cap_arrive_complete(
    sim: SimHandle, store: Store, redis_server: LocalRedis, prefix: str
) -> None:
    names = {f"STEP_{i:03d}": steps((0, "RUNNING"), (1, "SUCCEEDED")) for i in range(1, 121)}
    job_id = await sim.create_job(job(steps((0, "RUNNING"), (1, "SUCCEEDED")), names))
    settings = fast_settings(redis_server.url, prefix, sim.url, page_size=100)
    async with running_worker(settings):
        await store.enqueue(job_id)
        first = await events_until(store, lambda ev: len(ev) >= 121, job_id=job_id)
        await sim.advance(1)
        events = await events_until(store, all_final([job_id]), job_id=job_id)
    assert len(first) == 121
    assert [e.task_index for e in first[:120]] == list(range(1, 121))
    assert len(events) == 242
    assert_consistent(events)
    stats = await sim.stats()
    assert stats["requests"]  # the emulator was really asked


async def test_pages_far_larger_than_one_network_read_are_read_whole(
    sim: SimHandle, store: Store, redis_server: LocalRedis, prefix: str
) -> None:
    bulky = "x" * 4000  # ~400 KB per page of 100 tasks
    tasks = [{"task_name": f"T{i}", "task_index": i, "messages": bulky,
              "steps": [[0, "RUNNING"], [1, "SUCCEEDED"]]} for i in range(1, 101)]  # fmt: skip
    job_id = await sim.create_job(
        {"job_type": "PROVISION", "job_status": [[0, "RUNNING"], [1, "SUCCEEDED"]], "tasks": tasks}
    )
    settings = fast_settings(redis_server.url, prefix, sim.url, page_size=100)
    async with running_worker(settings):
        await store.enqueue(job_id)
        first = await events_until(store, lambda ev: len(ev) >= 101, job_id=job_id)
    assert all(e.fields["messages"] == bulky for e in first[:100])


async def test_tasks_appearing_in_a_later_phase_get_first_sight_events(
    sim: SimHandle, store: Store, redis_server: LocalRedis, prefix: str
) -> None:
    job_id = await sim.create_job(
        job(
            steps((0, "RUNNING"), (4, "SUCCEEDED")),
            {
                "BUILD": steps((0, "RUNNING"), (2, "SUCCEEDED")),
                "VERIFY": steps((2, "SUCCEEDED")),
                "RELEASE": steps((4, "SUCCEEDED")),
            },
        )
    )
    async with running_worker(fast_settings(redis_server.url, prefix, sim.url)):
        await store.enqueue(job_id)
        await walk(
            sim,
            store,
            job_id,
            [
                (0, [(T, "BUILD", "", "RUNNING"), (J, "", "", "RUNNING")]),
                (2, [(T, "BUILD", "RUNNING", "SUCCEEDED"), (T, "VERIFY", "", "SUCCEEDED")]),
                (4, [(T, "RELEASE", "", "SUCCEEDED"), (J, "", "RUNNING", "SUCCEEDED")]),
            ],
        )


async def test_job_invisible_for_a_while_is_followed_once_visible(
    sim: SimHandle, store: Store, redis_server: LocalRedis, prefix: str
) -> None:
    job_id = await sim.create_job(
        job(
            steps((0, "RUNNING"), (6, "SUCCEEDED")),
            {"ONLY": steps((0, "RUNNING"), (6, "SUCCEEDED"))},
            visible_after=5,
        )
    )
    async with running_worker(fast_settings(redis_server.url, prefix, sim.url)):
        await store.enqueue(job_id)
        # Let the worker meet the 404 before the job becomes visible.
        await eventually(lambda: _served(sim, "404") >= 2)
        view = await store.get_job(PROJECT, job_id)
        assert view is not None
        assert view.state.not_found_since is not None
        await walk(
            sim,
            store,
            job_id,
            [
                (5, [(T, "ONLY", "", "RUNNING"), (J, "", "", "RUNNING")]),
                (6, [(T, "ONLY", "RUNNING", "SUCCEEDED"), (J, "", "RUNNING", "SUCCEEDED")]),
            ],
        )


def _served(sim: SimHandle, status: str) -> int:
    return int(sim.state.stats.by_status.get(int(status), 0))


async def test_job_missing_forever_is_abandoned_not_found(
    sim: SimHandle, store: Store, redis_server: LocalRedis, prefix: str
) -> None:
    job_id = await sim.create_job(job(steps((0, "RUNNING")), {}, missing=True))
    settings = fast_settings(redis_server.url, prefix, sim.url, not_found_grace=0.3)
    async with running_worker(settings):
        await store.enqueue(job_id)
        (event,) = await events_until(store, all_final([job_id]), job_id=job_id)
    assert (event.event, event.reason, event.seq, event.to_status) == (
        "job.abandoned",
        "not_found",
        1,
        "",
    )
    assert event.detail is not None
    assert "SVCSTG.00100404" in event.detail


async def test_forbidden_job_is_abandoned_rejected_with_the_error_code(
    sim: SimHandle, store: Store, redis_server: LocalRedis, prefix: str
) -> None:
    job_id = await sim.create_job(job(steps((0, "RUNNING")), {}, forbidden=True))
    async with running_worker(fast_settings(redis_server.url, prefix, sim.url)):
        await store.enqueue(job_id)
        (event,) = await events_until(store, all_final([job_id]), job_id=job_id)
    assert (event.event, event.reason) == ("job.abandoned", "rejected")
    assert event.detail is not None
    assert event.detail.startswith("SVCSTG.00100403")


async def test_job_past_its_timeout_is_abandoned_after_its_events(
    sim: SimHandle, store: Store, redis_server: LocalRedis, prefix: str
) -> None:
    job_id = await sim.create_job(job(steps((0, "RUNNING")), {"WAIT": steps((0, "RUNNING"))}))
    settings = fast_settings(redis_server.url, prefix, sim.url, job_timeout=0.5)
    async with running_worker(settings):
        await store.enqueue(job_id)
        events = await events_until(store, all_final([job_id]), job_id=job_id)
    assert transitions(events) == [
        (T, "WAIT", "", "RUNNING"),
        (J, "", "", "RUNNING"),
        ("job.abandoned", "", "RUNNING", "RUNNING"),
    ]
    assert events[-1].reason == "timeout"
    assert_consistent(events)


async def test_operator_cancel_ends_tracking_with_a_final_event(
    sim: SimHandle, store: Store, redis_server: LocalRedis, prefix: str
) -> None:
    job_id = await sim.create_job(job(steps((0, "RUNNING")), {"LONG": steps((0, "RUNNING"))}))
    async with running_worker(fast_settings(redis_server.url, prefix, sim.url)):
        await store.enqueue(job_id)
        await events_until(store, lambda ev: len(ev) >= 2, job_id=job_id)
        assert await cancel(store, PROJECT, job_id, who="test") == 0
        events = await events_until(store, all_final([job_id]), job_id=job_id)
    assert events[-1].event == "job.abandoned"
    assert events[-1].reason == "cancelled_by_operator"
    assert_consistent(events)
    view = await store.get_job(PROJECT, job_id)
    assert view is not None
    assert not view.tracking


async def test_re_enqueuing_a_tracked_job_changes_nothing(
    sim: SimHandle, store: Store, redis_server: LocalRedis, prefix: str
) -> None:
    job_id = await sim.create_job(
        job(steps((0, "RUNNING"), (1, "SUCCEEDED")), {"A": steps((0, "RUNNING"), (1, "SUCCEEDED"))})
    )
    async with running_worker(fast_settings(redis_server.url, prefix, sim.url)):
        await store.enqueue(job_id)
        await events_until(store, lambda ev: len(ev) >= 2, job_id=job_id)
        marker = await sim.create_job(job(steps((0, "RUNNING")), {}))
        await store.enqueue(job_id, job_id, marker)
        # one intake loop takes messages in order: the marker's first event comes after both
        await events_until(store, lambda ev: len(ev) >= 1, job_id=marker)
        await sim.advance(1)
        events = await events_until(store, all_final([job_id]), job_id=job_id)
    assert [e.seq for e in events] == [1, 2, 3, 4]
    assert_consistent(events)


BAD_MESSAGES = [
    b"",
    b"   ",
    b"x" * 20_000,
    b"\xff\xfe\x00bad",
    b"{not json",
    b'["JOB-1"]',
    b'{"project_id": "p"}',
    b"../x",
    b"JOB 1",
    b"a/b",
    b"x?y",
    b'{"job_id": "ok", "meta": "not-an-object"}',
]


async def test_bad_messages_are_dead_lettered_with_reasons_while_good_ones_are_tracked(
    sim: SimHandle, store: Store, redis_server: LocalRedis, prefix: str
) -> None:
    import json

    good = [
        await sim.create_job(job(steps((0, "SUCCEEDED")), {"A": steps((0, "SUCCEEDED"))}))
        for _ in range(2)
    ]
    async with running_worker(fast_settings(redis_server.url, prefix, sim.url)):
        await store.enqueue(good[0], *BAD_MESSAGES, good[1])
        await events_until(store, all_final(good))
        dead = []
        for _ in BAD_MESSAGES:  # block on the dead-letter list until each one has arrived
            moved = await store.redis.blmove(store.keys.dead, prefix + ":seen", 10, "RIGHT", "LEFT")
            assert moved is not None
            dead.append(json.loads(moved))
    assert len(dead) == len(BAD_MESSAGES)
    assert await store.redis.llen(store.keys.dead) == 0  # and nothing more
    assert all(d["reason"] and d["at"] for d in dead)
    assert len({d["reason"] for d in dead}) >= 8  # distinct, specific reasons
