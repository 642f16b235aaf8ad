"""Authentication end to end against the emulator: token file rotation, AK/SK, IAM tokens,
temporary credentials (a static security token, and the metadata service's, renewed)."""

from __future__ import annotations

import itertools
from pathlib import Path

import pytest

from poller.config import Secret, replace
from poller.localredis import LocalRedis
from poller.sim import SimConfig, SimHandle, running_sim
from poller.sim.auth import token_auth
from poller.store import Store
from poller.worker import Worker
from tests.integration.harness import (
    PROJECT,
    TOKEN,
    all_final,
    assert_consistent,
    by_job,
    events_until,
    eventually,
    fast_settings,
    quick_job,
    running_worker,
)
from tests.scrape import scraped

QUICK = quick_job(0.2)


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
            # A poll fails only once its re-read of the file and retry got a 401 too; the first
            # 401s alone may all be first attempts whose retry would already see the new token.
            await eventually(lambda: _auth_failed_polls(worker) >= 1 and _count(sim, "401") >= 3)
            assert await store.read_events() == []  # failed polls publish nothing
            token_file.write_text("rotated-token\n")  # what a Kubernetes secret update does
            events = await events_until(store, all_final(ids))
        assert _auth_failed_polls(worker) >= 1
    for job_events in by_job(events).values():
        assert_consistent(job_events)
        assert job_events[0].from_status == ""


def _count(sim: SimHandle, status: str) -> int:
    return int(sim.state.stats.by_status.get(int(status), 0))


def _polls(worker: Worker, outcome: str) -> float:
    return scraped(worker.metrics, "poller_polls_total", outcome=outcome)


def _responses(worker: Worker, code: str) -> float:
    return scraped(worker.metrics, "poller_api_responses_total", code=code)


def _auth_failed_polls(worker: Worker) -> float:
    return float(scraped(worker.metrics, "poller_polls_total", outcome="auth_failed"))


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
            await eventually(lambda: _responses(worker, "error") >= 2)
        assert await store.read_events() == []  # an unverified server gets nothing
        assert sim.state.stats.requests == 0
        async with running_worker(replace(settings, ca_bundle=str(ca_file))):
            await store.enqueue(trusted)
            events = await events_until(store, all_final([untrusted, trusted]))
    finally:
        await runner.cleanup()
    assert {e.job_id for e in events if e.is_final} == {untrusted, trusted}


SECRET_KEY = "sk-0123456789abcdef-very-secret"
IAM_PASSWORD = "pw-Correct-Horse-Battery-Staple"


async def test_aksk_signed_polls_are_accepted_end_to_end(
    redis_server: LocalRedis, prefix: str, store: Store
) -> None:
    config = SimConfig(project_id=PROJECT, authenticators=(), access_keys={"AKTEST": SECRET_KEY})
    async with running_sim(config) as sim:
        ids = [await sim.create_job(QUICK) for _ in range(3)]
        settings = fast_settings(
            redis_server.url, prefix, sim.url, auth_token=None,
            access_key=Secret("AKTEST"), secret_key=Secret(SECRET_KEY),
        )  # fmt: skip
        async with running_worker(settings):
            await store.enqueue(*ids)
            events = await events_until(store, all_final(ids))
        stats = await sim.stats()
    assert stats["by_aksk"]["accepted"] >= 3  # every poll was signed and verified
    assert stats["by_aksk"]["signature_failure"] == 0
    assert {e.to_status for e in events if e.is_final} == {"SUCCEEDED"}


