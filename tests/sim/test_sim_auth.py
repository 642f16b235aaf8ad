"""Who may call the emulated API: X-Auth-Token checks and the 401 the gateway sends."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from aiohttp import web

from poller.sim import SimHandle, Verdict, token_auth

if TYPE_CHECKING:  # conftest.py is loaded by pytest; imported here for types only
    from conftest import Api, StartSim


async def test_request_without_token_gets_401_apigw_0301_with_request_id(
    sim: SimHandle, api: Api, three_task_job: dict[str, Any]
) -> None:
    await sim.create_job(three_task_job)

    reply = await api.get("JOB-three", headers={})

    assert reply.status == 401
    body = reply.json()
    assert body["error_code"] == "APIGW.0301"
    assert body["error_msg"].startswith("Incorrect IAM authentication information: ")
    assert body["request_id"] == reply.headers["X-Request-Id"]


async def test_request_with_wrong_token_gets_401(
    sim: SimHandle, api: Api, three_task_job: dict[str, Any]
) -> None:
    await sim.create_job(three_task_job)

    reply = await api.get("JOB-three", headers={"X-Auth-Token": "not-it"})

    assert reply.status == 401
    assert reply.json()["error_code"] == "APIGW.0301"


async def test_request_with_the_default_token_gets_200(
    sim: SimHandle, api: Api, three_task_job: dict[str, Any]
) -> None:
    await sim.create_job(three_task_job)

    reply = await api.get("JOB-three", headers={"X-Auth-Token": "sim-token"})

    assert reply.status == 200


async def test_any_of_several_configured_tokens_is_accepted(
    start_sim: StartSim, make_api: Callable[[SimHandle], Api], three_task_job: dict[str, Any]
) -> None:
    sim = await start_sim(authenticators=(token_auth(["one", "two"]),))
    await sim.create_job(three_task_job)
    api = make_api(sim)

    statuses = [
        (await api.get("JOB-three", headers={"X-Auth-Token": token})).status
        for token in ("one", "two", "sim-token")
    ]

    assert statuses == [200, 200, 401]


async def test_no_authenticators_means_no_credentials_needed(
    start_sim: StartSim, make_api: Callable[[SimHandle], Api], three_task_job: dict[str, Any]
) -> None:
    sim = await start_sim(authenticators=())
    await sim.create_job(three_task_job)

    reply = await make_api(sim).get("JOB-three", headers={})

    assert reply.status == 200


class _HeaderKey:
    """A stand-in for another kind of credentials, to exercise the seam."""

    def verify(self, request: web.BaseRequest) -> Verdict | None:
        key = request.headers.get("X-Test-Key")
        if key is None:
            return None
        return Verdict(accepted=key == "good", detail="verify aksk signature fail")


async def test_a_request_is_accepted_when_any_authenticator_accepts_it(
    start_sim: StartSim, make_api: Callable[[SimHandle], Api], three_task_job: dict[str, Any]
) -> None:
    sim = await start_sim(authenticators=(token_auth(["tok"]), _HeaderKey()))
    await sim.create_job(three_task_job)
    api = make_api(sim)

    by_key = await api.get("JOB-three", headers={"X-Test-Key": "good"})
    bad_key = await api.get("JOB-three", headers={"X-Test-Key": "bad"})

    assert by_key.status == 200
    assert bad_key.status == 401
    assert bad_key.json()["error_msg"].endswith("verify aksk signature fail")
