"""Fault injection over real HTTP: each kind at rate 1.0, latency, and the counters."""

from __future__ import annotations

import contextlib
import json
import logging
import time
from typing import TYPE_CHECKING, Any

import aiohttp
import pytest

from poller.sim import SimHandle

if TYPE_CHECKING:  # conftest.py is loaded by pytest; imported here for types only
    from conftest import Api


@pytest.fixture
async def job(sim: SimHandle, three_task_job: dict[str, Any]) -> str:
    return await sim.create_job(three_task_job)


async def test_html_500_answers_500_with_an_html_body(sim: SimHandle, api: Api, job: str) -> None:
    await sim.set_faults(html_500=1.0)

    reply = await api.get(job)

    assert reply.status == 500
    assert reply.headers["Content-Type"].startswith("text/html")
    assert reply.body.startswith(b"<html>")


async def test_empty_502_answers_502_with_an_empty_body(sim: SimHandle, api: Api, job: str) -> None:
    await sim.set_faults(empty_502=1.0)

    reply = await api.get(job)

    assert (reply.status, reply.body) == (502, b"")


async def test_unavailable_503_answers_json_with_retry_after(
    sim: SimHandle, api: Api, job: str
) -> None:
    await sim.set_faults(unavailable_503=1.0, retry_after=7)

    reply = await api.get(job)

    assert reply.status == 503
    assert reply.headers["Retry-After"] == "7"
    assert "error_code" in reply.json()


async def test_throttled_429_answers_apig_0308_with_retry_after_and_request_id(
    sim: SimHandle, api: Api, job: str
) -> None:
    await sim.set_faults(throttled_429=1.0)

    reply = await api.get(job)

    assert reply.status == 429
    assert reply.headers["Retry-After"] == "2"
    body = reply.json()
    assert body["error_code"] == "APIG.0308"
    assert body["error_msg"].startswith("The throttling threshold has been reached")
    assert body["request_id"] == reply.headers["X-Request-Id"]


async def test_truncated_answers_200_with_half_a_body_that_is_not_json(
    sim: SimHandle, api: Api, job: str
) -> None:
    whole = await api.get(job)
    await sim.set_faults(truncated=1.0)

    cut = await api.get(job)

    assert cut.status == 200
    assert cut.body == whole.body[: len(whole.body) // 2]
    assert int(cut.headers["Content-Length"]) == len(cut.body)
    with pytest.raises(json.JSONDecodeError):
        json.loads(cut.body)


async def test_reset_aborts_the_connection_without_an_answer_or_server_traceback(
    sim: SimHandle, api: Api, job: str, caplog: pytest.LogCaptureFixture
) -> None:
    await sim.set_faults(reset=1.0)

    with caplog.at_level(logging.INFO), pytest.raises(aiohttp.ClientConnectionError):
        await api.get(job)

    assert not [r for r in caplog.records if r.levelno >= logging.WARNING]


async def test_latency_delays_every_answer(sim: SimHandle, api: Api, job: str) -> None:
    await sim.set_faults(latency=0.2)

    started = time.monotonic()
    reply = await api.get(job)

    assert reply.status == 200
    assert time.monotonic() - started >= 0.2


async def test_error_rate_spreads_over_every_fault_kind(sim: SimHandle, api: Api, job: str) -> None:
    await sim.set_faults(error_rate=1.0, seed=3)

    for _ in range(120):
        with contextlib.suppress(aiohttp.ClientConnectionError):
            await api.get(job)

    by_fault = (await sim.stats())["by_fault"]
    assert all(
        by_fault[kind] > 0
        for kind in (
            "html_500",
            "empty_502",
            "unavailable_503",
            "throttled_429",
            "truncated",
            "reset",
        )
    )


async def test_faults_are_counted_by_kind_and_status(sim: SimHandle, api: Api, job: str) -> None:
    await sim.set_faults(throttled_429=1.0)
    await api.get(job)
    await api.get(job)
    await sim.set_faults()
    await api.get(job)

    stats = await sim.stats()

    assert stats["requests"] == 3
    assert stats["by_status"] == {"200": 1, "429": 2}
    assert stats["by_fault"]["throttled_429"] == 2