async def test_a_wrong_secret_key_pauses_all_polling_before_the_key_locks(
    redis_server: LocalRedis, prefix: str, store: Store
) -> None:
    config = SimConfig(project_id=PROJECT, authenticators=(), access_keys={"AKTEST": SECRET_KEY})
    async with running_sim(config) as sim:
        ids = [await sim.create_job(QUICK) for _ in range(3)]
        settings = fast_settings(
            redis_server.url, prefix, sim.url, auth_token=None,
            access_key=Secret("AKTEST"), secret_key=Secret("wrong-secret"),
        )  # fmt: skip
        async with running_worker(settings) as worker:
            await store.enqueue(*ids)
            await eventually(lambda: "paused" in worker.health.auth_problem)
            # the polls that fall due next are held back without a request...
            await eventually(lambda: _polls(worker, "transient") >= 3)
            stats = await sim.stats()
            problems = worker.health.problems()
            now = await store.server_time()
            views = [await store.get_job(PROJECT, j) for j in ids]
            failed = scraped(worker.metrics, "poller_polls_total", outcome="auth_failed")
            held_back = _polls(worker, "transient")
    # Only polls that went out before the first 401 came back sent a (bad) signature, at most
    # one per job; every poll due during the pause sent nothing. Whether a job's first poll
    # raced out or was already held back depends on scheduling, so count both ways.
    assert held_back >= 3
    assert 1 <= stats["by_aksk"]["signature_failure"] == failed <= 3
    assert stats["by_aksk"]["locked"] == 0  # the provider never locked the key pair
    # ...and rescheduled after the pause, instead of retrying job by job
    assert all(v is not None and v.due_at is not None and v.due_at > now + 20 for v in views)
    assert any("credentials" in p and "paused" in p for p in problems)  # /readyz says why
    assert await store.read_events() == []


async def test_iam_tokens_expiring_mid_run_are_renewed_without_a_failed_event(
    redis_server: LocalRedis, prefix: str, store: Store
) -> None:
    from poller.sim import IamUser

    config = SimConfig(project_id=PROJECT, authenticators=(), iam_token_lifetime=1.0,
                       iam_users=(IamUser("svc-poller", IAM_PASSWORD, "acme"),))  # fmt: skip
    async with running_sim(config) as sim:
        ids = [await sim.create_job(quick_job(3.0, 1.5)) for _ in range(20)]
        settings = fast_settings(
            redis_server.url, prefix, sim.url, auth_token=None, iam_endpoint=sim.iam_url,
            iam_user="svc-poller", iam_password=Secret(IAM_PASSWORD), iam_domain="acme",
        )  # fmt: skip
        async with running_worker(settings) as worker:
            await store.enqueue(*ids)
            events = await events_until(store, all_final(ids))
        stats = await sim.stats()
    assert stats["iam_tokens_issued"] >= 2  # 3 s of jobs with 1 s tokens: renewed along the way
    assert stats["iam_failures"] == 0
    assert scraped(worker.metrics, "poller_token_refreshes_total", result="ok") >= 2
    for job_events in by_job(events).values():
        assert_consistent(job_events)
        assert job_events[-1].to_status == "SUCCEEDED"


async def test_many_polls_needing_a_token_at_once_make_one_iam_request(
    redis_server: LocalRedis, prefix: str, store: Store
) -> None:
    from poller.sim import IamUser

    config = SimConfig(project_id=PROJECT, authenticators=(),
                       iam_users=(IamUser("svc-poller", IAM_PASSWORD, "acme"),))  # fmt: skip
    async with running_sim(config) as sim:
        ids = [await sim.create_job(QUICK) for _ in range(50)]
        settings = fast_settings(
            redis_server.url, prefix, sim.url, auth_token=None, iam_endpoint=sim.iam_url,
            iam_user="svc-poller", iam_password=Secret(IAM_PASSWORD), iam_domain="acme",
            concurrency=64,
        )  # fmt: skip
        async with running_worker(settings):
            await store.enqueue(*ids)
            await events_until(store, all_final(ids))
            await sim.revoke_iam_tokens()  # a password change kills the token early
            late = await sim.create_job(QUICK)
            await store.enqueue(late)
            await events_until(store, all_final([*ids, late]))
        stats = await sim.stats()
    assert stats["iam_requests"] == 2  # one at start, one after the revocation's 401


STATIC_TOKEN = "static-token-Zq8v1r0-do-not-log"


