"""Authenticators: IAM single-flight and ahead-of-time renewal, AK/SK signing, 401 pause, and
temporary credentials (a static security token, the metadata service)."""

from __future__ import annotations

import re
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import aiohttp
import anyio
import pytest
from aioresponses import aioresponses
from yarl import URL

from poller.clock import SYSTEM_CLOCK, ManualClock
from poller.config import Secret, Settings
from poller.servicestage.auth import (
    AkSk,
    Authenticator,
    AuthHooks,
    AuthUnavailable,
    CredentialService,
    IamToken,
    MetadataCredentials,
    TokenFile,
    parse_security_key,
)
from poller.servicestage.client import ServiceStageClient
from poller.servicestage.outcomes import AuthFailed, Fetched, Transient
from poller.servicestage.signing import verify_request

IAM = "http://iam.test"
TOKENS = re.compile(r"^http://iam\.test/v3/auth/tokens$")
API = re.compile(r"^http://api\.test/v3/p/cas/jobs/J\?.*$")


class Clock(ManualClock):
    """A manual clock whose wall time ``t`` the tests set directly."""

    def __init__(self, now: float = 1_000_000.0) -> None:
        super().__init__(now)
        self.t = now

    def now(self) -> float:
        return self.t


def token_reply(m: aioresponses, token: str, expires_at: float, repeat: bool = False) -> None:
    stamp = datetime.fromtimestamp(expires_at, UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    m.post(TOKENS, status=201, headers={"X-Subject-Token": token},
           payload={"token": {"expires_at": stamp}}, repeat=repeat)  # fmt: skip


def iam(session: aiohttp.ClientSession, clock: Clock, hooks: AuthHooks | None = None) -> IamToken:
    return IamToken(
        CredentialService(session, IAM, clock=clock, hooks=hooks),
        user="u",
        password=Secret("pw-secret"),
        domain="d",
        project_id="p",
    )


async def test_a_thousand_concurrent_requests_cause_one_iam_request() -> None:
    clock = Clock()
    async with aiohttp.ClientSession() as session:
        auth = iam(session, clock)
        with aioresponses() as m:
            token_reply(m, "tok-1", clock.t + 3600, repeat=True)
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
            token_reply(m, "tok-1", clock.t + 1000)
            token_reply(m, "tok-2", clock.t + 2000)
            first = await auth.headers("GET", URL("http://a/"), {}, b"")
            clock.t += 850  # inside the lifetime, before the last 10 % of it
            assert await auth.headers("GET", URL("http://a/"), {}, b"") == first
            clock.t += 60  # now within the last 10 %: renew before it dies
            second = await auth.headers("GET", URL("http://a/"), {}, b"")
    assert (first["X-Auth-Token"], second["X-Auth-Token"]) == ("tok-1", "tok-2")
    assert auth.fetches == 2


async def test_concurrent_401s_share_one_refresh() -> None:
    clock = Clock()
    async with aiohttp.ClientSession() as session:
        auth = iam(session, clock)
        with aioresponses() as m:
            token_reply(m, "tok-1", clock.t + 3600)
            await auth.headers("GET", URL("http://a/"), {}, b"")
            clock.t += 10
            token_reply(m, "tok-2", clock.t + 3600, repeat=True)
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
            clock.t += 1.5  # past the first retry delay
            token_reply(m, "tok-1", clock.t + 3600)
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
            token_reply(m, "tok-1", clock.t + 1000)
            await auth.headers("GET", URL("http://a/"), {}, b"")
            clock.t += 950  # renewal due
            m.post(TOKENS, status=503, body="<html>\xe9</html>".encode("latin-1"))
            assert await auth.headers("GET", URL("http://a/"), {}, b"") == {"X-Auth-Token": "tok-1"}
            clock.t += 100  # now expired, and IAM still down
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
        lookup_secret={"AKID": "SKVALUE"}.get, now=datetime.fromtimestamp(clock.t, UTC),
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


# --- temporary credentials ------------------------------------------------------------------

META = "http://meta.test"
KEY_URL = f"{META}/openstack/latest/securitykey"
SESSION_URL = f"{META}/meta-data/latest/api/token"
JOB_BODY = {"job": {"execution_status": "RUNNING", "job_id": "J", "job_type": "PROVISION"},
            "tasks": [{"task_id": "T1", "task_index": 1, "task_status": "RUNNING"}],
            "task_count": 1}  # fmt: skip


def stamp(epoch: float) -> str:
    return datetime.fromtimestamp(epoch, UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def credential_doc(n: int, expires_at: float) -> dict[str, object]:
    inner = {"access": f"TMPAK{n}", "secret": f"tmp-sk-{n}", "securitytoken": f"sec-tok-{n}"}
    return {"credential": {**inner, "expires_at": stamp(expires_at)}}


def credential_reply(m: aioresponses, n: int, expires_at: float, repeat: bool = False) -> None:
    m.get(KEY_URL, payload=credential_doc(n, expires_at), repeat=repeat)


def no_session_tokens(m: aioresponses) -> None:
    """A metadata service without the session-token call (older ones answer 404)."""
    m.put(SESSION_URL, status=404, repeat=True)


def metadata(
    session: aiohttp.ClientSession, clock: Callable[[], float], hooks: AuthHooks | None = None
) -> MetadataCredentials:
    return MetadataCredentials(CredentialService(session, META, clock=clock, hooks=hooks))


def calls(m: aioresponses, method: str, url: str) -> list[Any]:
    return list(m.requests.get((method, URL(url)), []))


async def signed(
    auth: Authenticator, url: str = "http://api.test/v3/p/cas/jobs/J"
) -> dict[str, str]:
    base = {"Content-Type": "application/json;charset=utf8"}
    return {**base, **await auth.headers("GET", URL(url), base, b"")}


def verifies(headers: dict[str, str], secret_key: str, now: float) -> bool:
    result = verify_request(
        method="GET", url="/v3/p/cas/jobs/J", headers=headers, body=b"",
        lookup_secret=lambda ak: secret_key, now=datetime.fromtimestamp(now, UTC),
        required_signed=("x-security-token",),
    )  # fmt: skip
    return result.ok


async def test_metadata_credentials_sign_with_their_security_token() -> None:
    clock = Clock()
    async with aiohttp.ClientSession() as session:
        auth = metadata(session, clock)
        with aioresponses() as m:
            no_session_tokens(m)
            credential_reply(m, 1, clock.t + 3600)
            headers = await signed(auth)
            (get,) = calls(m, "GET", KEY_URL)
    assert headers["X-Security-Token"] == "sec-tok-1"
    assert headers["Authorization"].startswith("SDK-HMAC-SHA256 Access=TMPAK1, SignedHeaders=")
    assert verifies(headers, "tmp-sk-1", clock.t)
    assert not verifies(headers, "tmp-sk-2", clock.t)
    assert "X-Metadata-Token" not in get.kwargs["headers"]  # the service has no session tokens
    assert get.kwargs["proxy"] is None  # never through a proxy


async def test_a_thousand_concurrent_polls_cause_one_metadata_request() -> None:
    clock = Clock()
    async with aiohttp.ClientSession() as session:
        auth = metadata(session, clock)
        with aioresponses() as m:
            no_session_tokens(m)
            credential_reply(m, 1, clock.t + 3600, repeat=True)
            results: list[dict[str, str]] = []
            async with anyio.create_task_group() as tg:
                for _ in range(1000):

                    async def one() -> None:
                        results.append(await signed(auth))

                    tg.start_soon(one)
            gets = calls(m, "GET", KEY_URL)
    assert auth.fetches == 1
    assert len(gets) == 1
    assert {r["X-Security-Token"] for r in results} == {"sec-tok-1"}


async def test_metadata_credentials_are_renewed_ahead_of_expiry() -> None:
    clock = Clock()
    async with aiohttp.ClientSession() as session:
        auth = metadata(session, clock)
        with aioresponses() as m:
            no_session_tokens(m)
            credential_reply(m, 1, clock.t + 1000)
            credential_reply(m, 2, clock.t + 2000)
            first = await signed(auth)
            clock.t += 850  # before the last 10 % of its life
            assert (await signed(auth))["X-Security-Token"] == "sec-tok-1"
            clock.t += 60  # within the last 10 %, still valid: renew now
            second = await signed(auth)
    assert (first["X-Security-Token"], second["X-Security-Token"]) == ("sec-tok-1", "sec-tok-2")
    assert verifies(second, "tmp-sk-2", clock.t)
    assert auth.fetches == 2


async def test_the_same_credential_handed_back_is_kept_and_asked_for_again_later() -> None:
    clock = Clock()
    async with aiohttp.ClientSession() as session:
        auth = metadata(session, clock)
        with aioresponses() as m:
            no_session_tokens(m)
            credential_reply(m, 1, clock.t + 1000, repeat=True)
            await signed(auth)
            clock.t += 950  # renewal due, but the service has not rotated yet
            assert (await signed(auth))["X-Security-Token"] == "sec-tok-1"
            assert (await signed(auth))["X-Security-Token"] == "sec-tok-1"
            assert auth.fetches == 2  # backing off: not one request per poll
            m.clear()
            no_session_tokens(m)
            credential_reply(m, 2, clock.t + 1000)
            clock.t += 1.5  # past the first back-off
            assert (await signed(auth))["X-Security-Token"] == "sec-tok-2"
    assert auth.fetches == 3


async def test_a_still_valid_credential_is_kept_while_the_metadata_service_is_down() -> None:
    clock = Clock()
    problems: list[str] = []
    refreshes: list[str] = []
    hooks = AuthHooks(problem=problems.append, refreshed=refreshes.append)
    async with aiohttp.ClientSession() as session:
        auth = metadata(session, clock, hooks)
        with aioresponses() as m:
            no_session_tokens(m)
            credential_reply(m, 1, clock.t + 1000)
            await signed(auth)
            clock.t += 950
            m.get(KEY_URL, exception=aiohttp.ClientConnectionError("down"), repeat=True)
            assert (await signed(auth))["X-Security-Token"] == "sec-tok-1"
            clock.t += 100  # expired now, and the service still down
            with pytest.raises(AuthUnavailable, match="metadata service unreachable"):
                await signed(auth)
            m.clear()
            no_session_tokens(m)
            credential_reply(m, 2, clock.t + 1000)
            clock.t += 60  # past any back-off
            assert (await signed(auth))["X-Security-Token"] == "sec-tok-2"
    assert next(p for p in problems if p) == "metadata service unreachable: ClientConnectionError"
    assert problems[-1] == ""
    assert refreshes[0] == "ok"
    assert refreshes[-1] == "ok"
    assert "failed" in refreshes


async def test_a_session_token_is_used_and_renewed_after_a_401() -> None:
    clock = Clock()
    seen: list[str] = []
    async with aiohttp.ClientSession() as session:
        auth = metadata(session, clock, AuthHooks(secret=seen.append))
        with aioresponses() as m:
            m.put(SESSION_URL, status=200, body="md-session-1")
            credential_reply(m, 1, clock.t + 1000)
            await signed(auth)
            clock.t += 950
            m.get(KEY_URL, status=401, body="Unauthorized")  # the session token expired
            m.put(SESSION_URL, status=200, body="md-session-2")
            credential_reply(m, 2, clock.t + 1000)
            assert (await signed(auth))["X-Security-Token"] == "sec-tok-2"
            puts = calls(m, "PUT", SESSION_URL)
            gets = calls(m, "GET", KEY_URL)
    assert [p.kwargs["headers"]["X-Metadata-Token-Ttl-Seconds"] for p in puts] == ["21600"] * 2
    assert [g.kwargs["headers"]["X-Metadata-Token"] for g in gets] == [
        "md-session-1", "md-session-1", "md-session-2"
    ]  # fmt: skip
    assert {"md-session-1", "md-session-2", "tmp-sk-1", "sec-tok-1", "sec-tok-2"} <= set(seen)


async def test_a_server_without_an_agency_is_a_clear_problem() -> None:
    async with aiohttp.ClientSession() as session:
        auth = metadata(session, Clock())
        with aioresponses() as m:
            no_session_tokens(m)
            m.get(
                KEY_URL, status=401, body='{"error": "Please configure Cloud Service Agency first"}'
            )
            with pytest.raises(
                AuthUnavailable, match="Please configure Cloud Service Agency first"
            ):
                await signed(auth)
            puts = calls(m, "PUT", SESSION_URL)
    assert len(puts) == 1  # no session-token retry for this 401


@pytest.mark.parametrize(
    ("reply", "problem"),
    [
        ({"status": 200, "body": "<html>tmp-sk-1</html>"}, "unusable credential: not JSON"),
        ({"payload": {"credential": {"access": "A", "secret": "tmp-sk-1",
                                     "expires_at": "2099-01-01T00:00:00Z"}}},
         "credential.securitytoken is missing"),
        ({"payload": {"credential": {"access": "A", "secret": "tmp-sk-1", "securitytoken": "t",
                                     "expires_at": "soon"}}},
         "credential.expires_at is missing or not an RFC 3339 time"),
        ({"payload": {"credential": {"access": "A B", "secret": "tmp-sk-1", "securitytoken": "t",
                                     "expires_at": "2099-01-01T00:00:00Z"}}},
         "credential.access holds whitespace"),
        ({"payload": credential_doc(1, 999_000.0)}, "handed out an expired credential"),
        ({"status": 500, "body": "tmp-sk-1"}, "refused the credential request: HTTP 500"),
    ],
)  # fmt: skip
async def test_unusable_answers_are_problems_that_quote_no_secret(
    reply: dict[str, Any], problem: str
) -> None:
    problems: list[str] = []
    async with aiohttp.ClientSession() as session:
        auth = metadata(session, Clock(), AuthHooks(problem=problems.append))
        with aioresponses() as m:
            no_session_tokens(m)
            m.get(KEY_URL, **reply)
            with pytest.raises(AuthUnavailable, match=re.escape(problem)):
                await signed(auth)
    assert problem in problems[0]
    assert all("tmp-sk" not in p and "sec-tok" not in p for p in problems)


def test_the_sdk_spellings_of_a_credential_are_read() -> None:
    doc = {"credentials": {"accessKeyId": "AK1", "secretAccessKey": "SK1", "securityToken": "TOK1",
                           "expiration": "2030-01-02T03:04:05.000000Z"}}  # fmt: skip
    credential = parse_security_key(doc)
    assert credential.access_key == "AK1"
    assert (credential.secret_key.reveal(), credential.security_token.reveal()) == ("SK1", "TOK1")
    assert credential.expires_at == datetime(2030, 1, 2, 3, 4, 5, tzinfo=UTC).timestamp()
    assert "SK1" not in repr(credential)
    assert "TOK1" not in repr(credential)
    naive = parse_security_key({"credential": {"access": "A", "secret": "S", "securitytoken": "T",
                                               "expires_at": "2030-01-02T03:04:05"}})  # fmt: skip
    assert naive.expires_at == credential.expires_at  # no zone: UTC


async def test_a_401_gets_one_new_credential_and_the_retry_succeeds() -> None:
    clock = Clock()
    async with aiohttp.ClientSession() as session:
        auth = metadata(session, clock)
        client = ServiceStageClient(session, "http://api.test", auth, clock=ManualClock())
        with aioresponses() as m:
            no_session_tokens(m)
            credential_reply(m, 1, clock.t + 3600)
            credential_reply(m, 2, clock.t + 3600)  # e.g. the agency was changed
            m.get(API, status=401, payload={"error_code": "APIGW.0301"})
            m.get(API, payload=JOB_BODY)
            outcome = await client.fetch_job("p", "J")
            polls = [c.kwargs["headers"] for k, v in m.requests.items() for c in v
                     if k[1].host == "api.test"]  # fmt: skip
    assert isinstance(outcome, Fetched)
    assert [p["X-Security-Token"] for p in polls] == ["sec-tok-1", "sec-tok-2"]
    assert auth.pause_on_unauthorized is False


async def test_a_refused_credential_the_service_cannot_replace_pauses_all_polling() -> None:
    clock = Clock()
    problems: list[str] = []
    async with aiohttp.ClientSession() as session:
        auth = metadata(session, clock)
        client = ServiceStageClient(session, "http://api.test", auth, clock=ManualClock(),
                                    on_auth_problem=problems.append)  # fmt: skip
        with aioresponses() as m:
            no_session_tokens(m)
            credential_reply(m, 1, clock.t + 3600, repeat=True)
            m.get(API, status=401, payload={"error_code": "APIGW.0301"}, repeat=True)
            first = await client.fetch_job("p", "J")
            assert auth.pause_on_unauthorized is True
            second = await client.fetch_job("p", "J")
            polls = sum(len(v) for k, v in m.requests.items() if k[1].host == "api.test")
            # later 401s for the same credential ask the metadata service no more
            await auth.refresh({"X-Security-Token": "sec-tok-1"})
            fetches = auth.fetches
            m.clear()
            no_session_tokens(m)
            credential_reply(m, 2, clock.t + 3600)
            clock.t += 2  # past the back-off: the next renewal brings another credential
            await auth.refresh({"X-Security-Token": "sec-tok-2"})  # a stale 401: nothing
            assert auth.fetches == fetches
            await auth._ensure(replace=auth._maintain_replace())  # what maintain() does
    assert isinstance(first, AuthFailed)
    assert isinstance(second, Transient)
    assert second.retry_after == 30
    assert polls == 2  # one refresh and retry, then the pause: no third bad signature
    assert fetches == 2
    assert "paused for 30s" in problems[-1]
    assert auth.pause_on_unauthorized is False  # a new credential: polls may go again
    assert auth.fetches == 3


async def test_maintain_renews_metadata_credentials_before_they_expire() -> None:
    import time

    async with aiohttp.ClientSession() as session:
        auth = metadata(session, SYSTEM_CLOCK)
        with aioresponses() as m:
            no_session_tokens(m)
            first_expiry = time.time() + 1.0
            credential_reply(m, 1, first_expiry)
            credential_reply(m, 2, time.time() + 60.0)
            async with anyio.create_task_group() as tg:
                tg.start_soon(auth.maintain)
                for _ in range(500):  # 5 s at most
                    if auth.fetches >= 2:
                        break
                    await anyio.sleep(0.01)
                renewed_at = time.time()
                tg.cancel_scope.cancel()
            headers = await signed(auth)
    assert headers["X-Security-Token"] == "sec-tok-2"
    assert renewed_at < first_expiry  # renewed ahead, not after it died
    assert auth.fetches == 2


async def test_static_temporary_credentials_carry_their_security_token() -> None:
    clock = Clock(1_764_201_600.0)
    auth = AkSk(Secret("TMPAK"), Secret("tmp-sk"), security_token=Secret("sec-tok"), clock=clock)
    headers = await signed(auth)
    assert headers["X-Security-Token"] == "sec-tok"
    assert verifies(headers, "tmp-sk", clock.t)
    plain = await signed(AkSk(Secret("AK"), Secret("SK"), clock=clock))
    assert "X-Security-Token" not in plain


async def test_build_authenticator_picks_the_temporary_methods() -> None:
    from poller.servicestage.auth import build_authenticator

    seen: list[str] = []
    hooks = AuthHooks(secret=seen.append)
    base = Settings(api_endpoint="http://127.0.0.1:1", project_id="p")
    async with aiohttp.ClientSession() as session:
        meta = build_authenticator(
            Settings(**{**_fields(base), "credentials": "metadata",
                        "metadata_endpoint": "http://127.0.0.1:2"}),
            session, hooks=hooks,
        )  # fmt: skip
        temporary = build_authenticator(
            Settings(**{**_fields(base), "access_key": Secret("AK"), "secret_key": Secret("SK"),
                        "security_token": Secret("sec-tok-static")}),
            session, hooks=hooks,
        )  # fmt: skip
    assert isinstance(meta, MetadataCredentials)
    assert meta.name == "metadata"
    assert isinstance(temporary, AkSk)
    assert "sec-tok-static" in seen  # handed to the log redactor
    assert (await signed(temporary))["X-Security-Token"] == "sec-tok-static"


def _fields(settings: Any) -> dict[str, Any]:
    import dataclasses

    return {f.name: getattr(settings, f.name) for f in dataclasses.fields(settings)}


def test_metadata_wire_names_are_the_sdks() -> None:
    from huaweicloudsdkcore.auth.internal import MetadataAccessor

    from poller.servicestage import auth

    assert Settings().metadata_endpoint == MetadataAccessor._METADATA_ENDPOINT
    assert MetadataAccessor._GET_SECURITY_KEY_PATH == auth.SECURITY_KEY_PATH
    assert MetadataAccessor._GET_TOKEN_PATH == auth.METADATA_TOKEN_PATH
    assert MetadataAccessor._X_METADATA_TOKEN == auth.METADATA_TOKEN_HEADER
    assert MetadataAccessor._X_METADATA_TOKEN_TTL_SECONDS == auth.METADATA_TOKEN_TTL_HEADER
    assert MetadataAccessor._DEFAULT_TOKEN_TTL_SECONDS == auth._METADATA_TOKEN_TTL
    assert MetadataAccessor._CONFIG_AGENCY_ERROR == auth.AGENCY_ERROR
