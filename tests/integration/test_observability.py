"""What an SRE sees: probes and metrics over HTTP, JSON logs with bound fields, no secrets.

Metrics are read the way Prometheus reads them: ``GET /metrics`` over HTTP, Prometheus text.
"""

from __future__ import annotations

import json
import re
import signal
import sys
import time
from pathlib import Path
from typing import Any

import aiohttp
import anyio
import pytest

import poller
from poller.config import Settings
from poller.daemon import build_worker, serve_probes
from poller.localredis import LocalRedis, free_port
from poller.sim import SimHandle
from poller.store import Keys, Store, connect
from poller.telemetry import Health, Metrics
from tests.integration.harness import (
    PROJECT,
    TOKEN,
    all_final,
    daemon,
    daemon_env,
    events_until,
    eventually,
    fast_settings,
    quick_job,
)

QUICK = quick_job(0.3)


def metric(text: str, name: str, **labels: str) -> float:
    """The value of one sample in Prometheus text, 0 if absent."""
    wanted = ",".join(f'{k}="{v}"' for k, v in labels.items())
    pattern = re.escape(name) + (r"\{" + re.escape(wanted) + r"\}" if labels else "") + r" (\S+)"
    found = re.search("^" + pattern + "$", text, re.M)
    return float(found.group(1)) if found else 0.0


async def test_probes_and_metrics_follow_the_daemon_and_redis(
    own_redis: LocalRedis, prefix: str, live_sim: SimHandle
) -> None:
    port = free_port()
    settings = fast_settings(own_redis.url, prefix, live_sim.url, http_port=port,
                             http_host="127.0.0.1", lease_seconds=1.5)  # fmt: skip
    base = f"http://127.0.0.1:{port}"
    metrics, health = Metrics(), Health()
    ids = [await live_sim.create_job(QUICK) for _ in range(3)]
    async with (
        aiohttp.ClientSession() as http,
        build_worker(settings, metrics=metrics, health=health) as worker,
        serve_probes(settings, metrics, health),
        anyio.create_task_group() as tg,
    ):
        tg.start_soon(worker.run)

        async def status(path: str) -> int:
            async with http.get(base + path) as resp:
                return resp.status

        async def ready_is(expected: int) -> bool:
            return await status("/readyz") == expected

        assert await status("/healthz") == 200
        await eventually(lambda: ready_is(200))
        store = Store(connect(own_redis.url), Keys(prefix))
        await store.enqueue(*ids)
        events = await events_until(store, all_final(ids))
        await store.redis.aclose()
        published = {kind: sum(e.event == kind for e in events)
                     for kind in ("job.status_changed", "task.status_changed")}  # fmt: skip

        async def scrape() -> str:
            async with http.get(base + "/metrics") as resp:
                return await resp.text()

        async def counted_all() -> bool:
            # the counter moves just after the commit that published the events returns
            text = await scrape()
            return all(metric(text, "poller_events_published_total", event=kind) == n
                       for kind, n in published.items())  # fmt: skip

        await eventually(counted_all)
        text = await scrape()
        assert published["job.status_changed"] >= 3
        assert metric(text, "poller_polls_total", outcome="terminal") == 3
        assert metric(text, "poller_api_responses_total", code="200") >= 6
        assert metric(text, "poller_intake_messages_total", result="admitted") == 3
        assert metric(text, "poller_commits_total", result="ok") >= 6
        assert metric(text, "poller_poll_lag_seconds_count") >= 6
        assert metric(text, "poller_poll_duration_seconds_count") >= 6

        own_redis.kill()
        await eventually(lambda: ready_is(503))
        async with http.get(base + "/readyz") as resp:
            body = await resp.json()
        assert any(p.startswith("redis") for p in body["problems"])
        assert await status("/healthz") == 200  # alive, just not ready
        own_redis.start()
        await eventually(lambda: ready_is(200))
        worker.stop()


