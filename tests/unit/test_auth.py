"""Authenticators: IAM single-flight and ahead-of-time renewal, AK/SK signing, 401 pause."""

from __future__ import annotations

import re
from datetime import UTC, datetime
from pathlib import Path

import aiohttp
import anyio
import pytest
from aioresponses import aioresponses
from yarl import URL

from poller.clock import ManualClock
from poller.config import Secret
from poller.servicestage.auth import AkSk, AuthHooks, AuthUnavailable, IamToken, TokenFile
from poller.servicestage.client import ServiceStageClient
from poller.servicestage.outcomes import AuthFailed, Transient
from poller.servicestage.signing import verify_request

IAM = "http://iam.test"
TOKENS = re.compile(r"^http://iam\.test/v3/auth/tokens$")
API = re.compile(r"^http://api\.test/v3/p/cas/jobs/J\?.*$")


class Clock:
    def __init__(self, now: float = 1_000_000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def token_reply(m: aioresponses, token: str, expires_at: float, repeat: bool = False) -> None:
    stamp = datetime.fromtimestamp(expires_at, UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    m.post(TOKENS, status=201, headers={"X-Subject-Token": token},
           payload={"token": {"expires_at": stamp}}, repeat=repeat)  # fmt: skip


def iam(session: aiohttp.ClientSession, clock: Clock, hooks: AuthHooks | None = None) -> IamToken:
    return IamToken(session, endpoint=IAM, user="u", password=Secret("pw-secret"), domain="d",
                    project_id="p", clock=clock, hooks=hooks)  # fmt: skip


async def test_a_thousand_concurrent_requests_cause_one_iam_request() -> None:
    clock = Clock()
    async with aiohttp.ClientSession() as session:
        auth = iam(session, clock)
        with aioresponses() as m:
            token_reply(m, "tok-1", clock.now + 3600, repeat=True)
            results: list[dict[str, str]] = []
            async with anyio.create_task_group() as tg:
                for _ in range(1000):

                    async def one() -> None:
                        results.append(await auth.headers("GET", URL("http://api.test/x"), {}, b""))

                    tg.start_soon(one)
    assert auth.fetches == 1
    assert all(r == {"X-Auth-Token": "tok-1"} for r in results)


async def test_token_is_renewed_ahead_of_expiry_not_after() -> None:
    clock = Clock()
    async with aiohttp.ClientSession() as session:
        auth = iam(session, clock)
        with aioresponses() as m:
            token_reply(m, "tok-1", clock.now + 1000)
            token_reply(m, "tok-2", clock.now + 2000)
            first = await auth.headers("GET", URL("http://a/"), {}, b"")
            clock.now += 850  # inside the lifetime, before the last 10 % of it
            assert await auth.headers("GET", URL("http://a/"), {}, b"") == first
            clock.now += 60  # now within the last 10 %: renew before it dies
            second = await auth.headers("GET", URL("http://a/"), {}, b"")
    assert (first["X-Auth-Token"], second["X-Auth-Token"]) == ("tok-1", "tok-2")
    assert auth.fetches == 2


async def test_concurrent_401s_share_one_refresh() -> None:
    clock = Clock()
    async with aiohttp.ClientSession() as session:
        auth = iam(session, clock)
        with aioresponses() as m:
            token_reply(m, "tok-1", clock.now + 3600)
            await auth.headers("GET", URL("http://a/"), {}, b"")
            clock.now += 10
            token_reply(m, "tok-2", clock.now + 3600, repeat=True)
            async with anyio.create_task_group() as tg:
                for _ in range(100):
                    tg.start_soon(auth.refresh, {"X-Auth-Token": "tok-1"})
            assert auth.fetches == 2
            await auth.refresh({"X-Auth-Token": "tok-1"})  # a late 401 for the old token
    assert auth.fetches == 2


async def test_iam_unreachable_is_reported_and_retried_later() -> None:
    clock = Clock()
    problems: list[str] = []
    refreshes: list[str] = []
    hooks = AuthHooks(problem=problems.append, refreshed=refreshes.append)
    async with aiohttp.ClientSession() as session:
        auth = iam(session, clock, hooks)
        with aioresponses() as m:
            m.post(TOKENS, exception=aiohttp.ClientConnectionError("down"))
            with pytest.raises(AuthUnavailable, match="IAM unreachable"):
                await auth.headers("GET", URL("http://a/"), {}, b"")
            with pytest.raises(AuthUnavailable, match="IAM unreachable"):
                await auth.headers("GET", URL("http://a/"), {}, b"")  # remembered, not re-asked
            assert auth.fetches == 1
            clock.now += 1.5  # past the first retry delay
            token_reply(m, "tok-1", clock.now + 3600)
            assert await auth.headers("GET", URL("http://a/"), {}, b"") == {"X-Auth-Token": "tok-1"}
    assert problems[0].startswith("IAM unreachable")
    assert problems[-1] == ""
    assert refreshes == ["failed", "ok"]
    assert all("pw-secret" not in p for p in problems)


async def test_a_failed_renewal_keeps_using_the_token_until_it_expires() -> None:
    clock = Clock()
    async with aiohttp.ClientSession() as session:
        auth = iam(session, clock)
        with aioresponses() as m:
            token_reply(m, "tok-1", clock.now + 1000)
            await auth.headers("GET", URL("http://a/"), {}, b"")
            clock.now += 950  # renewal due
            m.post(TOKENS, status=503, body="<html>\xe9</html>".encode("latin-1"))
            assert await auth.headers("GET", URL("http://a/"), {}, b"") == {"X-Auth-Token": "tok-1"}
            clock.now += 100  # now expired, and IAM still down
            m.post(TOKENS, status=503, body=b"")
            with pytest.raises(AuthUnavailable, match="HTTP 503"):
                await auth.headers("GET", URL("http://a/"), {}, b"")


async def test_wrong_iam_password_is_a_clear_problem() -> None:
    async with aiohttp.ClientSession() as session:
        auth = iam(session, Clock())
        with aioresponses() as m:
            m.post(TOKENS, status=401, payload={"error": {"code": 401, "message": "wrong"}})
            with pytest.raises(AuthUnavailable, match="HTTP 401"):
                await auth.headers("GET", URL("http://a/"), {}, b"")


async def test_runtime_tokens_are_handed_to_the_redactor() -> None:
    seen: list[str] = []
    async with aiohttp.ClientSession() as session:
        auth = iam(session, Clock(), AuthHooks(secret=seen.append))
        with aioresponses() as m:
            token_reply(m, "tok-secret-1", 2_000_000.0)
            await auth.headers("GET", URL("http://a/"), {}, b"")
    assert seen == ["tok-secret-1"]


async def test_aksk_headers_verify_with_the_same_secret() -> None:
    clock = Clock(1_764_201_600.0)
    auth = AkSk(Secret("AKID"), Secret("SKVALUE"), clock=clock)
    url = URL("http://api.test/v3/p/cas/jobs/J?limit=50&offset=0")
    base = {"Content-Type": "application/json;charset=utf8"}
    headers = {**base, **await auth.headers("GET", url, base, b"")}
    assert headers["Authorization"].startswith("SDK-HMAC-SHA256 Access=AKID, SignedHeaders=")
    result = verify_request(
        method="GET", url=str(url), headers={**headers, "Host": "api.test"}, body=b"",
        lookup_secret={"AKID": "SKVALUE"}.get, now=datetime.fromtimestamp(clock.now, UTC),
    )  # fmt: skip
    assert result.ok, result.detail


async def test_a_401_under_aksk_pauses_every_poll_instead_of_retrying_each() -> None:
    clock = ManualClock()
    problems: list[str] = []
    async with aiohttp.ClientSession() as session:
        client = ServiceStageClient(
            session, "http://api.test", AkSk(Secret("AK"), Secret("SK")),
            on_auth_problem=problems.append, clock=clock,
        )  # fmt: skip
        with aioresponses() as m:
            m.get(API, status=401, payload={"error_code": "APIGW.0301", "request_id": "r-1"})
            first = await client.fetch_job("p", "J")
            second = await client.fetch_job("p", "J")
            sent = sum(len(v) for v in m.requests.values())
    assert isinstance(first, AuthFailed)
    assert isinstance(second, Transient)
    assert second.retry_after == 30
    assert sent == 1  # the paused poll sent nothing: no second bad signature
    assert "request_id=r-1" in problems[0]
    assert "paused for 30s" in problems[0]


async def test_token_file_change_is_noticed_on_the_next_request(tmp_path: Path) -> None:
    path = tmp_path / "token"
    path.write_text("one")
    auth = TokenFile(str(path))
    assert await auth.headers("GET", URL("http://a/"), {}, b"") == {"X-Auth-Token": "one"}
    path.write_text("two-longer")
    assert await auth.headers("GET", URL("http://a/"), {}, b"") == {"X-Auth-Token": "two-longer"}
    path.unlink()
    with pytest.raises(AuthUnavailable, match="cannot read token file"):
        await auth.headers("GET", URL("http://a/"), {}, b"")
