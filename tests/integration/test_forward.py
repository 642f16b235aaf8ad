"""``poller forward``: Standard Webhooks delivery through a consumer group, against a real
Redis and a local aiohttp receiver that verifies every signature with the ``standardwebhooks``
reference library."""

from __future__ import annotations

import base64
import os
import random
import signal
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import anyio
import anyio.abc
import pytest
from aiohttp import web
from redis.asyncio import Redis
from standardwebhooks import Webhook
from standardwebhooks.webhooks import WebhookVerificationError

from poller.forward import Forwarder, ForwardOptions, Retries, WebhookSecret, sign, webhook_body
from poller.forward.forwarder import dead_records, parse_retry_after
from poller.localredis import LocalRedis, free_port
from poller.store import Keys, Store, connect
from tests.integration.harness import eventually, jobs_in_shards
from tests.scrape import scraped

SECRET = "whsec_" + base64.b64encode(b"forward-test-secret-0123456789ab").decode()

Behaviour = Callable[["Receiver", str, int, web.Request], Awaitable[web.StreamResponse]]


async def ok(_: Receiver, __: str, ___: int, ____: web.Request) -> web.StreamResponse:
    return web.Response(status=204)


@dataclass
class Receiver:
    """A webhook endpoint: verifies each request, asks ``behave`` for the answer, records."""

    behave: Behaviour = ok
    attempts: dict[str, list[float]] = field(default_factory=dict)  # id -> monotonic times
    accepted: list[str] = field(default_factory=list)  # ids answered 2xx, in order
    payloads: dict[str, Any] = field(default_factory=dict)
    bad: list[str] = field(default_factory=list)  # verification or ordering problems
    last_seq: dict[str, int] = field(default_factory=dict)
    url: str = ""
    check_order: bool = True

    async def handle(self, request: web.Request) -> web.StreamResponse:
        body = await request.read()
        try:
            payload = Webhook(SECRET).verify(body, dict(request.headers))
        except WebhookVerificationError as exc:
            self.bad.append(f"signature: {exc}")
            return web.Response(status=400)
        if request.headers.get("Content-Type") != "application/json":
            self.bad.append(f"content type {request.headers.get('Content-Type')}")
        msg_id = request.headers["webhook-id"]
        tries = self.attempts.setdefault(msg_id, [])
        tries.append(time.monotonic())
        resp = await self.behave(self, msg_id, len(tries), request)
        if 200 <= resp.status < 300:
            data = payload["data"]
            job, seq = data["job_id"], int(data["seq"])
            if msg_id != f"{job}:{seq}":
                self.bad.append(f"webhook-id {msg_id} for {job}:{seq}")
            if msg_id not in self.payloads:  # a first acceptance: must be the job's next one
                if self.check_order and seq != self.last_seq.get(job, 0) + 1:
                    self.bad.append(f"{msg_id} after {job}:{self.last_seq.get(job, 0)}")
                self.last_seq[job] = max(seq, self.last_seq.get(job, 0))
                self.payloads[msg_id] = payload
            self.accepted.append(msg_id)
        return resp

    def has(self, ids: set[str]) -> bool:
        return ids <= set(self.payloads)


@asynccontextmanager
async def receiving(behave: Behaviour = ok) -> AsyncIterator[Receiver]:
    receiver = Receiver(behave)
    app = web.Application()
    app.router.add_post("/hook", receiver.handle)
    runner = web.AppRunner(app, access_log=None, shutdown_timeout=0.1)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    receiver.url = f"http://127.0.0.1:{port}/hook"
    try:
        yield receiver
    finally:
        await runner.cleanup()


def options(url: str, *, max_attempts: int = 8, **kw: Any) -> ForwardOptions:
    values: dict[str, Any] = {
        "webhook": url,
        "secret": WebhookSecret.parse(SECRET),
        "consumer": f"c-{random.getrandbits(32):08x}",
        "start": "0-0",
        "retries": Retries(max_attempts, backoff_initial=0.01, backoff_max=0.05),
        "timeout": 5.0,
        "block_ms": 200,
        "claim_idle": 30.0,
        "claim_interval": 10.0,
    }
    values.update(kw)
    return ForwardOptions(**values)


@asynccontextmanager
async def forwarding(store: Store, url: str, **kw: Any) -> AsyncIterator[Forwarder]:
    """A forwarder running in-process for the body of the ``async with``."""
    fwd = Forwarder(store.redis, store.keys, options(url, **kw))
    async with anyio.create_task_group() as tg:
        await tg.start(fwd.run)
        try:
            yield fwd
        finally:
            tg.cancel_scope.cancel()


