"""Authentication end to end against the emulator: token file rotation, AK/SK, IAM tokens."""

from __future__ import annotations

from pathlib import Path

from poller.config import replace
from poller.localredis import LocalRedis
from poller.sim import SimConfig, SimHandle, running_sim
from poller.sim.auth import token_auth
from poller.store import Store
from tests.integration.harness import (
    PROJECT,
    TOKEN,
    all_final,
    assert_consistent,
    by_job,
    events_until,
    eventually,
    fast_settings,
    running_worker,
)

QUICK = {"job_type": "PROVISION", "job_status": [[0, "RUNNING"], [0.2, "SUCCEEDED"]],
         "tasks": [{"task_name": "A", "task_index": 1,
                    "steps": [[0, "RUNNING"], [0.2, "SUCCEEDED"]]}]}  # fmt: skip


async def test_rotated_token_file_is_picked_up_without_a_restart(
    redis_server: LocalRedis, prefix: str, store: Store, tmp_path: Path
) -> None:
    token_file = tmp_path / "token"
    token_file.write_text("expired-token\n")
    config = SimConfig(project_id=PROJECT, authenticators=(token_auth(["rotated-token"]),))
    async with running_sim(config) as sim:
        ids = [await sim.create_job(QUICK) for _ in range(3)]
        settings = fast_settings(
            redis_server.url, prefix, sim.url, auth_token=None, auth_token_file=str(token_file)
        )
        async with running_worker(settings) as worker:
            await store.enqueue(*ids)
            await eventually(lambda: _count(sim, "401") >= 3)
            assert await store.read_events() == []  # failed polls publish nothing
            token_file.write_text("rotated-token\n")  # what a Kubernetes secret update does
            events = await events_until(store, all_final(ids))
        assert worker.metrics.polls.labels("auth_failed")._value.get() >= 1
    for job_events in by_job(events).values():
        assert_consistent(job_events)
        assert job_events[0].from_status == ""


def _count(sim: SimHandle, status: str) -> int:
    return int(sim.state.stats.by_status.get(int(status), 0))


async def test_tls_is_verified_and_a_private_ca_is_trusted_via_ca_bundle(
    redis_server: LocalRedis, prefix: str, store: Store, tmp_path: Path
) -> None:
    import ssl

    import trustme
    from aiohttp import web

    from poller.sim import create_app

    ca = trustme.CA()
    server_ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("127.0.0.1", "localhost").configure_cert(server_ctx)
    ca_file = tmp_path / "private-ca.pem"
    ca.cert_pem.write_to_path(str(ca_file))
    config = SimConfig(project_id=PROJECT, authenticators=(token_auth([TOKEN]),))
    app = create_app(config)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0, ssl_context=server_ctx)
    await site.start()
    try:
        port = runner.addresses[0][1]
        sim = SimHandle(url=f"https://127.0.0.1:{port}", app=app)
        untrusted, trusted = await sim.create_job(QUICK), await sim.create_job(QUICK)
        settings = fast_settings(redis_server.url, prefix, sim.url)
        async with running_worker(settings) as worker:
            await store.enqueue(untrusted)
            await eventually(lambda: worker.metrics.api_responses.labels("error")._value.get() >= 2)
        assert await store.read_events() == []  # an unverified server gets nothing
        assert sim.state.stats.requests == 0
        async with running_worker(replace(settings, ca_bundle=str(ca_file))):
            await store.enqueue(trusted)
            events = await events_until(store, all_final([untrusted, trusted]))
    finally:
        await runner.cleanup()
    assert {e.job_id for e in events if e.is_final} == {untrusted, trusted}
