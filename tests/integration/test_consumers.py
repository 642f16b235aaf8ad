"""The consumer's side: ``poller wait`` exit codes and timing, riding out Redis restarts,
``poller events`` starting points, consumer groups and recovery, the library helpers."""

from __future__ import annotations

import io
import json
import os
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import anyio
import pytest
from redis.asyncio import Redis

from poller.backoff import Backoff
from poller.commands import events as print_events
from poller.commands import wait
from poller.config import Settings
from poller.consumer import (
    ConsumerGroup,
    JobEvent,
    Keys,
    StreamCursor,
    WaitTimeout,
    enqueue_job,
    entry_order,
    keys_from_settings,
    stream_id_since,
    tail_events,
    wait_for_job,
)
from poller.localredis import LocalRedis, free_port
from poller.sim import SimHandle
from poller.store import Store, connect
from tests.integration.harness import (
    PROJECT,
    all_final,
    by_job,
    events_until,
    eventually,
    fast_settings,
    jobs_in_shards,
    running_worker,
)


@pytest.fixture(autouse=True)
def _plain_output(monkeypatch: pytest.MonkeyPatch) -> None:
    """Output as on a pipe, whatever the environment running the tests says about colour."""
    monkeypatch.delenv("FORCE_COLOR", raising=False)
    monkeypatch.delenv("NO_COLOR", raising=False)


class Lines(io.StringIO):
    """A text stream a test can await: ``await lines.wait_for("text")``."""

    def __init__(self) -> None:
        super().__init__()
        self._written = anyio.Event()

    def write(self, text: str) -> int:
        n = super().write(text)
        self._written.set()
        self._written = anyio.Event()
        return n

    async def wait_for(self, text: str, within: float = 20.0) -> None:
        with anyio.fail_after(within):
            while text not in self.getvalue():
                await self._written.wait()


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


async def test_wait_exits_3_when_the_job_is_abandoned(
    sim: SimHandle, store: Store, redis_server: LocalRedis, prefix: str
) -> None:
    job_id = await sim.create_job(ending("SUCCEEDED", forbidden=True))
    async with running_worker(fast_settings(redis_server.url, prefix, sim.url)):
        await store.enqueue(job_id)
        result = await wait(store, PROJECT, job_id, give_up_after=30, out=io.StringIO())
    assert result == 3


async def test_wait_exits_124_when_its_timeout_passes_first(store: Store) -> None:
    out, err = io.StringIO(), io.StringIO()
    assert await wait(store, PROJECT, "JOB-never", give_up_after=0.3, out=out, err=err) == 124
    assert out.getvalue() == ""  # stdout is for the answer; the why goes to stderr
    assert "timed out waiting for JOB-never" in err.getvalue()


async def test_wait_quiet_prints_nothing_at_all(store: Store) -> None:
    out, err = io.StringIO(), io.StringIO()
    code = await wait(store, PROJECT, "JOB-never", give_up_after=0.3, quiet=True, out=out, err=err)
    assert code == 124
    assert (out.getvalue(), err.getvalue()) == ("", "")


async def test_wait_json_prints_only_the_final_event(store: Store) -> None:
    await _publish_job(store, "JOB-j", ["RUNNING", "FAILED"])
    out = io.StringIO()
    assert await wait(store, PROJECT, "JOB-j", give_up_after=10, as_json=True, out=out) == 1
    (line,) = out.getvalue().splitlines()
    final = json.loads(line)
    assert (final["event"], final["job_id"], final["seq"]) == ("job.status_changed", "JOB-j", "2")
    assert (final["to_status"], final["terminal"]) == ("FAILED", "true")
    assert set(final) >= {"id", "observed_at", "project_id"}


async def test_wait_exits_4_when_redis_stays_unreachable_until_its_timeout() -> None:
    down = Store(connect(f"redis://127.0.0.1:{free_port()}/0"), Keys("p"))
    out, err = io.StringIO(), io.StringIO()
    started = anyio.current_time()
    try:
        code = await wait(down, PROJECT, "JOB-1", give_up_after=1.0, out=out, err=err)
    finally:
        await down.redis.aclose()
    assert code == 4
    assert anyio.current_time() - started >= 1.0  # it kept trying until the timeout
    assert "Redis unreachable" in err.getvalue()
    assert out.getvalue() == ""