async def publish(
    redis: Redis, keys: Keys, job_id: str, seq: int, *, kind: str = "task.status_changed",
    to: str = "RUNNING", job_type: str = "PROVISION", **extra: str,
) -> str:  # fmt: skip
    """XADD one event in the contract's shape to the global stream of the job's shard (with
    one shard: the global stream) and to the job's stream."""
    fields = {
        "event": kind,
        "job_id": job_id,
        "project_id": "proj-test",
        "seq": str(seq),
        "observed_at": f"2026-01-01T00:00:{seq:02d}.000Z",
        "from_status": "" if seq == 1 else "RUNNING",
        "to_status": to,
        "job_status": to if kind != "task.status_changed" else "RUNNING",
    }
    if kind == "task.status_changed":
        fields |= {"task_id": f"t{seq}", "task_index": str(seq), "task_name": f"T{seq}"}
    if kind == "job.status_changed":
        terminal = to in ("SUCCEEDED", "FAILED", "CANCELLED", "PARTIALLY_FAILED", "ROLLBACKED")
        fields |= {"job_type": job_type, "terminal": "true" if terminal else "false"}
    fields |= extra
    entry = await redis.xadd(keys.for_job(job_id).events, fields)  # type: ignore[arg-type]
    await redis.xadd(keys.job_events(job_id), fields)  # type: ignore[arg-type]
    return entry.decode() if isinstance(entry, bytes) else str(entry)


async def publish_jobs(
    store: Store,
    jobs: int,
    per_job: int,
    *,
    tag: str = "J",
    first: int = 1,
    job_ids: list[str] | None = None,
) -> set[str]:
    """``jobs`` jobs (``{tag}{n}``, or ``job_ids``) of events ``first`` .. ``per_job``,
    interleaved; their webhook IDs."""
    ids = set()
    names = job_ids if job_ids is not None else [f"{tag}{j}" for j in range(jobs)]
    for seq in range(first, per_job + 1):
        for job in names:
            last = seq == per_job
            await publish(
                store.redis, store.keys, job, seq,
                kind="job.status_changed" if last else "task.status_changed",
                to="SUCCEEDED" if last else "RUNNING",
            )  # fmt: skip
            ids.add(f"{job}:{seq}")
    return ids


async def pending(store: Store, group: str = "forward") -> int:
    """Entries pending in ``group``, over every shard's stream."""
    total = 0
    for stream in store.keys.event_streams:
        total += int((await store.redis.xpending(stream, group))["pending"])
    return total


def test_signature_matches_the_reference_library() -> None:
    secret = WebhookSecret.parse(SECRET)
    body = webhook_body({"event": "job.status_changed", "observed_at": "x", "job_id": "J"})
    assert sign(secret, "J:1", 1_700_000_000, body) == Webhook(SECRET).sign(
        "J:1", __import__("datetime").datetime.fromtimestamp(1_700_000_000), body.decode()
    )
    assert "forward-test" not in repr(secret)
    with pytest.raises(ValueError, match="whsec_"):
        WebhookSecret.parse("not-a-secret")
    assert parse_retry_after("3") == 3.0
    assert parse_retry_after("Thu, 01 Jan 2026 00:00:10 GMT", now=1767225600.0) == 10.0


async def test_every_event_delivered_signed_in_the_contract_shape(store: Store) -> None:
    async with receiving() as rx:
        ids = await publish_jobs(store, jobs=5, per_job=6)
        async with forwarding(store, rx.url, concurrency=4):
            await eventually(lambda: rx.has(ids))
            await eventually(lambda: _zero(pending(store)))
    assert not rx.bad
    assert set(rx.attempts) == ids  # nothing but these, each by its idempotency key
    sample = rx.payloads["J0:6"]
    assert sample["type"] == "job.status_changed"
    assert sample["timestamp"] == "2026-01-01T00:00:06.000Z"
    assert sample["data"]["terminal"] == "true"
    assert sample["data"]["job_type"] == "PROVISION"
    assert rx.payloads["J1:2"]["data"]["task_name"] == "T2"


async def _zero(n: Awaitable[int]) -> bool:
    return await n == 0


