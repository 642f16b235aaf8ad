"""The request log (``GET /_sim/requests``) and the 429 burst (``POST /_sim/throttle``)."""

from __future__ import annotations

import contextlib
from typing import TYPE_CHECKING, Any

import aiohttp

from poller.sim import SimHandle
from poller.sim.requestlog import Arrival

if TYPE_CHECKING:  # conftest.py is loaded by pytest; imported here for types only
    from conftest import Api


async def _json(api: Api, method: str, path: str, body: object = None) -> tuple[int, Any]:
    async with api.session.request(method, f"{api.sim.url}{path}", json=body) as response:
        return response.status, await response.json()


async def test_every_api_request_is_logged_with_its_arrival_and_status(
    sim: SimHandle, api: Api
) -> None:
    job_id = await sim.create_job({"job_status": [[0, "RUNNING"]]})
    before = sim.state.wall_clock()
    assert (await api.get(job_id)).status == 200
    assert (await api.get("JOB-nope")).status == 404
    assert (await api.get(job_id, headers={})).status == 401
    after = sim.state.wall_clock()
    logged = await sim.requests()
    assert [a.status for a in logged] == [200, 404, 401]
    assert all(before <= a.at <= after for a in logged)
    assert [a.at for a in logged] == sorted(a.at for a in logged)
    status, body = await _json(api, "GET", f"/_sim/requests?since={logged[1].at}")
    assert status == 200
    assert [row[1] for row in body["requests"]] == [404, 401]
    assert body["dropped"] == 0
    status, body = await _json(api, "GET", "/_sim/requests?since=soon")
    assert status == 400
    await sim.reset_stats()
    assert await sim.requests() == []


async def test_a_reset_connection_is_logged_as_status_0(sim: SimHandle, api: Api) -> None:
    await sim.set_faults(reset=1.0)
    with contextlib.suppress(aiohttp.ClientError):  # the connection is meant to break
        await api.get("JOB-x")
    statuses = [a.status for a in await sim.requests()]
    assert statuses
    assert set(statuses) == {0}


async def test_a_throttle_burst_answers_429_from_the_next_request_for_its_seconds(
    sim: SimHandle, api: Api
) -> None:
    job_id = await sim.create_job({"job_status": [[0, "RUNNING"]]})
    status, body = await _json(api, "POST", "/_sim/throttle", {"seconds": 0.5, "retry_after": 3})
    assert (status, body) == (200, {"seconds": 0.5, "retry_after": 3})
    reply = await api.get(job_id)
    assert reply.status == 429
    assert reply.headers["Retry-After"] == "3"
    assert reply.json()["error_code"] == "APIG.0308"
    burst = sim.state.throttle
    assert burst is not None
    assert burst.began is not None
    burst.began -= 0.5  # as if half a second had passed since the first throttled request
    assert (await api.get(job_id)).status == 200
    assert sim.state.throttle is None  # over
    logged = await sim.requests()
    assert [a.status for a in logged] == [429, 200]
    assert (await sim.stats())["by_fault"]["throttled_429"] == 1
    assert isinstance(logged[0], Arrival)


async def test_a_bad_throttle_request_is_refused(api: Api) -> None:
    for body in ({}, {"seconds": 0}, {"seconds": "1"}, {"seconds": 1, "retry_after": -1},
                 {"seconds": 1, "retry_after": 1.5}, {"seconds": 1, "other": 2}, [1]):  # fmt: skip
        status, reply = await _json(api, "POST", "/_sim/throttle", body)
        assert status == 400, body
        assert "error" in reply
