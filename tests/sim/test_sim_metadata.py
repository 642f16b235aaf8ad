"""The emulated metadata service (temporary AK/SK with a security token) and the job API's
verification of those credentials: the token must come with its AK, signed, before expiry.

Credential lifetimes are wall time; tests that need time to pass give the emulator a wall clock
of their own and sign with it.
"""

from __future__ import annotations

import asyncio
import json
import re
import signal
import sys
import time
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from typing import Any

import aiohttp
import pytest
from yarl import URL

from poller.servicestage.auth import parse_security_key
from poller.servicestage.signing import sign_request
from poller.sim import SimConfig, SimHandle, running_sim
from poller.sim.metadata import AGENCY_ERROR, METADATA, TemporaryCredential
from poller.sim.scenario import Scenario

JOB = {"job_id": "JOB-1", "job_status": [[0, "RUNNING"]]}
STATIC_AK, STATIC_SK = "AKSTATIC0001", "sk-static-secret-0123"


class WallClock:
    def __init__(self) -> None:
        self.now = time.time()

    def __call__(self) -> float:
        return self.now


@asynccontextmanager
async def metadata_sim(wall: WallClock | None = None, **settings: Any) -> AsyncIterator[SimHandle]:
    settings.setdefault("authenticators", ())
    settings.setdefault("temporary_credentials_ttl", 600.0)
    async with running_sim(SimConfig(**settings), wall_clock=wall) as sim:
        await sim.create_job(JOB)
        yield sim


async def _security_key(
    session: aiohttp.ClientSession, sim: SimHandle, headers: Mapping[str, str] | None = None
) -> tuple[int, str]:
    async with session.get(f"{sim.url}/openstack/latest/securitykey", headers=headers) as reply:
        return reply.status, await reply.text()


async def _credential(session: aiohttp.ClientSession, sim: SimHandle) -> dict[str, str]:
    status, text = await _security_key(session, sim)
    assert status == 200, text
    doc: dict[str, dict[str, str]] = json.loads(text)
    return doc["credential"]


async def _get_job(
    session: aiohttp.ClientSession,
    sim: SimHandle,
    *,
    access_key: str,
    secret_key: str,
    token: str | None,
    now: float | None = None,
    extra: Mapping[str, str] | None = None,
) -> tuple[int, str]:
    """GET the job signed with the given credential (and token) at ``now`` (wall time)."""
    signed = sign_request(
        method="GET",
        url=sim.job_url("JOB-1"),
        headers={},
        body=b"",
        access_key=access_key,
        secret_key=secret_key,
        security_token=token,
        now=datetime.fromtimestamp(now if now is not None else time.time(), UTC),
    )
    headers = {**signed.headers, **(extra or {})}
    async with session.get(URL(signed.url, encoded=True), headers=headers) as reply:
        body = await reply.read()
    message = json.loads(body).get("error_msg", "") if reply.status != 200 else ""
    return reply.status, message


async def _with(
    session: aiohttp.ClientSession, sim: SimHandle, cred: Mapping[str, str], **kw: Any
) -> tuple[int, str]:
    kw.setdefault("token", cred["securitytoken"])
    return await _get_job(session, sim, access_key=cred["access"], secret_key=cred["secret"], **kw)


def _epoch(text: str) -> float:
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}Z", text), text
    return datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()


async def test_securitykey_answers_in_the_providers_format(
    session: aiohttp.ClientSession,
) -> None:
    async with metadata_sim(temporary_credentials_ttl=600.0) as sim:
        before = time.time()
        status, text = await _security_key(session, sim)
    assert status == 200
    doc = json.loads(text)
    assert set(doc) == {"credential"}
    cred = doc["credential"]
    assert set(cred) == {"access", "secret", "securitytoken", "expires_at"}
    assert before + 600 - 2 < _epoch(cred["expires_at"]) < before + 600 + 2
    # the daemon's parser (and so the SDK's field names) reads it
    parsed = parse_security_key(doc)
    assert parsed.access_key == cred["access"]
    assert parsed.security_token.reveal() == cred["securitytoken"]


async def test_a_temporary_ak_is_accepted_only_with_its_own_signed_token(
    session: aiohttp.ClientSession,
) -> None:
    async with metadata_sim() as sim:
        cred = await _credential(session, sim)
        other = sim.app[METADATA].credentials.rotate()
        ok = await _with(session, sim, cred)
        missing = await _with(session, sim, cred, token=None)
        wrong = await _with(session, sim, cred, token=other.key.security_token)
        # signed without the token, the token added afterwards
        unsigned = await _with(session, sim, cred, token=None,
                               extra={"X-Security-Token": cred["securitytoken"]})  # fmt: skip
        bad_signature = await _with(session, sim, {**cred, "secret": "not-the-secret"})
        stats = await sim.stats()
    assert ok == (200, "")
    prefix = "Incorrect IAM authentication information: "
    assert missing == (401, prefix + "security token missing for a temporary access key")
    assert wrong == (401, prefix + "security token does not match the access key")
    assert unsigned[0] == 401
    assert "'x-security-token' must be signed" in unsigned[1]
    assert bad_signature == (401, prefix + "verify aksk signature fail")
    assert stats["by_aksk"]["accepted"] == 1
    assert stats["by_aksk"]["signature_failure"] == 1
    assert stats["by_status"]["401"] == 4