async def test_retried_after_500_honouring_retry_after(store: Store) -> None:
    async def flaky(_: Receiver, __: str, n: int, ___: web.Request) -> web.StreamResponse:
        if n == 1:
            return web.Response(status=500, headers={"Retry-After": "1"})
        return web.Response(status=200)

    async with receiving(flaky) as rx:
        await publish(store.redis, store.keys, "R1", 1)
        async with forwarding(store, rx.url, max_attempts=3) as fwd:
            await eventually(lambda: rx.has({"R1:1"}))
            await eventually(lambda: _zero(pending(store)))
    first, second = rx.attempts["R1:1"]
    assert second - first >= 0.95  # backoff alone would be <= 0.05 s
    assert scraped(fwd.metrics, "poller_forward_retried_total", cause="500") == 1
    assert scraped(fwd.metrics, "poller_forward_delivered_total") == 1
    assert not rx.bad


async def test_timeout_and_connection_reset_are_retried(store: Store) -> None:
    async def rude(_: Receiver, __: str, n: int, request: web.Request) -> web.StreamResponse:
        if n == 1:
            await anyio.sleep(1)  # beyond the forwarder's timeout
            return web.Response(status=504)  # nobody is listening any more
        if n == 2:
            assert request.transport is not None
            request.transport.abort()  # connection reset
            return web.Response(status=502)  # never sent
        return web.Response(status=200)

    async with receiving(rude) as rx:
        await publish(store.redis, store.keys, "T1", 1)
        async with forwarding(store, rx.url, timeout=0.3, max_attempts=5) as fwd:
            await eventually(lambda: rx.has({"T1:1"}))
    assert len(rx.attempts["T1:1"]) == 3
    assert scraped(fwd.metrics, "poller_forward_retried_total", cause="timeout") == 1
    assert scraped(fwd.metrics, "poller_forward_retried_total", cause="error") == 1


async def test_parked_after_max_attempts(store: Store) -> None:
    async def down(_: Receiver, __: str, ___: int, ____: web.Request) -> web.StreamResponse:
        return web.Response(status=503, text="maintenance")

    async with receiving(down) as rx:
        await publish(store.redis, store.keys, "D1", 1, kind="job.status_changed", to="FAILED")
        async with forwarding(store, rx.url, max_attempts=3) as fwd:
            await eventually(lambda: _nonempty(store.redis.llen(store.keys.forward_dead)))
            await eventually(lambda: _zero(pending(store)))
    assert store.keys.forward_dead == f"{store.keys.prefix}:forward:dead"
    (record,) = await dead_records(store.redis, store.keys)
    assert record["attempts"] == 3
    assert record["error"] == "HTTP 503"
    assert record["webhook_id"] == "D1:1"
    assert record["event"]["to_status"] == "FAILED"
    assert len(rx.attempts["D1:1"]) == 3
    assert scraped(fwd.metrics, "poller_forward_parked_total") == 1


async def _nonempty(n: Awaitable[int]) -> bool:
    return await n > 0


async def test_per_job_order_under_concurrency(store: Store) -> None:
    """Two forwarders in one group, many jobs, a slow and flaky receiver: each job's events
    are first accepted in seq order, all of them."""
    rng = random.Random(7)

    async def jittery(_: Receiver, __: str, ___: int, ____: web.Request) -> web.StreamResponse:
        await anyio.sleep(rng.uniform(0, 0.01))
        return web.Response(status=500 if rng.random() < 0.2 else 200)

    async with receiving(jittery) as rx:
        ids = await publish_jobs(store, jobs=12, per_job=8)
        async with (
            forwarding(store, rx.url, concurrency=8, prefetch=10, max_attempts=50),
            forwarding(store, rx.url, concurrency=8, prefetch=10, max_attempts=50),
        ):
            more = await publish_jobs(store, jobs=4, per_job=10, tag="K")
            await eventually(lambda: rx.has(ids | more), within=60)
            await eventually(lambda: _zero(pending(store)))
    assert not rx.bad, rx.bad[:5]
    assert await store.redis.llen(store.keys.forward_dead) == 0


