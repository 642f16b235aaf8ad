"""AK/SK (SDK-HMAC-SHA256) verification on the emulated job API, and the provider's lockout.

The emulators here run a manual clock frozen in 2024 (see conftest): signature dates are judged
by wall time regardless, as a client signs with its own wall clock.
"""

from __future__ import annotations

import json
import time
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

import aiohttp
import pytest
from yarl import URL

from poller.servicestage.signing import sign_request
from poller.sim import SimConfig, SimHandle, running_sim

if TYPE_CHECKING:  # conftest.py is loaded by pytest; imported here for types only
    from conftest import StartSim

AK = "AKSIMTEST0001"
SK = "sk-very-secret-0123456789"
KEYS = {AK: SK, "AKOTHER": "sk-other-secret"}
JOB = {"job_id": "JOB-1", "job_status": [[0, "RUNNING"]]}
SIGNATURE_FAIL = "Incorrect IAM authentication information: verify aksk signature fail"


@dataclass(frozen=True, slots=True)
class Reply:
    status: int
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)


@pytest.fixture
async def sim(start_sim: StartSim) -> SimHandle:
    """An emulator accepting ``KEYS`` (and the default token) with one job."""
    handle = await start_sim(access_keys=KEYS)
    await handle.create_job(JOB)
    return handle


async def _send(
    session: aiohttp.ClientSession,
    url: str,
    headers: Mapping[str, str],
    *,
    data: bytes | None = None,
) -> Reply:
    async with session.get(URL(url, encoded=True), headers=dict(headers), data=data) as response:
        return Reply(response.status, await response.read())


async def _signed_get(
    session: aiohttp.ClientSession,
    url: str,
    *,
    access_key: str = AK,
    secret_key: str = SK,
    now: datetime | None = None,
    send_url: str | None = None,
) -> Reply:
    """GET ``url`` signed with the key pair (at ``now``, default wall time), sent to
    ``send_url`` when given (a tampered request)."""
    signed = sign_request(
        method="GET",
        url=url,
        headers={},
        body=b"",
        access_key=access_key,
        secret_key=secret_key,
        now=now or datetime.now(UTC),
    )
    return await _send(session, send_url or signed.url, signed.headers)


def _message(reply: Reply) -> str:
    body: dict[str, Any] = reply.json()
    assert body["error_code"] == "APIGW.0301"
    return str(body["error_msg"])


async def test_request_signed_with_a_configured_key_pair_gets_200(
    sim: SimHandle, session: aiohttp.ClientSession
) -> None:
    reply = await _signed_get(session, sim.job_url("JOB-1"))

    assert reply.status == 200
    assert reply.json()["job"]["job_id"] == "JOB-1"


async def test_signed_request_with_query_parameters_gets_200(
    sim: SimHandle, session: aiohttp.ClientSession
) -> None:
    reply = await _signed_get(session, sim.job_url("JOB-1") + "?offset=0&limit=5&desc=true")

    assert reply.status == 200