async def test_every_log_line_is_json_with_job_fields_and_no_secret(
    redis_server: LocalRedis, prefix: str, live_sim: SimHandle, tmp_path: Path
) -> None:
    ids = [await live_sim.create_job(QUICK) for _ in range(2)]
    log = tmp_path / "daemon.log"
    store = Store(connect(redis_server.url), Keys(prefix))
    with log.open("wb") as sink:
        proc = await anyio.open_process(
            [sys.executable, "-m", "poller", "run"],
            # auto: JSON because the log file is not a terminal
            env=daemon_env(
                redis_server.url,
                prefix,
                live_sim.url,
                POLLER_LOG_LEVEL="debug",
                POLLER_LOG_FORMAT="auto",
            ),
            stdout=sink,
            stderr=sink,
        )
        try:
            await store.enqueue(*ids, b"../bad")
            await events_until(store, all_final(ids))
            proc.send_signal(signal.SIGTERM)
            with anyio.fail_after(15):
                assert await proc.wait() == 0
        finally:
            if proc.returncode is None:
                proc.kill()
    await store.redis.aclose()
    lines = log.read_text().splitlines()
    records = [json.loads(line) for line in lines]  # every line parses
    assert len(records) > 10
    assert all({"event", "level", "timestamp", "replica"} <= r.keys() for r in records)
    assert len({r["replica"] for r in records}) == 1, "one replica, one name on every line"
    job_lines = {"tracking job", "job.status_changed", "task.status_changed", "polled"}
    about_jobs = [r for r in records if r["event"] in job_lines]
    assert len(about_jobs) >= 8
    assert all(r.get("job_id") in ids and r.get("project_id") == PROJECT for r in about_jobs)
    assert any(r["event"] == "intake message dead-lettered" for r in records)
    assert TOKEN not in log.read_text()


async def get(http: aiohttp.ClientSession, url: str) -> tuple[int, Any]:
    async with http.get(url) as resp:
        return resp.status, await resp.json()


async def test_liveness_fails_after_readiness_when_the_loop_is_stuck() -> None:
    port = free_port()
    settings = Settings(http_port=port, http_host="127.0.0.1")
    health = Health(stall_after=1.0, redis_ok=True, redis_error="")
    assert health.liveness_limit == 4.0
    base = f"http://127.0.0.1:{port}"
    async with aiohttp.ClientSession() as http, serve_probes(settings, Metrics(), health):
        health.tick()
        assert (await get(http, base + "/healthz"))[0] == 200
        assert (await get(http, base + "/readyz"))[0] == 200
        # Stuck past readiness's tolerance, not liveness's: unready, still alive.
        health.loop_tick = time.monotonic() - 2.0
        status, body = await get(http, base + "/readyz")
        assert status == 503
        assert any("scheduler loop stalled" in p for p in body["problems"])
        assert (await get(http, base + "/healthz"))[0] == 200
        # Stuck past liveness's too: restart me.
        health.loop_tick = time.monotonic() - 5.0
        status, body = await get(http, base + "/healthz")
        assert status == 503
        assert body["status"] == "wedged"
        assert "scheduler loop stuck for 5s" in body["problems"][0]
        health.tick()  # it turns again: alive and ready
        assert (await get(http, base + "/healthz"))[0] == 200
        assert (await get(http, base + "/readyz"))[0] == 200


def test_liveness_outlasts_a_graceful_drain() -> None:
    short = Health.for_settings(Settings(shutdown_grace=10.0))
    assert short.liveness_limit == 4 * short.stall_after
    long = Health.for_settings(Settings(shutdown_grace=120.0))
    assert long.liveness_limit > 120.0