async def test_filters(store: Store) -> None:
    async with receiving() as kinds, receiving() as finals, receiving() as typed:
        for rx in (kinds, finals, typed):
            rx.check_order = False
        await publish(store.redis, store.keys, "F1", 1)
        await publish(store.redis, store.keys, "F1", 2, kind="job.status_changed", to="RUNNING")
        await publish(store.redis, store.keys, "F1", 3, kind="job.status_changed", to="FAILED")
        await publish(
            store.redis, store.keys, "F2", 1, kind="job.status_changed", to="RUNNING",
            job_type="DEPLOY",
        )  # fmt: skip
        await publish(
            store.redis, store.keys, "F3", 1, kind="job.abandoned", to="", reason="timeout"
        )
        async with (
            forwarding(store, kinds.url, group="g-kinds", events=frozenset({"job.abandoned"})),
            forwarding(store, finals.url, group="g-finals", terminal_only=True),
            forwarding(store, typed.url, group="g-typed", job_types=frozenset({"DEPLOY"})),
        ):
            for group in ("g-kinds", "g-finals", "g-typed"):
                await eventually(lambda g=group: _zero(pending(store, g)))  # type: ignore[misc]
                info = await store.redis.xinfo_groups(store.keys.events)
                lag = {i["name"].decode(): i["lag"] for i in info}
                assert lag[group] == 0  # everything read, and (pending 0) acked
    assert set(kinds.attempts) == {"F3:1"}
    assert set(finals.attempts) == {"F1:3", "F3:1"}
    assert set(typed.attempts) == {"F2:1"}


class _ClaimDuringCheck:
    """A Redis client for a forwarder: the first time it checks for an older pending entry
    of the job, the dead consumer's entry has just gone idle and is claimed first (what the
    claimer does at any moment), so the older entry joins the job's queue mid-check."""

    def __init__(self, redis: Redis, group: str, dead: str) -> None:
        self._redis, self._group, self._dead = redis, group, dead
        self.forwarder: Forwarder | None = None
        self.claimed = 0

    def __getattr__(self, name: str) -> Any:
        return getattr(self._redis, name)

    async def xpending_range(self, stream: str, group: str, **kw: Any) -> Any:
        if self.forwarder is not None and not self.claimed:
            rows = await self._redis.xpending_range(stream, group, "-", "+", 10, self._dead)
            ids = [r["message_id"] for r in rows]
            await self._redis.xclaim(stream, group, self._dead, 0, ids, idle=120_000, justid=True)
            self.claimed = await self.forwarder.claim_once()
        return await self._redis.xpending_range(stream, group, **kw)


async def test_an_older_entry_claimed_while_checking_the_queue_head_goes_first(
    store: Store,
) -> None:
    async with receiving() as rx:
        await publish(store.redis, store.keys, "O1", 1)
        await store.redis.xgroup_create(store.keys.events, "forward", id="0-0")
        # consumer "dead" was given seq 1 and never acknowledged it
        await store.redis.xreadgroup("forward", "dead", {store.keys.events: ">"}, count=1)
        await publish(store.redis, store.keys, "O1", 2)
        redis = _ClaimDuringCheck(store.redis, "forward", "dead")
        fwd = Forwarder(redis, store.keys, options(rx.url, claim_idle=60.0))  # type: ignore[arg-type]
        redis.forwarder = fwd
        async with anyio.create_task_group() as tg:
            await tg.start(fwd.run)
            await eventually(lambda: rx.has({"O1:1", "O1:2"}))
            await eventually(lambda: _zero(pending(store)))
            tg.cancel_scope.cancel()
    assert redis.claimed == 1
    assert rx.accepted == ["O1:1", "O1:2"]
    assert not rx.bad


def _env(redis_url: str, prefix: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("POLLER_")}
    env |= {"POLLER_REDIS_URL": redis_url, "POLLER_KEY_PREFIX": prefix}
    env |= {"POLLER_LOG_FORMAT": "json", "POLLER_LOG_LEVEL": "debug"}
    return env


@asynccontextmanager
async def forward_process(
    redis_url: str,
    prefix: str,
    url: str,
    secret_file: Path,
    log: Path,
    consumer: str,
    *extra: str,
) -> AsyncIterator[anyio.abc.Process]:
    argv = [
        sys.executable, "-m", "poller", "forward", "--webhook", url,
        "--secret-file", str(secret_file), "--since", "0", "--consumer", consumer,
        "--claim-idle", "1", "--claim-interval", "0.2", "--backoff-initial", "0.02",
        "--backoff-max", "0.1", "--max-attempts", "50", "--concurrency", "4", *extra,
    ]  # fmt: skip
    with log.open("wb") as sink:
        proc = await anyio.open_process(argv, env=_env(redis_url, prefix), stdout=sink, stderr=sink)
        try:
            yield proc
        finally:
            if proc.returncode is None:
                proc.kill()
                await proc.wait()