async def test_a_request_signed_by_the_official_sdk_with_a_token_gets_200(
    session: aiohttp.ClientSession,
) -> None:
    from huaweicloudsdkcore.auth.credentials import BasicCredentials
    from huaweicloudsdkcore.sdk_request import SdkRequest

    async with metadata_sim() as sim:
        cred = await _credential(session, sim)
        target = URL(sim.job_url("JOB-1"))
        request = SdkRequest(
            method="GET", schema="http", host=f"{target.host}:{target.port}",
            resource_path=target.raw_path, query_params=[("limit", "5")],
            header_params={"Content-Type": "application/json"},
        )  # fmt: skip
        credentials = BasicCredentials(cred["access"], cred["secret"])
        signed = credentials.with_security_token(cred["securitytoken"]).sign_request(request)
        url = URL(f"http://{target.host}:{target.port}{signed.uri}", encoded=True)
        async with session.get(url, headers=signed.header_params) as reply:
            status = reply.status
    assert status == 200


async def test_credentials_rotate_at_half_life_and_each_expires_on_time(
    session: aiohttp.ClientSession,
) -> None:
    wall = WallClock()
    async with metadata_sim(wall, temporary_credentials_ttl=100.0) as sim:
        first = await _credential(session, sim)
        wall.now += 49
        assert (await _credential(session, sim))["access"] == first["access"]
        wall.now += 2  # past half of its life: a new one is handed out
        second = await _credential(session, sim)
        assert second["access"] != first["access"]
        assert _epoch(second["expires_at"]) - _epoch(first["expires_at"]) == pytest.approx(
            51, abs=0.01
        )
        # both stay valid until their own expiry
        assert (await _with(session, sim, first, now=wall.now))[0] == 200
        assert (await _with(session, sim, second, now=wall.now))[0] == 200
        wall.now += 49.5  # the first one has expired, the second has not
        expired = await _with(session, sim, first, now=wall.now)
        still = await _with(session, sim, second, now=wall.now)
        status = sim.app[METADATA].status()
    assert expired == (401, "Incorrect IAM authentication information: security token expired")
    assert still[0] == 200
    assert status["credentials_issued"] == 2
    assert status["live_access_keys"] == [second["access"]]


async def _put_token(session: aiohttp.ClientSession, sim: SimHandle, ttl: str) -> tuple[int, str]:
    headers = {"X-Metadata-Token-Ttl-Seconds": ttl}
    async with session.put(f"{sim.url}/meta-data/latest/api/token", headers=headers) as reply:
        return reply.status, await reply.text()


async def test_session_tokens_like_the_sdk_asks_for_them(session: aiohttp.ClientSession) -> None:
    async with metadata_sim() as sim:
        status, token = await _put_token(session, sim, "21600")
        assert status == 200
        for ttl in ("0", "21601", "x", ""):
            assert (await _put_token(session, sim, ttl))[0] == 400, ttl
        assert (await _security_key(session, sim, {"X-Metadata-Token": token}))[0] == 200
        assert (await _security_key(session, sim, {"X-Metadata-Token": "forged"}))[0] == 401
        assert (await _security_key(session, sim))[0] == 200  # not required by default
        async with session.post(f"{sim.url}/_sim/metadata", json={"token_required": True}) as r:
            assert (await r.json())["token_required"] is True
        assert (await _security_key(session, sim))[0] == 401
        assert (await _security_key(session, sim, {"X-Metadata-Token": token}))[0] == 200
    async with metadata_sim(metadata_token_required=True) as sim:
        assert (await _security_key(session, sim))[0] == 401


async def test_outage_and_a_server_without_an_agency(session: aiohttp.ClientSession) -> None:
    async with metadata_sim() as sim:
        cred = await _credential(session, sim)
        async with session.post(f"{sim.url}/_sim/metadata", json={"available": False}) as r:
            assert r.status == 200
        assert (await _security_key(session, sim))[0] == 503
        assert (await _with(session, sim, cred))[0] == 200  # issued credentials still work
        async with session.post(f"{sim.url}/_sim/metadata",
                                json={"available": True, "agency": False}) as r:  # fmt: skip
            assert r.status == 200
        status, text = await _security_key(session, sim)
        assert (status, text) == (401, AGENCY_ERROR)
        async with session.post(f"{sim.url}/_sim/metadata", json={"agency": "no"}) as r:
            assert r.status == 400
        async with session.post(f"{sim.url}/_sim/metadata", json={"outage": True}) as r:
            assert r.status == 400