async def test_a_wedged_scheduler_loop_turns_unready_then_dead(
    redis_server: LocalRedis, prefix: str, live_sim: SimHandle, monkeypatch: pytest.MonkeyPatch
) -> None:
    port = free_port()
    settings = fast_settings(redis_server.url, prefix, live_sim.url, http_port=port,
                             http_host="127.0.0.1")  # fmt: skip
    base = f"http://127.0.0.1:{port}"
    health = Health(stall_after=0.5, live_after=1.5)
    async with (
        aiohttp.ClientSession() as http,
        build_worker(settings, metrics=Metrics(), health=health) as worker,
        serve_probes(settings, worker.metrics, health),
        anyio.create_task_group() as tg,
    ):
        tg.start_soon(worker.run)

        async def status(path: str) -> int:
            return (await get(http, base + path))[0]

        async def ready() -> bool:
            return await status("/readyz") == 200

        await eventually(ready)
        claim = worker.store.claim_due

        async def wedged_claim(*args: Any, **kwargs: Any) -> Any:
            await anyio.sleep_forever()  # e.g. a deadlock: the loop never comes back
            return await claim(*args, **kwargs)

        monkeypatch.setattr(worker.store, "claim_due", wedged_claim)

        async def unready() -> bool:
            return await status("/readyz") == 503

        await eventually(unready, within=10)
        assert await status("/healthz") == 200, "unready first: not restarted for a hiccup"

        async def dead() -> bool:
            return await status("/healthz") == 503

        await eventually(dead, within=10)
        tg.cancel_scope.cancel()


FOREVER = {"job_type": "PROVISION", "job_status": [[0, "RUNNING"]], "tasks": []}
FAILS = {**quick_job(0.3), "job_status": [[0, "RUNNING"], [0.3, "FAILED"]]}


async def test_metrics_users_expect_over_http(
    redis_server: LocalRedis, prefix: str, live_sim: SimHandle, tmp_path: Path
) -> None:
    """A `poller run` process scraped like Prometheus does: jobs finished by final status,
    their durations, the build info, process and platform collectors, no _created series."""
    fates = {
        "SUCCEEDED": QUICK,
        "FAILED": FAILS,
        "abandoned:rejected": {**QUICK, "forbidden": True},
        "abandoned:not_found": {**QUICK, "missing": True},
        "abandoned:timeout": FOREVER,
    }
    ids = {status: await live_sim.create_job(spec) for status, spec in fates.items()}
    port = free_port()
    env = daemon_env(redis_server.url, prefix, live_sim.url, POLLER_HTTP_PORT=str(port),
                     POLLER_HTTP_HOST="127.0.0.1", POLLER_NOT_FOUND_GRACE="0.5",
                     POLLER_JOB_TIMEOUT="2")  # fmt: skip
    store = Store(connect(redis_server.url), Keys(prefix))
    async with aiohttp.ClientSession() as http, daemon(env, tmp_path / "daemon.log") as proc:

        async def scrape() -> str:
            try:
                async with http.get(f"http://127.0.0.1:{port}/metrics") as resp:
                    assert resp.status == 200
                    assert resp.headers["Content-Type"].startswith("text/plain")
                    return await resp.text()
            except aiohttp.ClientConnectionError:
                return ""  # not listening yet

        await store.enqueue(*ids.values())
        await events_until(store, all_final(ids.values()))

        async def all_counted() -> bool:
            text = await scrape()
            return metric(text, "poller_job_duration_seconds_count") == len(fates)

        await eventually(all_counted)
        text = await scrape()
        proc.send_signal(signal.SIGTERM)
        with anyio.fail_after(15):
            assert await proc.wait() == 0
    await store.redis.aclose()

    for status in fates:
        assert metric(text, "poller_jobs_finished_total", status=status) == 1, status
    assert metric(text, "poller_jobs_finished_total", status="ROLLBACKED") == 0
    assert "poller_jobs_finished_total{" in text
    # Durations from first sight: the timed-out job took at least POLLER_JOB_TIMEOUT.
    assert metric(text, "poller_job_duration_seconds_sum") >= 2.0
    assert metric(text, "poller_job_duration_seconds_bucket", le="1.0") <= len(fates) - 1
    assert metric(text, "poller_job_duration_seconds_bucket", le="+Inf") == len(fates)
    assert metric(text, "poller_build_info", version=poller.__version__) == 1
    assert metric(text, "process_cpu_seconds_total") > 0
    assert metric(text, "process_resident_memory_bytes") > 0
    assert metric(text, "process_start_time_seconds") > 0
    assert re.search(r'^python_info\{.*version="3\.', text, re.M)
    assert "_created" not in text