async def test_request_signed_by_the_official_sdk_signer_gets_200(
    sim: SimHandle, session: aiohttp.ClientSession
) -> None:
    from huaweicloudsdkcore.auth.credentials import BasicCredentials
    from huaweicloudsdkcore.sdk_request import SdkRequest
    from huaweicloudsdkcore.signer.signer import Signer

    target = URL(sim.job_url("JOB-1"))
    request = SdkRequest(
        method="GET",
        schema="http",
        host=f"{target.host}:{target.port}",
        resource_path=target.raw_path,
        query_params=[("limit", "5"), ("desc", "true")],
        header_params={"X-Sdk-Date": datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")},
        body="",
    )
    signed = Signer(BasicCredentials(AK, SK)).sign(request)

    reply = await _send(session, signed.url, signed.header_params)

    assert reply.status == 200


async def test_sim_handle_sign_produces_an_accepted_request(
    sim: SimHandle, session: aiohttp.ClientSession
) -> None:
    signed = sim.sign("GET", sim.job_url("JOB-1") + "?limit=2", access_key="AKOTHER")

    reply = await _send(session, signed.url, signed.headers)

    assert reply.status == 200


async def test_signed_get_with_a_body_is_verified_over_the_body(
    sim: SimHandle, session: aiohttp.ClientSession
) -> None:
    body = b'{"note": "GET with a body"}'
    headers = {"Content-Type": "application/json"}
    signed = sim.sign("GET", sim.job_url("JOB-1"), headers=headers, body=body)

    good = await _send(session, signed.url, {**headers, **signed.headers}, data=body)
    changed = await _send(session, signed.url, {**headers, **signed.headers}, data=body + b" ")

    assert (good.status, changed.status) == (200, 401)


async def test_wrong_secret_key_gets_401_verify_aksk_signature_fail(
    sim: SimHandle, session: aiohttp.ClientSession
) -> None:
    reply = await _signed_get(session, sim.job_url("JOB-1"), secret_key="not-the-secret")

    assert reply.status == 401
    assert _message(reply) == SIGNATURE_FAIL


async def test_unknown_access_key_gets_401_ak_not_found(
    sim: SimHandle, session: aiohttp.ClientSession
) -> None:
    reply = await _signed_get(session, sim.job_url("JOB-1"), access_key="AKNOBODY")

    assert reply.status == 401
    assert _message(reply) == "Incorrect IAM authentication information: ak not found"


@pytest.mark.parametrize("shift", [-16, 16], ids=["stale", "future"])
async def test_date_more_than_15_minutes_off_gets_401_x_sdk_date_expired(
    sim: SimHandle, session: aiohttp.ClientSession, shift: int
) -> None:
    when = datetime.now(UTC) + timedelta(minutes=shift)

    reply = await _signed_get(session, sim.job_url("JOB-1"), now=when)

    assert reply.status == 401
    expected = "Incorrect IAM authentication information: X-Sdk-Date expired"
    assert _message(reply).startswith(expected)


async def test_date_within_15_minutes_is_accepted_although_the_sim_clock_says_2024(
    sim: SimHandle, session: aiohttp.ClientSession
) -> None:
    when = datetime.now(UTC) - timedelta(minutes=14)

    reply = await _signed_get(session, sim.job_url("JOB-1"), now=when)

    assert reply.status == 200


async def test_tampered_path_gets_401_signature_fail(
    sim: SimHandle, session: aiohttp.ClientSession
) -> None:
    await sim.create_job({"job_id": "JOB-2", "job_status": [[0, "RUNNING"]]})

    reply = await _signed_get(session, sim.job_url("JOB-1"), send_url=sim.job_url("JOB-2"))

    assert reply.status == 401
    assert _message(reply) == SIGNATURE_FAIL


async def test_tampered_query_gets_401_signature_fail(
    sim: SimHandle, session: aiohttp.ClientSession
) -> None:
    url = sim.job_url("JOB-1")

    reply = await _signed_get(session, f"{url}?limit=5", send_url=f"{url}?limit=6")

    assert reply.status == 401
    assert _message(reply) == SIGNATURE_FAIL


async def test_authorization_with_another_scheme_gets_401(
    sim: SimHandle, session: aiohttp.ClientSession
) -> None:
    reply = await _send(session, sim.job_url("JOB-1"), {"Authorization": "Bearer abc"})

    assert reply.status == 401
    assert "verify aksk signature fail" in _message(reply)


async def test_rejections_never_contain_the_secret_key(
    sim: SimHandle, session: aiohttp.ClientSession
) -> None:
    url = sim.job_url("JOB-1")
    replies = [
        await _signed_get(session, url, secret_key=SK + "x"),
        await _signed_get(session, url, now=datetime.now(UTC) - timedelta(hours=1)),
        await _signed_get(session, f"{url}?limit=1", send_url=f"{url}?limit=2"),
    ]

    assert all(reply.status == 401 for reply in replies)
    assert not any(SK.encode() in reply.body for reply in replies)
    assert SK not in repr(sim.config)


async def test_valid_token_without_signature_still_works_when_keys_are_configured(
    sim: SimHandle, session: aiohttp.ClientSession
) -> None:
    reply = await _send(session, sim.job_url("JOB-1"), {"X-Auth-Token": "sim-token"})

    assert reply.status == 200


async def test_no_credentials_get_401_when_only_keys_are_configured(
    start_sim: StartSim, session: aiohttp.ClientSession
) -> None:
    sim = await start_sim(access_keys=KEYS, authenticators=())
    await sim.create_job(JOB)

    reply = await _send(session, sim.job_url("JOB-1"), {})

    assert reply.status == 401


async def test_more_than_five_bad_signatures_lock_the_key_even_for_a_good_one(
    sim: SimHandle, session: aiohttp.ClientSession
) -> None:
    url = sim.job_url("JOB-1")
    bad = [(await _signed_get(session, url, secret_key="wrong")).status for _ in range(6)]

    good = await _signed_get(session, url)

    assert bad == [401] * 6
    assert good.status == 401
    assert "locked" in _message(good)


async def test_five_bad_signatures_do_not_lock_the_key(
    sim: SimHandle, session: aiohttp.ClientSession
) -> None:
    url = sim.job_url("JOB-1")
    for _ in range(5):
        await _signed_get(session, url, secret_key="wrong")

    reply = await _signed_get(session, url)

    assert reply.status == 200


async def test_a_good_signature_resets_the_failure_count(
    sim: SimHandle, session: aiohttp.ClientSession
) -> None:
    url = sim.job_url("JOB-1")
    for _ in range(5):
        await _signed_get(session, url, secret_key="wrong")
    await _signed_get(session, url)
    for _ in range(5):
        await _signed_get(session, url, secret_key="wrong")

    reply = await _signed_get(session, url)

    assert reply.status == 200


async def test_a_lock_affects_only_its_own_access_key(
    sim: SimHandle, session: aiohttp.ClientSession
) -> None:
    url = sim.job_url("JOB-1")
    for _ in range(6):
        await _signed_get(session, url, secret_key="wrong")

    other = await _signed_get(session, url, access_key="AKOTHER", secret_key=KEYS["AKOTHER"])

    assert other.status == 200


async def test_the_lock_lifts_after_the_lock_duration_of_wall_time(
    session: aiohttp.ClientSession,
) -> None:
    wall = [time.time()]
    config = SimConfig(access_keys=KEYS, aksk_lock_seconds=60, jobs=())
    async with running_sim(config, wall_clock=lambda: wall[0]) as sim:
        await sim.create_job(JOB)
        url = sim.job_url("JOB-1")
        for _ in range(6):
            await _signed_get(session, url, secret_key="wrong")
        wall[0] += 59
        still_locked = await _send(session, *_signed(sim, url))
        wall[0] += 2
        unlocked = await _send(session, *_signed(sim, url))

    assert (still_locked.status, unlocked.status) == (401, 200)


def _signed(sim: SimHandle, url: str) -> tuple[str, Mapping[str, str]]:
    signed = sim.sign("GET", url, access_key=AK)  # dated by the emulator's wall clock
    return signed.url, signed.headers


async def test_unlock_admin_endpoint_lifts_the_lock(
    sim: SimHandle, session: aiohttp.ClientSession
) -> None:
    url = sim.job_url("JOB-1")
    for _ in range(6):
        await _signed_get(session, url, secret_key="wrong")

    async with session.post(f"{sim.url}/_sim/aksk/unlock") as response:
        unlocked = await response.json()
    reply = await _signed_get(session, url)

    assert unlocked == {"unlocked": [AK]}
    assert reply.status == 200


async def test_stats_and_auth_status_count_signature_failures_and_locks(
    sim: SimHandle, session: aiohttp.ClientSession
) -> None:
    url = sim.job_url("JOB-1")
    await _signed_get(session, url)
    for _ in range(7):
        await _signed_get(session, url, secret_key="wrong")

    stats = await sim.stats()
    status = await sim.auth_status()

    assert stats["by_aksk"] == {
        "accepted": 1,
        "rejected": 0,
        "signature_failure": 6,
        "locked": 1,
        "locked_rejection": 1,
    }
    assert status["access_keys"] == sorted(KEYS)
    assert status["aksk"][AK]["locked_for"] > 0
    assert SK not in repr(status)