async def test_killed_forwarder_loses_nothing(
    redis_server: LocalRedis, store: Store, prefix: str, tmp_path: Path
) -> None:
    """A forwarder SIGKILLed with deliveries blocked in flight: a second one takes over its
    pending entries after the (short) min-idle and delivers everything, per job in order,
    also events published after the kill (which must wait for the claimed older ones)."""
    gate = anyio.Event()
    blocked = anyio.Event()

    async def gated(_: Receiver, __: str, ___: int, ____: web.Request) -> web.StreamResponse:
        if not gate.is_set():
            blocked.set()
            await gate.wait()
            return web.Response(status=503)  # the asker is dead by now: never an acceptance
        return web.Response(status=200)

    secret_file = tmp_path / "secret"
    secret_file.write_text(SECRET + "\n")
    async with receiving(gated) as rx:
        ids = await publish_jobs(store, jobs=4, per_job=5)
        async with forward_process(
            redis_server.url, prefix, rx.url, secret_file, tmp_path / "f1.log", "f1"
        ) as first:
            with anyio.fail_after(20):
                await blocked.wait()
            await eventually(lambda: _pending_of(store, "f1"))
            first.send_signal(signal.SIGKILL)
            await first.wait()
        ids |= await publish_jobs(store, jobs=4, per_job=8, first=6)  # J0..J3 go on
        ids |= await publish_jobs(store, jobs=2, per_job=3, tag="N")  # and new jobs start
        gate.set()
        port = free_port()
        async with forward_process(
            redis_server.url, prefix, rx.url, secret_file, tmp_path / "f2.log", "f2",
            "--http-port", str(port),
        ) as second:  # fmt: skip
            await eventually(lambda: rx.has(ids), within=30)
            await eventually(lambda: _zero(pending(store)))
            async with (
                aiohttp.ClientSession() as http,
                http.get(f"http://127.0.0.1:{port}/metrics") as resp,
            ):
                metrics = await resp.text()
            assert "poller_forward_delivered_total 38.0" in metrics
            assert "poller_forward_claimed_total" in metrics
            assert "poller_forward_delivery_seconds_bucket" in metrics
            second.send_signal(signal.SIGTERM)
            with anyio.fail_after(10):
                assert await second.wait() == 0
    assert not rx.bad, rx.bad[:5]
    logs = (tmp_path / "f1.log").read_text() + (tmp_path / "f2.log").read_text()
    assert "took over pending deliveries" in logs
    assert SECRET not in logs
    assert SECRET.removeprefix("whsec_") not in logs


async def _pending_of(store: Store, consumer: str) -> bool:
    info = await store.redis.xpending(store.keys.events, "forward")
    return any(c["name"].decode() == consumer and c["pending"] > 0 for c in info["consumers"])


def test_bad_secret_file_is_one_line_without_the_secret(tmp_path: Path) -> None:
    import subprocess

    bad = tmp_path / "secret"
    bad.write_text("hunter2-not-whsec")
    out = subprocess.run(
        [sys.executable, "-m", "poller", "forward", "--webhook", "http://127.0.0.1:1/x",
         "--secret-file", str(bad)],
        capture_output=True, text=True, env=_env("redis://127.0.0.1:1/0", "t-x"), timeout=30,
    )  # fmt: skip
    assert out.returncode == 2
    assert "--secret-file" in out.stderr
    assert "hunter2" not in out.stderr


# --- several shards: one group per shard stream ------------------------------------------------

SHARDS = 3


@pytest.fixture
async def sharded(redis_server: LocalRedis, prefix: str) -> AsyncIterator[Store]:
    s = Store(connect(redis_server.url), Keys(prefix, SHARDS), retention=3600, maxlen=10_000)
    yield s
    await s.redis.aclose()