async def test_wait_rides_out_a_redis_restart_and_sees_the_final_event(
    own_redis: LocalRedis,
) -> None:
    store = Store(connect(own_redis.url), Keys("restart"))
    writer = Redis.from_url(own_redis.url)
    out, err = Lines(), Lines()
    codes: list[int] = []
    try:
        await _publish_job(store, "JOB-rs", ["RUNNING"])
        async with anyio.create_task_group() as tg:

            async def waiter() -> None:
                backoff = Backoff(initial=0.05, cap=0.2)
                codes.append(
                    await wait(store, PROJECT, "JOB-rs", give_up_after=60, out=out, err=err,
                               backoff=backoff)
                )  # fmt: skip

            tg.start_soon(waiter)
            await out.wait_for("#1 ")
            await anyio.to_thread.run_sync(own_redis.kill)
            await err.wait_for("Redis unreachable")  # the waiter noticed, and keeps trying
            await anyio.to_thread.run_sync(own_redis.start)
            await _publish_job(Store(writer, Keys("restart")), "JOB-rs", ["SUCCEEDED"], seq=2)
        assert codes == [0]
        assert "Redis answers again" in err.getvalue()
        lines = out.getvalue().splitlines()
        assert [line.split("#")[1].split()[0] for line in lines] == ["1", "2"]  # each once
    finally:
        await store.redis.aclose()
        await writer.aclose()


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


async def _publish_job(
    store: Store, job_id: str, statuses: list[str], *, seq: int = 1, project: str = PROJECT
) -> None:
    """Job events as the daemon writes them to the job's stream: one per status, from ``seq``."""
    previous = ""
    for n, status in enumerate(statuses, start=seq):
        await store.redis.xadd(store.keys.job_events(job_id), {
            "event": "job.status_changed", "job_id": job_id, "project_id": project,
            "seq": str(n), "observed_at": "2026-11-27T00:00:00.000Z", "from_status": previous,
            "to_status": status, "job_status": status, "job_type": "PROVISION",
            "terminal": "true" if status in ("SUCCEEDED", "FAILED") else "false",
        })  # fmt: skip
        previous = status


async def _publish(store: Store, job_id: str, count: int) -> None:
    for seq in range(1, count + 1):
        await _publish_one(store, job_id, seq)


async def _publish_one(store: Store, job_id: str, seq: int, entry_id: str = "*") -> str:
    """One task event on the global stream of the job's shard (with one shard: the one)."""
    entry = await store.redis.xadd(store.keys.for_job(job_id).events, {
        "event": "task.status_changed", "job_id": job_id, "project_id": PROJECT,
        "seq": str(seq), "observed_at": "2026-11-27T00:00:00.000Z", "from_status": "",
        "to_status": "RUNNING", "job_status": "RUNNING", "task_id": f"T{seq}",
        "task_index": str(seq), "task_name": "X", "task_created_at": "",
        "task_updated_at": "", "messages": "{}",
    }, id=entry_id)  # fmt: skip
    return _text(entry)


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


async def test_a_following_consumer_takes_over_a_dead_peers_pending_entries(
    store: Store,
) -> None:
    await _publish(store, "JOB-p", 3)
    dead = ConsumerGroup(store.redis, store.keys.events, group="workers", consumer="a")
    assert [e.seq for e in await _take(dead.events(follow=False), 3)] == [1, 2, 3]
    # "a" dies here: seq 1..3 delivered to it, never acknowledged.  "b" is already running
    # (past its start-up recovery) when they become old enough to take over.
    await _publish(store, "JOB-p", 1)
    peer = ConsumerGroup(
        store.redis, store.keys.events, group="workers", consumer="b",
        claim_idle_ms=60_000, claim_interval=0.05, block_ms=50,
    )  # fmt: skip
    events = peer.events()
    (first,) = await _take(events, 1)  # the new entry: "a"'s are too fresh to take over yet
    (newest,) = await store.redis.xrevrange(store.keys.events, count=1)
    assert first.entry_id == _text(newest[0])
    pending = await store.redis.xpending_range(store.keys.events, "workers", "-", "+", 10, "a")
    ids = [p["message_id"] for p in pending]
    assert len(ids) == 3
    # "a" silent for two minutes, without waiting two minutes
    await store.redis.xclaim(store.keys.events, "workers", "a", 0, ids, idle=120_000, justid=True)
    taken = await _take(events, 3)  # the same iterator, no restart: its periodic claim
    assert [e.entry_id for e in taken] == [_text(i) for i in ids]
    for event in [first, *taken]:
        await peer.ack(event)
    assert (await store.redis.xpending(store.keys.events, "workers"))["pending"] == 0


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


