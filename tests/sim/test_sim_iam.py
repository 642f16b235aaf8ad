"""The emulated IAM token endpoint and the job API's handling of the tokens it issues.

Token lifetimes are wall time: the conftest emulators run a manual clock frozen in 2024, yet
``expires_at`` is close to now, as the daemon expects.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from datetime import datetime
from typing import TYPE_CHECKING, Any

import aiohttp
import pytest

from poller.sim import IamUser, SimConfig, SimHandle, running_sim

if TYPE_CHECKING:  # conftest.py is loaded by pytest; imported here for types only
    from conftest import Api, StartSim

USER = IamUser(name="deployer", password="pw-0123-secret", domain="acme")
ANY_DOMAIN = IamUser(name="roamer", password="roam-secret")
PROJECT = "0123456789abcdef0123456789abcdef"
JOB = {"job_id": "JOB-1", "job_status": [[0, "RUNNING"]]}


@pytest.fixture
async def sim(start_sim: StartSim) -> SimHandle:
    """An emulator with two IAM users, the default 24 h lifetime and one job."""
    handle = await start_sim(iam_users=(USER, ANY_DOMAIN))
    await handle.create_job(JOB)
    return handle


def _body(
    name: str = USER.name,
    password: str = USER.password,
    domain: str = "acme",
    project_id: str = PROJECT,
) -> dict[str, Any]:
    return {
        "auth": {
            "identity": {
                "methods": ["password"],
                "password": {
                    "user": {"name": name, "password": password, "domain": {"name": domain}}
                },
            },
            "scope": {"project": {"id": project_id}},
        }
    }


async def _token_request(
    session: aiohttp.ClientSession, sim: SimHandle, body: object
) -> tuple[int, dict[str, str], Any]:
    async with session.post(f"{sim.iam_url}/v3/auth/tokens", json=body) as response:
        return response.status, dict(response.headers), await response.json()


async def _token(session: aiohttp.ClientSession, sim: SimHandle, **kwargs: str) -> str:
    status, headers, _ = await _token_request(session, sim, _body(**kwargs))
    assert status == 201
    return headers["X-Subject-Token"]


def _epoch(text: str) -> float:
    assert text.endswith("Z")
    return datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()


async def test_correct_credentials_get_201_with_a_subject_token(
    sim: SimHandle, session: aiohttp.ClientSession
) -> None:
    status, headers, _ = await _token_request(session, sim, _body())

    assert status == 201
    assert len(headers["X-Subject-Token"]) >= 32


async def test_token_body_has_expiry_24h_after_issue_in_wall_time(
    sim: SimHandle, session: aiohttp.ClientSession
) -> None:
    before = time.time()
    _, _, body = await _token_request(session, sim, _body())

    token = body["token"]
    issued, expires = _epoch(token["issued_at"]), _epoch(token["expires_at"])
    assert before - 1 <= issued <= time.time() + 1
    assert expires - issued == pytest.approx(24 * 3600, abs=0.01)
    assert token["methods"] == ["password"]
    assert token["project"] == {"id": PROJECT}
    assert token["user"] == {"name": "deployer", "domain": {"name": "acme"}}


async def test_each_request_gets_a_new_token(
    sim: SimHandle, session: aiohttp.ClientSession
) -> None:
    first, second = await _token(session, sim), await _token(session, sim)

    assert first != second


async def test_user_without_a_domain_is_accepted_under_any_domain_name(
    sim: SimHandle, session: aiohttp.ClientSession
) -> None:
    body = _body(ANY_DOMAIN.name, ANY_DOMAIN.password, domain="whatever")

    status, _, _ = await _token_request(session, sim, body)

    assert status == 201


@pytest.mark.parametrize(
    "wrong",
    [
        {"password": "not-it"},
        {"name": "nobody"},
        {"domain": "other-domain"},
    ],
    ids=["password", "user", "domain"],
)
async def test_wrong_credentials_get_401_in_iam_error_shape(
    sim: SimHandle, session: aiohttp.ClientSession, wrong: dict[str, str]
) -> None:
    status, headers, body = await _token_request(session, sim, _body(**wrong))

    assert status == 401
    assert "X-Subject-Token" not in headers
    assert body == {
        "error": {
            "code": 401,
            "message": "The username or password is wrong.",
            "title": "Unauthorized",
        }
    }


async def test_malformed_token_request_gets_400(
    sim: SimHandle, session: aiohttp.ClientSession
) -> None:
    body = _body()
    del body["auth"]["scope"]

    status, _, answer = await _token_request(session, sim, body)

    assert status == 400
    assert answer["error"]["code"] == 400
    assert "auth.scope.project.id" in answer["error"]["message"]


async def test_answers_never_contain_the_password(
    sim: SimHandle, session: aiohttp.ClientSession
) -> None:
    good = await _token_request(session, sim, _body())
    bad = await _token_request(session, sim, _body(domain="x"))

    assert USER.password not in repr((good, bad))
    assert USER.password not in repr(sim.config)


async def test_issued_token_is_accepted_by_the_job_api(
    sim: SimHandle, api: Api, session: aiohttp.ClientSession
) -> None:
    token = await _token(session, sim)

    reply = await api.get("JOB-1", headers={"X-Auth-Token": token})

    assert reply.status == 200


async def test_static_token_still_works_beside_iam(sim: SimHandle, api: Api) -> None:
    reply = await api.get("JOB-1", headers={"X-Auth-Token": "sim-token"})

    assert reply.status == 200


async def test_expired_token_gets_401_token_expires(
    make_api: Callable[[SimHandle], Api], session: aiohttp.ClientSession
) -> None:
    wall = [time.time()]
    config = SimConfig(iam_users=(USER,), iam_token_lifetime=60)
    async with running_sim(config, wall_clock=lambda: wall[0]) as sim:
        await sim.create_job(JOB)
        token = await _token(session, sim)
        wall[0] += 59.9
        alive = await make_api(sim).get("JOB-1", headers={"X-Auth-Token": token})
        wall[0] += 0.1
        expired = await make_api(sim).get("JOB-1", headers={"X-Auth-Token": token})

    assert alive.status == 200
    assert expired.status == 401
    assert expired.json()["error_code"] == "APIGW.0301"
    assert expired.json()["error_msg"] == "Incorrect IAM authentication information: token expires"


async def test_short_lived_token_expires_in_real_time_despite_a_frozen_sim_clock(
    start_sim: StartSim, make_api: Callable[[SimHandle], Api], session: aiohttp.ClientSession
) -> None:
    sim = await start_sim(iam_users=(USER,), iam_token_lifetime=0.3)
    await sim.create_job(JOB)
    _, headers, body = await _token_request(session, sim, _body())
    token = headers["X-Subject-Token"]
    await asyncio.sleep(max(0.0, _epoch(body["token"]["expires_at"]) - time.time()) + 0.05)

    reply = await make_api(sim).get("JOB-1", headers={"X-Auth-Token": token})

    assert reply.status == 401


async def test_revoke_endpoint_makes_issued_tokens_401(
    sim: SimHandle, api: Api, session: aiohttp.ClientSession
) -> None:
    token = await _token(session, sim)

    async with session.post(f"{sim.url}/_sim/iam/revoke") as response:
        revoked = await response.json()
    reply = await api.get("JOB-1", headers={"X-Auth-Token": token})

    assert revoked == {"revoked": 1}
    assert reply.status == 401
    assert reply.json()["error_msg"].endswith("token revoked")


async def test_a_token_obtained_after_revocation_works(
    sim: SimHandle, api: Api, session: aiohttp.ClientSession
) -> None:
    await _token(session, sim)
    await sim.revoke_iam_tokens()
    token = await _token(session, sim)

    reply = await api.get("JOB-1", headers={"X-Auth-Token": token})

    assert reply.status == 200


async def test_stats_count_token_requests_issues_and_failures(
    sim: SimHandle, session: aiohttp.ClientSession
) -> None:
    for _ in range(3):
        await _token(session, sim)
    await _token_request(session, sim, _body(password="wrong"))

    stats = await sim.stats()

    assert (stats["iam_requests"], stats["iam_tokens_issued"], stats["iam_failures"]) == (4, 3, 1)
    assert stats["requests"] == 0  # the job API's own counter is untouched


async def test_auth_status_shows_users_and_live_tokens_without_passwords(
    sim: SimHandle, session: aiohttp.ClientSession
) -> None:
    await _token(session, sim)

    async with session.get(f"{sim.url}/_sim/auth") as response:
        status = await response.json()

    assert status["iam_users"] == ["deployer@acme", "roamer"]
    assert status["iam_live_tokens"] == 1
    assert USER.password not in repr(status)


async def test_token_endpoint_is_absent_without_iam_users(
    start_sim: StartSim, session: aiohttp.ClientSession
) -> None:
    sim = await start_sim()

    async with session.post(f"{sim.url}/v3/auth/tokens", json=_body()) as response:
        status = response.status

    assert status == 404
