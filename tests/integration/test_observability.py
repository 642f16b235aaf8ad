"""What an SRE sees: probes and metrics over HTTP, JSON logs with bound fields, no secrets."""

from __future__ import annotations

import json
import re
import signal
import sys
from pathlib import Path

import aiohttp
import anyio

from poller.daemon import build_worker, serve_probes
from poller.localredis import LocalRedis, free_port
from poller.sim import SimHandle
from poller.store import Keys, Store, connect
from poller.telemetry import Health, Metrics
from tests.integration.harness import (
    PROJECT,
    TOKEN,
    all_final,
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
    assert all({"event", "level", "timestamp"} <= r.keys() for r in records)
    job_lines = {"tracking job", "job.status_changed", "task.status_changed", "polled"}
    about_jobs = [r for r in records if r["event"] in job_lines]
    assert len(about_jobs) >= 8
    assert all(r.get("job_id") in ids and r.get("project_id") == PROJECT for r in about_jobs)
    assert any(r["event"] == "intake message dead-lettered" for r in records)
    assert TOKEN not in log.read_text()