async def _blocked_reader(redis: Redis, name: str) -> bool:
    """True when the client called ``name`` is blocked in a read (it has fixed its start)."""
    return any(
        c.get("name") == name and "b" in c.get("flags", "") for c in await redis.client_list()
    )


async def test_events_follow_shows_only_what_is_published_after_it_started(
    store: Store, redis_server: LocalRedis
) -> None:
    await _publish(store, "JOB-history", 2)
    follower = Redis.from_url(redis_server.url, client_name="events-follow")
    out = io.StringIO()
    try:
        async with anyio.create_task_group() as tg:
            tg.start_soon(lambda: print_events(
                Store(follower, store.keys), job_id=None, follow=True, as_json=True, count=2,
                out=out,
            ))  # fmt: skip
            await eventually(lambda: _blocked_reader(store.redis, "events-follow"))
            await _publish(store, "JOB-new", 2)
    finally:
        await follower.aclose()
    assert [json.loads(line)["job_id"] for line in out.getvalue().splitlines()] == [
        "JOB-new",
        "JOB-new",
    ]


async def test_events_tail_shows_the_last_n_then_follows(store: Store) -> None:
    await _publish(store, "JOB-t", 5)
    out = io.StringIO()
    await print_events(store, job_id=None, follow=False, as_json=True, tail=2, out=out)
    assert [json.loads(line)["seq"] for line in out.getvalue().splitlines()] == ["4", "5"]
    follow = Lines()
    async with anyio.create_task_group() as tg:
        tg.start_soon(lambda: print_events(
            store, job_id=None, follow=True, as_json=True, tail=1, count=2, out=follow
        ))  # fmt: skip
        await follow.wait_for('"seq": "5"')
        await _publish(store, "JOB-t2", 1)
    assert [json.loads(line)["job_id"] for line in follow.getvalue().splitlines()] == [
        "JOB-t",
        "JOB-t2",
    ]


async def test_events_without_follow_still_prints_everything_kept(store: Store) -> None:
    await _publish(store, "JOB-all", 3)
    out = io.StringIO()
    await print_events(store, job_id=None, follow=False, as_json=True, out=out)
    assert len(out.getvalue().splitlines()) == 3


class _AppendBetweenReads:
    """A Redis client that appends one event right after the first blocking read that found
    nothing: the moment a reader is between two reads."""

    def __init__(self, redis: Redis, store: Store) -> None:
        self._redis, self._store, self.appended = redis, store, False

    def __getattr__(self, name: str) -> Any:
        return getattr(self._redis, name)

    async def xread(self, *args: Any, **kwargs: Any) -> Any:
        reply = await self._redis.xread(*args, **kwargs)
        if not reply and not self.appended:
            self.appended = True
            await _publish(self._store, "JOB-between", 1)
        return reply


async def test_tail_from_now_misses_nothing_between_its_reads(store: Store) -> None:
    """``$`` means "after what is there when the tail starts", fixed once: an event appended
    after a blocking read came back empty and before the next one starts is delivered."""
    await _publish(store, "JOB-before", 1)
    redis: Any = _AppendBetweenReads(store.redis, store)
    (event,) = await _take(tail_events(redis, store.keys, start="$", block_ms=1), 1)
    assert redis.appended
    assert event.job_id == "JOB-between"


async def test_wait_for_job_returns_the_final_event_of_the_project_asked_for(
    store: Store,
) -> None:
    await _publish_job(store, "JOB-w", ["RUNNING", "SUCCEEDED"], project="other")
    await _publish_job(store, "JOB-w", ["RUNNING", "FAILED"], seq=3)
    seen: list[int] = []
    final = await wait_for_job(
        store.redis, store.keys, "JOB-w", PROJECT, timeout=10, on_event=lambda e: seen.append(e.seq)
    )
    assert (final.seq, final.to_status, final.is_final) == (4, "FAILED", True)
    assert seen == [3, 4]


