"""Dead letters from the operator's side: ``poller dead list`` and ``poller dead requeue``."""

from __future__ import annotations

import io
import json

import anyio
import pytest

from poller.commands import CommandError, dead_list, dead_requeue
from poller.intake import parse_message
from poller.store import Store
from poller.store.store import Delivery


async def dead_letter(store: Store, raw: bytes, reason: str, age: float = 0.0) -> None:
    """Park ``raw`` the way the daemon does, ``age`` seconds ago."""
    await store.redis.lpush(store.keys.inflight("r1"), raw)
    await store.dead_letter("r1", Delivery.of(raw), reason, await store.server_time() - age)


async def listed(store: Store) -> list[dict[str, object]]:
    out = io.StringIO()
    assert await dead_list(store, as_json=True, out=out) == 0
    return [json.loads(line) for line in out.getvalue().splitlines()]


async def queued(store: Store) -> list[str]:
    """The intake queue in the order replicas will take it (they take from the right)."""
    return [m.decode() for m in reversed(await store.redis.lrange(store.keys.intake, 0, -1))]


@pytest.fixture
async def three(store: Store) -> Store:
    await dead_letter(store, b"../etc", 'invalid job_id "../etc"', age=7200)
    await dead_letter(store, b'{"job_id": "JOB-1"', "bad JSON: Expecting ',' delimiter", age=90)
    await dead_letter(store, b"JOB-2", "project_conflict: tracked under project other")
    return store


async def test_dead_list_shows_number_age_reason_and_raw_oldest_first(three: Store) -> None:
    docs = await listed(three)
    assert [(d["index"], d["raw"]) for d in docs] == [
        (0, "../etc"),
        (1, '{"job_id": "JOB-1"'),
        (2, "JOB-2"),
    ]
    assert docs[0]["reason"] == 'invalid job_id "../etc"'
    ages = [d["age_seconds"] for d in docs]
    assert isinstance(ages[0], float)
    assert 7200 <= ages[0] < 7260
    assert isinstance(ages[1], float)
    assert 90 <= ages[1] < 150
    assert all(isinstance(d["at"], str) and d["at"].endswith("Z") for d in docs)
    text = io.StringIO()
    await dead_list(three, out=text)
    first, second, _ = text.getvalue().splitlines()
    assert first.split()[:2] == ["0", "2h00m"]
    assert 'invalid job_id "../etc"' in first
    assert 'raw="../etc"' in first
    assert second.split()[:2] == ["1", "1m30s"]


async def test_numbers_stay_put_while_new_dead_letters_arrive(three: Store) -> None:
    before = await listed(three)
    await dead_letter(three, b"JOB 3", "invalid job_id")
    after = await listed(three)
    assert after[:3] == [
        {**d, "age_seconds": a["age_seconds"]} for d, a in zip(before, after[:3], strict=True)
    ]
    assert after[3]["raw"] == "JOB 3"


async def test_an_unreadable_record_is_listed_not_fatal(store: Store) -> None:
    await store.redis.lpush(store.keys.dead, "not a record")
    (doc,) = await listed(store)
    assert doc["raw"] is None
    assert doc["reason"] == "(unreadable dead-letter record)"
    with pytest.raises(CommandError, match="unreadable"):
        await dead_requeue(store, [0], out=io.StringIO())


async def test_requeue_moves_the_chosen_messages_back_to_intake_in_their_order(
    three: Store,
) -> None:
    out = io.StringIO()
    assert await dead_requeue(three, [2, 0], out=out) == 0
    assert await queued(three) == ["../etc", "JOB-2"]  # oldest first
    assert [d["raw"] for d in await listed(three)] == ['{"job_id": "JOB-1"']
    assert out.getvalue().splitlines() == ["requeued #0: ../etc", "requeued #2: JOB-2"]


async def test_requeue_all_moves_every_readable_one_and_leaves_the_rest(three: Store) -> None:
    await three.redis.lpush(three.keys.dead, "garbage")
    out = io.StringIO()
    await dead_requeue(three, None, out=out)
    assert await queued(three) == ["../etc", '{"job_id": "JOB-1"', "JOB-2"]
    assert await three.redis.lrange(three.keys.dead, 0, -1) == [b"garbage"]
    assert out.getvalue().splitlines()[-1] == "3 requeued, 1 unreadable left"


async def test_requeue_all_takes_only_what_was_there_when_it_started(store: Store) -> None:
    """A requeued message that is still invalid comes back as a new dead letter; ``--all``
    does not chase it round and round."""
    for n in range(5):
        await dead_letter(store, f"bad {n}".encode(), "invalid job_id")
    out = io.StringIO()
    async with anyio.create_task_group() as tg:

        async def daemon() -> None:  # dead-letters again whatever is queued, as a replica would
            while True:
                inflight = store.keys.inflight("r1")
                raw = await store.redis.blmove(store.keys.intake, inflight, 0.05, "RIGHT", "LEFT")
                if raw is not None:
                    now = await store.server_time()
                    await store.dead_letter("r1", Delivery.of(raw), "invalid job_id", now)

        tg.start_soon(daemon)
        with anyio.fail_after(20):
            await dead_requeue(store, None, out=out, batch=2)
        tg.cancel_scope.cancel()
    lines = out.getvalue().splitlines()
    assert lines[:-1] == [f"requeued bad {n}" for n in range(5)]
    assert lines[-1] == "5 requeued"


async def test_a_record_requeued_twice_at_once_is_queued_once(store: Store) -> None:
    await dead_letter(store, b"JOB-once", "project_conflict")
    results: list[object] = []

    async def requeue() -> None:
        try:
            results.append(await dead_requeue(store, [0], out=io.StringIO()))
        except CommandError as exc:
            results.append(exc)

    async with anyio.create_task_group() as tg:
        tg.start_soon(requeue)
        tg.start_soon(requeue)
    assert await queued(store) == ["JOB-once"]
    assert await store.redis.llen(store.keys.dead) == 0


async def test_requeue_of_a_number_not_listed_moves_nothing(three: Store) -> None:
    with pytest.raises(CommandError, match="no dead letter #7"):
        await dead_requeue(three, [0, 7], out=io.StringIO())
    assert await queued(three) == []
    assert len(await listed(three)) == 3


async def test_a_requeued_message_is_a_message_again(three: Store) -> None:
    await dead_requeue(three, [2], out=io.StringIO())
    (raw,) = await three.redis.lrange(three.keys.intake, 0, -1)
    admission = parse_message(raw, "proj")
    assert getattr(admission, "job_id", None) == "JOB-2"