@pytest.mark.parametrize("method", ["token", "token_file", "aksk", "iam", "temporary", "metadata"])
async def test_no_secret_appears_in_any_log_line_or_event(
    redis_server: LocalRedis, prefix: str, store: Store, tmp_path: Path, method: str
) -> None:
    import os
    import signal
    import sys

    import anyio

    from poller.sim import IamUser
    from poller.sim.metadata import METADATA

    config = SimConfig(
        project_id=PROJECT, authenticators=(token_auth([STATIC_TOKEN]),),
        access_keys={"AKTEST": SECRET_KEY}, iam_token_lifetime=1.0,
        iam_users=(IamUser("svc-poller", IAM_PASSWORD, "acme"),),
        # metadata: renewed during the run; temporary: one credential that outlives the run
        temporary_credentials_ttl=4.0 if method == "metadata" else 120.0,
    )  # fmt: skip
    token_file = tmp_path / "token"
    token_file.write_text(STATIC_TOKEN)
    async with running_sim(config) as sim:
        env = {k: v for k, v in os.environ.items() if not k.startswith("POLLER_")}
        env.update({
            "POLLER_REDIS_URL": redis_server.url, "POLLER_KEY_PREFIX": prefix,
            "POLLER_API_ENDPOINT": sim.url, "POLLER_PROJECT_ID": PROJECT,
            "POLLER_LOG_LEVEL": "debug", "POLLER_HTTP_PORT": "0",
            "POLLER_POLL_INTERVAL": "0.05", "POLLER_POLL_INTERVAL_MAX": "0.2",
        })  # fmt: skip
        env.update({
            "token": {"POLLER_AUTH_TOKEN": STATIC_TOKEN},
            "token_file": {"POLLER_AUTH_TOKEN_FILE": str(token_file)},
            "aksk": {"POLLER_ACCESS_KEY": "AKTEST", "POLLER_SECRET_KEY": SECRET_KEY},
            "iam": {"POLLER_IAM_ENDPOINT": sim.iam_url, "POLLER_IAM_USER": "svc-poller",
                    "POLLER_IAM_PASSWORD": IAM_PASSWORD, "POLLER_IAM_DOMAIN": "acme"},
            "temporary": _temporary_env(sim),
            "metadata": {"POLLER_CREDENTIALS": "metadata", "POLLER_METADATA_ENDPOINT": sim.url},
        }[method])  # fmt: skip
        ids = [await sim.create_job(quick_job(2.0, 1.0)) for _ in range(3)]
        log = tmp_path / "daemon.log"
        with log.open("wb") as sink:
            proc = await anyio.open_process(
                [sys.executable, "-m", "poller", "run"], env=env, stdout=sink, stderr=sink
            )
            try:
                await store.enqueue(*ids)
                await events_until(store, all_final(ids))
                if method == "iam":  # jobs age from creation, so a slow start leaves little run
                    await eventually(lambda: len(sim.state.iam_tokens.issued()) >= 2)
                if method == "metadata":  # renewed at least once (4 s credentials)
                    await eventually(lambda: sim.app[METADATA].credentials_served >= 2)
                proc.send_signal(signal.SIGTERM)
                with anyio.fail_after(15):
                    assert await proc.wait() == 0
            finally:
                if proc.returncode is None:
                    proc.kill()
        issued = sim.state.iam_tokens.issued()
        service = sim.app[METADATA]
        temporary = [(c.key.secret_key, c.key.security_token) for c in service.credentials.issued()]
        issued += [secret for pair in temporary for secret in pair]
        issued += list(service.session_tokens)
        stats = await sim.stats()
    secrets = [STATIC_TOKEN, SECRET_KEY, IAM_PASSWORD, *issued]
    text = log.read_text()
    assert len(text.splitlines()) > 10
    assert [s for s in secrets if s in text] == []
    assert "Authorization" not in text
    stream = str(await store.redis.xrange(store.keys.events))
    assert [s for s in secrets if s in stream] == []
    if method == "iam":
        assert len(sim.state.iam_tokens.issued()) >= 2  # obtained and renewed during the run
    if method in ("temporary", "metadata"):
        assert stats["by_aksk"]["accepted"] >= 3  # polls were signed with temporary keys
        # temporary: the daemon signed with what it was given and never asked for more
        assert service.credentials_served >= 2 or method == "temporary"
        assert service.credentials_served == 0 or method == "metadata"
        assert "X-Security-Token" not in text
        assert stats["by_status"].get("401", 0) == 0  # renewed before expiry, never refused


def _temporary_env(sim: SimHandle) -> dict[str, str]:
    """Temporary AK/SK with their security token, as an operator would paste them."""
    from poller.sim.metadata import METADATA

    credential = sim.app[METADATA].credentials.current()
    key = credential.key
    return {"POLLER_ACCESS_KEY": credential.access_key, "POLLER_SECRET_KEY": key.secret_key,
            "POLLER_SECURITY_TOKEN": key.security_token}  # fmt: skip