async def test_wait_for_job_times_out_saying_redis_was_fine(store: Store) -> None:
    await _publish_job(store, "JOB-slow", ["RUNNING"])
    with pytest.raises(WaitTimeout) as caught:
        await wait_for_job(store.redis, store.keys, "JOB-slow", timeout=0.3)
    assert caught.value.redis_error is None


async def test_enqueue_job_then_wait_for_job_through_a_real_worker(
    sim: SimHandle, store: Store, redis_server: LocalRedis, prefix: str
) -> None:
    job_id = await sim.create_job(ending("SUCCEEDED"))
    async with running_worker(fast_settings(redis_server.url, prefix, sim.url)):
        message = await enqueue_job(store.redis, store.keys, job_id, meta={"change": "CHG-7"})
        assert json.loads(message) == {"job_id": job_id, "meta": {"change": "CHG-7"}}
        async with anyio.create_task_group() as tg:
            finals: list[JobEvent] = []

            async def waiter() -> None:
                finals.append(await wait_for_job(store.redis, store.keys, job_id, timeout=30))

            tg.start_soon(waiter)
            await events_until(store, lambda ev: len(ev) >= 2, job_id=job_id)
            await sim.advance(1)
    (final,) = finals
    assert (final.event, final.to_status, final.meta) == (
        "job.status_changed",
        "SUCCEEDED",
        {"change": "CHG-7"},
    )


async def test_enqueue_job_refuses_an_invalid_message_and_pushes_nothing(store: Store) -> None:
    with pytest.raises(ValueError, match="invalid job_id"):
        await enqueue_job(store.redis, store.keys, "../etc")
    with pytest.raises(ValueError, match="invalid project_id"):
        await enqueue_job(store.redis, store.keys, "JOB-1", project_id="a/b")
    assert await store.redis.llen(store.keys.intake) == 0
    assert await enqueue_job(store.redis, store.keys, "JOB-1") == "JOB-1"
    assert await store.redis.lrange(store.keys.intake, 0, -1) == [b"JOB-1"]


