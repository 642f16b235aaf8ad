"""The HTTP client's handling of odd responses (aioresponses; no network)."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator

import aiohttp
import pytest
from aioresponses import aioresponses

from poller.config import Secret
from poller.servicestage.auth import StaticToken, TokenFile
from poller.servicestage.client import ServiceStageClient, job_url, parse_retry_after
from poller.servicestage.outcomes import AuthFailed, Fetched, NotFound, Rejected, Transient

BASE = "http://api.test"
URL_RE = re.compile(r"^http://api\.test/v3/proj/cas/jobs/JOB-1\?.*$")


def body(
    status: str = "RUNNING", tasks: int = 1, count: int | None = None, start: int = 1
) -> dict[str, object]:
    return {
        "job": {"execution_status": status, "job_id": "JOB-1", "job_type": "PROVISION"},
        "tasks": [{"task_id": f"T{i}", "task_index": i, "task_status": "RUNNING"}
                  for i in range(start, start + tasks)],
        "task_count": tasks if count is None else count,
    }  # fmt: skip


@pytest.fixture
async def client() -> AsyncIterator[ServiceStageClient]:
    async with aiohttp.ClientSession() as session:
        yield ServiceStageClient(session, BASE, StaticToken(Secret("tkn")), page_size=2)


async def test_success_sends_the_token_and_returns_a_snapshot(client: ServiceStageClient) -> None:
    with aioresponses() as m:
        m.get(URL_RE, payload=body(tasks=2))
        outcome = await client.fetch_job("proj", "JOB-1")
        (request,) = next(iter(m.requests.values()))
    assert isinstance(outcome, Fetched)
    assert [t.task_id for t in outcome.snapshot.tasks] == ["T1", "T2"]
    assert request.kwargs["headers"]["X-Auth-Token"] == "tkn"


async def test_pages_are_followed_until_every_task_is_in_hand(client: ServiceStageClient) -> None:
    with aioresponses() as m:
        m.get(URL_RE, payload=body(tasks=2, count=5, start=1))
        m.get(URL_RE, payload=body(tasks=2, count=5, start=3))
        m.get(URL_RE, payload=body(tasks=1, count=5, start=5))
        outcome = await client.fetch_job("proj", "JOB-1")
        offsets = [str(k[1].query["offset"]) for k in m.requests for _ in m.requests[k]]
    assert isinstance(outcome, Fetched)
    assert len(outcome.snapshot.tasks) == 5
    assert outcome.requests == 3
    assert sorted(offsets) == ["0", "2", "4"]


async def test_empty_page_before_all_tasks_is_transient(client: ServiceStageClient) -> None:
    with aioresponses() as m:
        m.get(URL_RE, payload=body(tasks=2, count=5))
        m.get(URL_RE, payload=body(tasks=0, count=5))
        outcome = await client.fetch_job("proj", "JOB-1")
    assert isinstance(outcome, Transient)
    assert "incomplete" in outcome.reason


async def test_task_count_changing_between_pages_is_transient(client: ServiceStageClient) -> None:
    with aioresponses() as m:
        m.get(URL_RE, payload=body(tasks=2, count=5))
        m.get(URL_RE, payload=body(tasks=2, count=6, start=3))
        outcome = await client.fetch_job("proj", "JOB-1")
    assert isinstance(outcome, Transient)
    assert "changed" in outcome.reason


@pytest.mark.parametrize(
    ("status", "text", "expected"),
    [
        (500, "<html>oops</html>", Transient),
        (502, "", Transient),
        (503, '{"error_code":"SVCSTG.00100500"}', Transient),
        (429, '{"error_code":"APIG.0308","error_msg":"throttled","request_id":"r1"}', Transient),
        (404, '{"error_code":"SVCSTG.00100404","error_msg":"not found"}', NotFound),
        (403, '{"error_code":"SVCSTG.00100403","error_msg":"forbidden"}', Rejected),
        (400, '{"error_code":"SVCSTG.00100400","error_msg":"bad"}', Rejected),
        (200, '{"job": {"execution_status": "RUN', Transient),
        (200, "<html>proxy login</html>", Transient),
        (200, '{"tasks": []}', Transient),
    ],
)
async def test_responses_are_classified(
    client: ServiceStageClient, status: int, text: str, expected: type
) -> None:
    with aioresponses() as m:
        m.get(URL_RE, status=status, body=text)
        outcome = await client.fetch_job("proj", "JOB-1")
    assert isinstance(outcome, expected)


async def test_rejection_detail_carries_the_error_code(client: ServiceStageClient) -> None:
    with aioresponses() as m:
        m.get(URL_RE, status=403, body='{"error_code":"SVCSTG.00100403","error_msg":"denied"}')
        outcome = await client.fetch_job("proj", "JOB-1")
    assert isinstance(outcome, Rejected)
    assert outcome.detail == "SVCSTG.00100403: denied"


async def test_retry_after_is_read_on_429(client: ServiceStageClient) -> None:
    with aioresponses() as m:
        m.get(URL_RE, status=429, body="{}", headers={"Retry-After": "3"})
        outcome = await client.fetch_job("proj", "JOB-1")
    assert isinstance(outcome, Transient)
    assert outcome.retry_after == 3


async def test_connection_errors_and_timeouts_are_transient(client: ServiceStageClient) -> None:
    with aioresponses() as m:
        m.get(URL_RE, exception=aiohttp.ClientConnectionError("reset"))
        m.get(URL_RE, exception=TimeoutError())
        first = await client.fetch_job("proj", "JOB-1")
        second = await client.fetch_job("proj", "JOB-1")
    assert isinstance(first, Transient)
    assert "connection" in first.reason
    assert isinstance(second, Transient)
    assert "timed out" in second.reason


async def test_401_refreshes_once_then_reports_auth_failure(tmp_path: object) -> None:
    from pathlib import Path

    token = Path(str(tmp_path)) / "token"
    token.write_text("old-token")
    async with aiohttp.ClientSession() as session:
        client = ServiceStageClient(session, BASE, TokenFile(str(token)))
        with aioresponses() as m:
            m.get(URL_RE, status=401, body='{"error_code":"APIGW.0301","request_id":"rq"}')
            m.get(URL_RE, status=401, body='{"error_code":"APIGW.0301","request_id":"rq"}')
            outcome = await client.fetch_job("proj", "JOB-1")
            assert isinstance(outcome, AuthFailed)
            assert outcome.request_id == "rq"
            assert sum(len(v) for v in m.requests.values()) == 2
            m.get(URL_RE, status=401, body="{}")
            m.get(URL_RE, payload=body())
            token.write_text("new-token")  # rotated between the 401 and the retry
            outcome = await client.fetch_job("proj", "JOB-1")
            sent = [c.kwargs["headers"]["X-Auth-Token"] for v in m.requests.values() for c in v]
    assert isinstance(outcome, Fetched)
    assert sent[-1] == "new-token"


def test_job_url_encodes_ids_as_single_segments() -> None:
    assert str(job_url(BASE, "p", "JOB-1")) == "http://api.test/v3/p/cas/jobs/JOB-1"
    for bad in ("../x", "a/b", "x?y", "a b", "%2e%2e"):
        with pytest.raises(ValueError, match="job_id"):
            job_url(BASE, "p", bad)


def test_retry_after_parsing() -> None:
    assert parse_retry_after("5") == 5
    assert parse_retry_after(None) is None
    assert parse_retry_after("soon") is None
    assert parse_retry_after("Wed, 21 Oct 2015 07:28:00 GMT", now=1445412470.0) == 10.0
    assert parse_retry_after("-3") == 0


async def test_job_status_changing_between_pages_is_transient(client: ServiceStageClient) -> None:
    with aioresponses() as m:
        m.get(URL_RE, payload=body(status="RUNNING", tasks=2, count=4))
        m.get(URL_RE, payload=body(status="SUCCEEDED", tasks=2, count=4, start=3))
        outcome = await client.fetch_job("proj", "JOB-1")
    assert isinstance(outcome, Transient)
    assert "job status changed" in outcome.reason


async def test_a_page_that_brings_no_new_task_stops_paging(client: ServiceStageClient) -> None:
    with aioresponses() as m:  # a server that ignores offset
        m.get(URL_RE, payload=body(tasks=2, count=5), repeat=True)
        outcome = await client.fetch_job("proj", "JOB-1")
        sent = sum(len(v) for v in m.requests.values())
    assert isinstance(outcome, Transient)
    assert "no new task" in outcome.reason
    assert sent == 2


async def test_a_persistent_401_under_a_token_is_reported_until_a_success() -> None:
    problems: list[str] = []
    async with aiohttp.ClientSession() as session:
        client = ServiceStageClient(
            session, BASE, StaticToken(Secret("wrong")), on_auth_problem=problems.append
        )
        with aioresponses() as m:
            m.get(URL_RE, status=401, body='{"error_code":"APIGW.0301","request_id":"q"}')
            m.get(URL_RE, status=401, body='{"error_code":"APIGW.0301","request_id":"q"}')
            m.get(URL_RE, payload=body())
            assert isinstance(await client.fetch_job("proj", "JOB-1"), AuthFailed)
            assert isinstance(await client.fetch_job("proj", "JOB-1"), Fetched)
    assert len(problems) == 2
    assert "401 under token" in problems[0]
    assert "request_id=q" in problems[0]
    assert problems[1] == ""  # cleared by the next success


async def test_polls_waiting_on_the_rate_limit_see_a_pause_that_began_meanwhile() -> None:
    import anyio

    from poller.servicestage.auth import AkSk

    everyone_waiting = anyio.Event()
    opened = anyio.Event()
    entered = 0
    warm = False

    async def gate() -> None:
        nonlocal entered
        if not warm:
            return
        entered += 1
        mine = entered
        if entered == 4:
            everyone_waiting.set()
        if mine == 1:  # the first poll goes once all four have passed the pause check
            await everyone_waiting.wait()
            return
        await opened.wait()  # the others wait for a rate-limit slot

    async with aiohttp.ClientSession() as session:
        client = ServiceStageClient(session, BASE, AkSk(Secret("AK"), Secret("SK")), gate=gate)
        with aioresponses() as m:
            # The key is known to work (an unknown one is probed by one poll first, the others
            # waiting for its answer), then the secret key is rotated wrongly.
            m.get(URL_RE, payload=body())
            m.get(URL_RE, status=401, body="{}", repeat=True)
            assert isinstance(await client.fetch_job("proj", "JOB-1"), Fetched)
            warm = True
            results: list[object] = []
            async with anyio.create_task_group() as tg:
                for _ in range(4):
                    tg.start_soon(lambda: _collect(client, results))
                await everyone_waiting.wait()
                await anyio.wait_all_tasks_blocked()  # the first poll has had its 401
                opened.set()  # the slot opens only after the pause began
            sent = sum(len(v) for v in m.requests.values())
    assert sent == 2  # one good request, then one bad signature, not four
    assert sum(isinstance(r, Transient) for r in results) == 3


async def _collect(client: ServiceStageClient, results: list[object]) -> None:
    results.append(await client.fetch_job("proj", "JOB-1"))


async def test_an_instance_id_goes_in_the_query_and_a_bad_one_is_rejected(
    client: ServiceStageClient,
) -> None:
    with aioresponses() as m:
        m.get(URL_RE, payload=body())
        assert isinstance(await client.fetch_job("proj", "JOB-1", "inst-1"), Fetched)
        ((_, url),) = list(m.requests)
    assert url.query["instance_id"] == "inst-1"
    assert isinstance(await client.fetch_job("proj", "JOB-1", "a&limit=1"), Rejected)