async def test_iam_unreachable_keeps_the_daemon_up_backing_off_and_unready(
    redis_server: LocalRedis, prefix: str, store: Store
) -> None:
    from poller.localredis import free_port

    dead_iam = f"http://127.0.0.1:{free_port()}"  # nothing listens there
    config = SimConfig(project_id=PROJECT, authenticators=())
    async with running_sim(config) as sim:
        job_id = await sim.create_job(QUICK)
        settings = fast_settings(
            redis_server.url, prefix, sim.url, auth_token=None, iam_endpoint=dead_iam,
            iam_user="svc-poller", iam_password=Secret(IAM_PASSWORD), iam_domain="acme",
        )  # fmt: skip
        async with running_worker(settings) as worker:
            await store.enqueue(job_id)
            await eventually(lambda: _polls(worker, "transient") >= 2)
            problems = worker.health.problems()
            refreshes = scraped(worker.metrics, "poller_token_refreshes_total", result="failed")
            assert not worker.stopping
        stats = await sim.stats()
    assert any("IAM unreachable" in p for p in problems)
    assert refreshes >= 1
    assert stats["requests"] == 0  # no poll went out without a token
    assert await store.read_events() == []


async def test_metadata_credentials_are_renewed_across_expiries_without_a_401(
    redis_server: LocalRedis, prefix: str, store: Store
) -> None:
    from poller.sim.metadata import METADATA

    # 3 s credentials, a new one handed out every 1.5 s; 6 s jobs outlive two of them.
    config = SimConfig(project_id=PROJECT, authenticators=(), temporary_credentials_ttl=3.0)
    async with running_sim(config) as sim:
        ids = [await sim.create_job(quick_job(6.0, 3.0)) for _ in range(20)]
        settings = fast_settings(
            redis_server.url, prefix, sim.url, auth_token=None,
            credentials="metadata", metadata_endpoint=sim.url,
        )  # fmt: skip
        async with running_worker(settings) as worker:
            await store.enqueue(*ids)
            events = await events_until(store, all_final(ids))
        issued = {c.access_key: c for c in sim.app[METADATA].credentials.issued()}
        served = list(sim.app[METADATA].served)
        stats = await sim.stats()
        service = sim.app[METADATA].status()
    assert stats["by_status"].get("401", 0) == 0  # no poll ever met an expired credential
    assert stats["by_aksk"]["rejected"] == stats["by_aksk"]["signature_failure"] == 0
    assert scraped(worker.metrics, "poller_polls_total", outcome="auth_failed") == 0
    assert service["credentials_served"] >= 3  # renewed at least twice along the way
    assert service["failures"] == 0
    # Each new credential was fetched before the one before it expired (in its last 10 %),
    # not once it had died.
    firsts = [(at, ak) for n, (at, ak) in enumerate(served) if ak not in {a for _, a in served[:n]}]
    assert len(firsts) >= 3
    for (_, previous), (fetched_at, _) in itertools.pairwise(firsts):
        assert fetched_at < issued[previous].key.expires_at
    assert scraped(worker.metrics, "poller_token_refreshes_total", result="ok") >= 3
    for job_events in by_job(events).values():
        assert_consistent(job_events)
        assert job_events[-1].to_status == "SUCCEEDED"


async def test_metadata_service_unreachable_keeps_the_daemon_up_backing_off_and_unready(
    redis_server: LocalRedis, prefix: str, store: Store
) -> None:
    from poller.sim.metadata import METADATA

    config = SimConfig(project_id=PROJECT, authenticators=(), temporary_credentials_ttl=60.0)
    async with running_sim(config) as sim:
        job_id = await sim.create_job(QUICK)
        sim.app[METADATA].available = False  # answers 503, as during a host hiccup
        settings = fast_settings(
            redis_server.url, prefix, sim.url, auth_token=None,
            credentials="metadata", metadata_endpoint=sim.url,
        )  # fmt: skip
        async with running_worker(settings) as worker:
            await store.enqueue(job_id)
            await eventually(lambda: _polls(worker, "transient") >= 2)
            problems = worker.health.problems()
            assert not worker.stopping
            assert sim.state.stats.requests == 0  # no poll went out unsigned
            assert await store.read_events() == []
            sim.app[METADATA].available = True  # back: the next attempt gets a credential
            events = await events_until(store, all_final([job_id]))
        stats = await sim.stats()
    assert any("metadata service refused the credential request: HTTP 503" in p for p in problems)
    assert stats["by_aksk"]["accepted"] >= 1
    assert events[-1].to_status == "SUCCEEDED"