@pytest.mark.usefixtures("_no_poller_env")
def test_keys_come_from_the_settings_the_daemon_reads(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    assert keys_from_settings().intake == "poller:jobs"
    config = tmp_path / "poller.toml"
    config.write_text('key_prefix = "from-file"\n')
    monkeypatch.setenv("POLLER_CONFIG", str(config))
    assert keys_from_settings().intake == "from-file:jobs"
    monkeypatch.setenv("POLLER_KEY_PREFIX", "{team-a}")  # the environment wins, as in the daemon
    assert keys_from_settings().events == "{team-a}:events"
    assert keys_from_settings(Settings(key_prefix="x")).intake == "x:jobs"


@pytest.fixture
def _no_poller_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in [k for k in os.environ if k.startswith("POLLER_")]:
        monkeypatch.delenv(name)


@pytest.mark.usefixtures("_no_poller_env")
async def test_the_readmes_python_example_works(
    store: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    readme = (Path(__file__).parents[2] / "README.md").read_text()
    start = readme.index("```python\nimport asyncio\n")
    code = readme[start + len("```python\n") : readme.index("```", start + 10)]
    assert "asyncio.run(main())" in code
    namespace: dict[str, Any] = {}
    exec(compile(code.replace("asyncio.run(main())", ""), "README.md", "exec"), namespace)  # noqa: S102
    monkeypatch.setenv("POLLER_KEY_PREFIX", store.keys.prefix)
    await _publish_job(store, "JOB-readme", ["RUNNING", "SUCCEEDED"])
    assert await namespace["deploy_and_wait"](store.redis, "JOB-readme") == "SUCCEEDED"
    assert json.loads(await store.redis.rpop(store.keys.intake)) == {
        "job_id": "JOB-readme",
        "meta": {"change": "CHG-42"},
    }


# --- several shards: every reader reads every shard's global stream ---------------------------

SHARDS = 3


@pytest.fixture
async def sharded(redis_server: LocalRedis, prefix: str) -> AsyncIterator[Store]:
    """A store whose jobs spread over three shards, on the one test server (the same code
    path as a cluster's, but for the slots)."""
    s = Store(connect(redis_server.url), Keys(prefix, SHARDS), retention=3600, maxlen=10_000)
    yield s
    await s.redis.aclose()


async def _blocked_readers(redis: Redis, name: str) -> int:
    """How many connections of the client called ``name`` are blocked in a read."""
    return sum(
        c.get("name") == name and "b" in c.get("flags", "") for c in await redis.client_list()
    )


def _seqs(events: list[JobEvent]) -> dict[str, list[int]]:
    return {job: [e.seq for e in evs] for job, evs in by_job(events).items()}


async def test_tail_events_reads_every_shard_in_entry_id_order_keeping_each_jobs_order(
    sharded: Store,
) -> None:
    jobs = jobs_in_shards(SHARDS, 2)
    assert {sharded.keys.shard_index(j) for j in jobs} == set(range(SHARDS))
    for seq in (1, 2, 3):
        for job in jobs:
            await _publish_one(sharded, job, seq)
    got = [e async for e in tail_events(sharded.redis, sharded.keys, follow=False)]
    assert _seqs(got) == {job: [1, 2, 3] for job in jobs}
    assert all(e.stream == sharded.keys.for_job(e.job_id).events for e in got)
    order = [entry_order(e.entry_id) for e in got]
    assert order == sorted(order)


async def test_a_cursor_over_shards_merges_a_backlog_in_entry_id_order(sharded: Store) -> None:
    """Pages of two: a merge of whatever each stream returned would put shard 0's 3-0 after
    the others' 4-0 and 7-0; only up to the lowest full page's end is returned at a time."""
    a, b, c = jobs_in_shards(SHARDS)
    layout = {a: [1, 2, 3, 10, 11], b: [4, 5, 6], c: [7]}
    for job, ids in layout.items():
        for seq, ms in enumerate(ids, start=1):
            await _publish_one(sharded, job, seq, entry_id=f"{ms}-0")
    cursor = await StreamCursor.start_at(sharded.redis, sharded.keys.event_streams, count=2)
    seen = []
    while batch := await cursor.fetch():
        for entry in batch:
            cursor.advance(entry)
            seen.append(entry.entry_id)
    assert seen == [f"{ms}-0" for ms in (1, 2, 3, 4, 5, 6, 7, 10, 11)]
    assert cursor.positions == {
        sharded.keys.for_job(a).events: "11-0",
        sharded.keys.for_job(b).events: "6-0",
        sharded.keys.for_job(c).events: "7-0",
    }


async def test_tail_from_now_waits_on_every_shard_and_sees_each_ones_new_events(
    sharded: Store, redis_server: LocalRedis
) -> None:
    jobs = jobs_in_shards(SHARDS)
    for job in jobs:
        await _publish_one(sharded, job, 1)  # history in every shard: not shown
    follower = Redis.from_url(redis_server.url, client_name="tail-shards")
    got: list[JobEvent] = []
    try:
        async with anyio.create_task_group() as tg:

            async def reader() -> None:
                events = tail_events(follower, sharded.keys, start="$", block_ms=4000)
                got.extend(await _take(events, SHARDS))

            tg.start_soon(reader)
            # one blocking read per shard stream at once: a new event on any of them wakes it
            await eventually(lambda: _waiting(sharded.redis, "tail-shards", SHARDS))
            for job in reversed(jobs):
                await _publish_one(sharded, job, 2)
    finally:
        await follower.aclose()
    assert sorted((e.job_id, e.seq) for e in got) == sorted((job, 2) for job in jobs)


async def _waiting(redis: Redis, name: str, n: int) -> bool:
    return await _blocked_readers(redis, name) >= n


async def test_tail_from_now_over_shards_misses_nothing_between_its_reads(
    sharded: Store,
) -> None:
    for job in jobs_in_shards(SHARDS):
        await _publish_one(sharded, job, 1)
    redis: Any = _AppendBetweenReads(sharded.redis, sharded)
    (event,) = await _take(tail_events(redis, sharded.keys, start="$", block_ms=1), 1)
    assert redis.appended
    assert (event.job_id, event.stream) == (
        "JOB-between",
        sharded.keys.for_job("JOB-between").events,
    )


async def test_a_group_over_every_shard_delivers_each_event_once_and_acks_where_it_came_from(
    sharded: Store,
) -> None:
    keys = sharded.keys
    jobs = jobs_in_shards(SHARDS)
    for seq in (1, 2, 3):
        for job in jobs:
            await _publish_one(sharded, job, seq)
    group = ConsumerGroup.for_events(sharded.redis, keys, group="notify", consumer="a", count=2)
    assert group.streams == keys.event_streams
    got = [e async for e in group.events(follow=False)]
    assert len(got) == 3 * len(jobs)  # each once
    assert _seqs(got) == {job: [1, 2, 3] for job in jobs}
    kept = jobs[-1]  # everything else acknowledged: on the stream each event came from
    for event in got:
        if event.job_id != kept:
            await group.ack(event)
    pending = {
        s: (await sharded.redis.xpending(s, "notify"))["pending"] for s in keys.event_streams
    }
    assert pending == {s: 3 if s == keys.for_job(kept).events else 0 for s in keys.event_streams}
    again = ConsumerGroup.for_events(sharded.redis, keys, group="notify", consumer="a")
    assert [(e.job_id, e.seq) async for e in again.events(follow=False)] == [
        (kept, 1), (kept, 2), (kept, 3)
    ]  # fmt: skip
    # "a" dies here; "b" takes over what it left, whichever shard it is in
    rescuer = ConsumerGroup.for_events(
        sharded.redis, keys, group="notify", consumer="b", claim_idle_ms=0
    )
    recovered = [e async for e in rescuer.events(follow=False)]
    assert [(e.job_id, e.seq) for e in recovered] == [(kept, 1), (kept, 2), (kept, 3)]
    for event in recovered:
        await rescuer.ack(event)
    for stream in keys.event_streams:
        assert (await sharded.redis.xpending(stream, "notify"))["pending"] == 0
    stray = JobEvent.from_entry(got[0].entry_id, dict(got[0].fields))  # read from nowhere
    with pytest.raises(ValueError, match="not read from this group"):
        await rescuer.ack(stray)


async def test_a_following_group_over_shards_wakes_for_a_new_event_on_any_shard(
    sharded: Store, redis_server: LocalRedis
) -> None:
    jobs = jobs_in_shards(SHARDS)
    follower = Redis.from_url(redis_server.url, client_name="group-shards")
    try:
        group = ConsumerGroup.for_events(
            follower, sharded.keys, group="g", consumer="c", start="$", block_ms=4000
        )
        events = group.events()
        async with anyio.create_task_group() as tg:
            got: list[JobEvent] = []

            async def reader() -> None:
                got.extend(await _take(events, 2))

            tg.start_soon(reader)
            await eventually(lambda: _waiting(sharded.redis, "group-shards", SHARDS))
            await _publish_one(sharded, jobs[2], 1)
            await _publish_one(sharded, jobs[0], 1)
        assert sorted(e.job_id for e in got) == sorted([jobs[0], jobs[2]])
        for event in got:
            await group.ack(event)
    finally:
        await follower.aclose()
    for stream in sharded.keys.event_streams:
        assert (await sharded.redis.xpending(stream, "g"))["pending"] == 0


async def test_a_following_group_over_shards_takes_over_a_dead_peers_entries_on_every_shard(
    sharded: Store,
) -> None:
    keys = sharded.keys
    jobs = jobs_in_shards(SHARDS)
    for job in jobs:
        await _publish_one(sharded, job, 1)
    dead = ConsumerGroup.for_events(sharded.redis, keys, group="workers", consumer="a")
    assert len(await _take(dead.events(follow=False), SHARDS)) == SHARDS
    # "a" dies with one entry pending in every shard; "b" is running past its start-up claim
    await _publish_one(sharded, jobs[1], 2)
    peer = ConsumerGroup.for_events(
        sharded.redis, keys, group="workers", consumer="b",
        claim_idle_ms=60_000, claim_interval=0.05, block_ms=50,
    )  # fmt: skip
    events = peer.events()
    (first,) = await _take(events, 1)
    assert (first.job_id, first.seq) == (jobs[1], 2)
    for stream in keys.event_streams:  # "a" silent for two minutes, without waiting two minutes
        pending = await sharded.redis.xpending_range(stream, "workers", "-", "+", 10, "a")
        ids = [p["message_id"] for p in pending]
        assert len(ids) == 1
        await sharded.redis.xclaim(stream, "workers", "a", 0, ids, idle=120_000, justid=True)
    taken = await _take(events, SHARDS)  # the same iterator: its periodic claim
    assert sorted((e.job_id, e.seq) for e in taken) == sorted((job, 1) for job in jobs)
    assert {e.stream for e in taken} == set(keys.event_streams)
    for event in [first, *taken]:
        await peer.ack(event)
    for stream in keys.event_streams:
        assert (await sharded.redis.xpending(stream, "workers"))["pending"] == 0


async def test_events_over_shards_tail_merges_then_follows_every_shard(sharded: Store) -> None:
    a, b, c = jobs_in_shards(SHARDS)
    for job, ms in [(a, 1), (b, 2), (c, 3), (a, 4), (b, 5), (c, 6)]:
        await _publish_one(sharded, job, ms, entry_id=f"{ms}-0")
    out = io.StringIO()
    await print_events(sharded, job_id=None, follow=False, as_json=True, tail=4, out=out)
    assert [json.loads(line)["id"] for line in out.getvalue().splitlines()] == [
        "3-0", "4-0", "5-0", "6-0"
    ]  # fmt: skip
    everything = io.StringIO()
    await print_events(sharded, job_id=None, follow=False, as_json=True, out=everything)
    assert [json.loads(line)["id"] for line in everything.getvalue().splitlines()] == [
        f"{ms}-0" for ms in range(1, 7)
    ]
    since = io.StringIO()
    await print_events(sharded, job_id=None, follow=False, as_json=True, since="4-0", out=since)
    assert [json.loads(line)["id"] for line in since.getvalue().splitlines()] == ["5-0", "6-0"]
    follow = Lines()
    async with anyio.create_task_group() as tg:
        tg.start_soon(lambda: print_events(
            sharded, job_id=None, follow=True, as_json=True, tail=1, count=3, out=follow
        ))  # fmt: skip
        await follow.wait_for('"id": "6-0"')
        # each shard's next entry follows on from that shard's own newest, not from 6-0
        await _publish_one(sharded, b, 3, entry_id="5-1")
        await _publish_one(sharded, a, 3, entry_id="4-1")
    lines = [json.loads(line) for line in follow.getvalue().splitlines()]
    assert lines[0]["id"] == "6-0"
    assert sorted(line["id"] for line in lines[1:]) == ["4-1", "5-1"]


async def test_events_group_over_shards_prints_and_acknowledges_each_once(
    sharded: Store,
) -> None:
    jobs = jobs_in_shards(SHARDS)
    for job in jobs:
        await _publish_one(sharded, job, 1)
    out = io.StringIO()
    await print_events(sharded, job_id=None, follow=False, as_json=True, group="cli", out=out)
    assert sorted(json.loads(line)["job_id"] for line in out.getvalue().splitlines()) == sorted(
        jobs
    )
    await _publish_one(sharded, jobs[1], 2)
    again = io.StringIO()
    await print_events(sharded, job_id=None, follow=False, as_json=True, group="cli", out=again)
    assert [(d["job_id"], d["seq"]) for d in map(json.loads, again.getvalue().splitlines())] == [
        (jobs[1], "2")
    ]


async def test_wait_finds_a_jobs_events_in_its_shard(sharded: Store) -> None:
    for job in jobs_in_shards(SHARDS):
        await _publish_job(sharded, job, ["RUNNING", "SUCCEEDED"])
        out = io.StringIO()
        assert await wait(sharded, PROJECT, job, give_up_after=10, as_json=True, out=out) == 0
        assert json.loads(out.getvalue())["job_id"] == job


async def test_a_real_worker_over_shards_publishes_what_tail_events_reads(
    sim: SimHandle, redis_server: LocalRedis, prefix: str, sharded: Store
) -> None:
    """The daemon's own write path with three shards, read back through every shard."""
    job_ids = [await sim.create_job(ending("SUCCEEDED")) for _ in range(6)]
    assert len({sharded.keys.shard_index(j) for j in job_ids}) > 1
    settings = fast_settings(redis_server.url, prefix, sim.url, shards=SHARDS)
    async with running_worker(settings):
        await sharded.enqueue(*job_ids)
        await events_until(sharded, lambda ev: len({e.job_id for e in ev}) == len(job_ids))
        await sim.advance(1)
        seen = await events_until(sharded, all_final(job_ids))
    for job_id, events in by_job(seen).items():
        assert [e.seq for e in events] == list(range(1, len(events) + 1)), job_id
        assert {e.stream for e in events} == {sharded.keys.for_job(job_id).events}