async def test_every_shard_delivered_by_two_forwarders_in_per_job_order(sharded: Store) -> None:
    rng = random.Random(11)

    async def jittery(_: Receiver, __: str, ___: int, ____: web.Request) -> web.StreamResponse:
        await anyio.sleep(rng.uniform(0, 0.01))
        return web.Response(status=500 if rng.random() < 0.2 else 200)

    jobs = jobs_in_shards(SHARDS, 3)
    async with receiving(jittery) as rx:
        ids = await publish_jobs(sharded, len(jobs), 6, job_ids=jobs)
        async with (
            forwarding(sharded, rx.url, concurrency=4, prefetch=4, max_attempts=50),
            forwarding(sharded, rx.url, concurrency=4, prefetch=4, max_attempts=50),
        ):
            later = jobs_in_shards(SHARDS, tag="K")
            more = await publish_jobs(sharded, len(later), 5, job_ids=later)
            await eventually(lambda: rx.has(ids | more), within=60)
            await eventually(lambda: _zero(pending(sharded)))
    assert not rx.bad, rx.bad[:5]
    assert set(rx.attempts) == ids | more
    for stream in sharded.keys.event_streams:  # the group on each: all read, all acked
        (info,) = await sharded.redis.xinfo_groups(stream)
        assert (info["name"], info["lag"], info["pending"]) == (b"forward", 0, 0)
    assert await sharded.redis.llen(sharded.keys.forward_dead) == 0


async def test_parked_deliveries_of_every_shard_are_acknowledged_on_their_stream(
    sharded: Store,
) -> None:
    async def down(_: Receiver, __: str, ___: int, ____: web.Request) -> web.StreamResponse:
        return web.Response(status=503)

    jobs = jobs_in_shards(SHARDS)
    async with receiving(down) as rx:
        entries = {
            job: await publish(sharded.redis, sharded.keys, job, 1, kind="job.status_changed",
                               to="FAILED")
            for job in jobs
        }  # fmt: skip
        async with forwarding(sharded, rx.url, max_attempts=2):
            await eventually(lambda: _parked(sharded, len(jobs)))
            await eventually(lambda: _zero(pending(sharded)))
    records = await dead_records(sharded.redis, sharded.keys)
    assert sorted((r["webhook_id"], r["entry_id"]) for r in records) == sorted(
        (f"{job}:1", entry) for job, entry in entries.items()
    )
    assert {len(rx.attempts[f"{job}:1"]) for job in jobs} == {2}


async def _parked(store: Store, n: int) -> bool:
    return bool(await store.redis.llen(store.keys.forward_dead) >= n)


async def test_a_dead_forwarders_deliveries_on_every_shard_are_taken_over_in_order(
    sharded: Store,
) -> None:
    """A forwarder stops (cancelled mid-delivery: nothing acknowledged) with one delivery in
    flight in every shard; another takes each over once idle, and delivers the jobs' later
    events only after them."""
    gate = anyio.Event()
    waiting: set[str] = set()

    async def gated(_: Receiver, msg_id: str, __: int, ___: web.Request) -> web.StreamResponse:
        if not gate.is_set():
            waiting.add(msg_id)
            await gate.wait()
            return web.Response(status=503)  # the asker is gone by now: never an acceptance
        return web.Response(status=200)

    jobs = jobs_in_shards(SHARDS)
    async with receiving(gated) as rx:
        ids = await publish_jobs(sharded, len(jobs), 1, job_ids=jobs)
        async with forwarding(sharded, rx.url, claim_idle=0.3, claim_interval=0.1):
            await eventually(lambda: waiting == ids)  # one held delivery per shard
        ids |= await publish_jobs(sharded, len(jobs), 3, first=2, job_ids=jobs)
        gate.set()
        async with forwarding(sharded, rx.url, claim_idle=0.3, claim_interval=0.1) as second:
            await eventually(lambda: rx.has(ids), within=30)
            await eventually(lambda: _zero(pending(sharded)))
    assert not rx.bad, rx.bad[:5]  # every job's seq 1 accepted before its 2 and 3
    assert scraped(second.metrics, "poller_forward_claimed_total") == len(jobs)


async def test_a_group_deleted_on_one_shard_is_created_again_there(sharded: Store) -> None:
    jobs = jobs_in_shards(SHARDS)
    async with receiving() as rx:
        ids = await publish_jobs(sharded, len(jobs), 1, job_ids=jobs)
        async with forwarding(sharded, rx.url):
            await eventually(lambda: rx.has(ids))
            await sharded.redis.xgroup_destroy(sharded.keys.for_job(jobs[1]).events, "forward")
            more = await publish_jobs(sharded, len(jobs), 2, first=2, job_ids=jobs)
            await eventually(lambda: rx.has(ids | more))
            await eventually(lambda: _zero(pending(sharded)))
    assert not rx.bad, rx.bad[:5]
    for stream in sharded.keys.event_streams:
        assert [g["name"] for g in await sharded.redis.xinfo_groups(stream)] == [b"forward"]