async def test_admin_status_and_rotation_never_show_a_secret(
    session: aiohttp.ClientSession,
) -> None:
    async with metadata_sim() as sim:
        cred = await _credential(session, sim)
        async with session.post(f"{sim.url}/_sim/metadata", json={"rotate": True}) as r:
            rotated = await r.text()
        async with session.get(f"{sim.url}/_sim/metadata") as r:
            status = await r.json()
        new = await _credential(session, sim)
        issued: list[TemporaryCredential] = sim.app[METADATA].credentials.issued()
    assert new["access"] != cred["access"]
    assert status["current_access_key"] == new["access"]
    assert status["credentials_served"] == 1  # the admin API is not counted
    for text in (rotated, json.dumps(status), repr(issued)):
        assert all(
            c.key.secret_key not in text and c.key.security_token not in text for c in issued
        )


async def test_configured_key_pairs_and_temporary_ones_coexist(
    session: aiohttp.ClientSession,
) -> None:
    wall = WallClock()
    async with metadata_sim(wall, access_keys={STATIC_AK: STATIC_SK}) as sim:
        cred = await _credential(session, sim)
        static = await _get_job(session, sim, access_key=STATIC_AK, secret_key=STATIC_SK,
                                token=None, now=wall.now)  # fmt: skip
        unknown = await _get_job(session, sim, access_key="AKNOBODY", secret_key="x",
                                 token=None, now=wall.now)  # fmt: skip
        temporary = await _with(session, sim, cred, now=wall.now)
        wall.now += 601
        expired = await _with(session, sim, cred, now=wall.now)
    assert static[0] == temporary[0] == 200
    assert unknown == (401, "Incorrect IAM authentication information: ak not found")
    assert expired == (401, "Incorrect IAM authentication information: security token expired")


async def test_without_key_pairs_an_unknown_ak_is_not_found(
    session: aiohttp.ClientSession,
) -> None:
    async with metadata_sim() as sim:
        unknown = await _get_job(session, sim, access_key="AKNOBODY", secret_key="x", token="t")
        no_credentials = await session.get(sim.job_url("JOB-1"))
        no_credentials.release()
    assert unknown == (401, "Incorrect IAM authentication information: ak not found")
    assert no_credentials.status == 401  # the API is not open


async def test_no_metadata_service_unless_asked_for(session: aiohttp.ClientSession) -> None:
    async with running_sim(SimConfig()) as sim:
        assert (await _security_key(session, sim))[0] == 404


def test_the_lifetime_is_validated_and_kept_by_scenarios() -> None:
    from poller.sim import config_from_scenario

    with pytest.raises(ValueError, match="temporary_credentials_ttl"):
        SimConfig(temporary_credentials_ttl=0)
    base = SimConfig(temporary_credentials_ttl=30.0, metadata_token_required=True)
    merged = config_from_scenario(Scenario(), base)
    assert (merged.temporary_credentials_ttl, merged.metadata_token_required) == (30.0, True)


def test_command_line_options() -> None:
    import argparse

    from poller.sim.cli import _config, configure_parser

    parser = argparse.ArgumentParser()
    configure_parser(parser)
    args = parser.parse_args(["--temporary-credentials-ttl", "90", "--metadata-token-required"])
    config = _config(args, Scenario())
    assert (config.temporary_credentials_ttl, config.metadata_token_required) == (90.0, True)
    assert _config(parser.parse_args([]), Scenario()).temporary_credentials_ttl is None
    with pytest.raises(SystemExit):
        parser.parse_args(["--temporary-credentials-ttl", "0"])


async def test_poller_sim_serves_the_metadata_service_and_says_where() -> None:
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "poller.sim", "--port", "0", "--generate", "1",
        "--temporary-credentials-ttl", "120", stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    assert process.stderr is not None
    try:
        line = (await asyncio.wait_for(process.stderr.readline(), 30)).decode()
        where = re.search(r"metadata=(http://\S+/openstack/latest/securitykey)", line)
        assert where is not None, line
        assert "temporary_credentials_ttl=120" in line
        async with aiohttp.ClientSession() as session, session.get(where[1]) as reply:
            cred = (await reply.json())["credential"]
        assert cred["secret"] not in line
        process.send_signal(signal.SIGTERM)
        assert await asyncio.wait_for(process.wait(), 30) == 0
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()
