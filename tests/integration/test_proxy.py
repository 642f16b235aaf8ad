"""Proxies from the environment, read once at start-up (``trust_env`` is off: it cost half a
poll's CPU), still honoured: ``HTTP(S)_PROXY`` sends polls through the proxy, ``NO_PROXY``
bypasses it."""

from __future__ import annotations

from collections.abc import AsyncIterator

import aiohttp
import pytest
from aiohttp import web

from poller.localredis import LocalRedis, free_port
from poller.servicestage.proxy import DIRECT, env_proxy
from poller.sim import SimHandle
from poller.store import Store
from tests.integration.harness import (
    all_final,
    events_until,
    fast_settings,
    quick_job,
    running_worker,
)


class ForwardProxy:
    """A plain-HTTP forward proxy to one origin that counts what passes through it."""

    def __init__(self, upstream: str) -> None:
        self.upstream = upstream
        self.forwarded: list[str] = []
        self.port = free_port()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    async def handle(self, request: web.Request) -> web.Response:
        target = f"{self.upstream}{request.rel_url}"  # the one origin these tests use
        self.forwarded.append(target)
        headers = {k: v for k, v in request.headers.items() if k.lower() not in ("host",)}
        async with (
            aiohttp.ClientSession() as session,
            session.get(target, headers=headers) as upstream,
        ):
            body = await upstream.read()
            return web.Response(status=upstream.status, body=body,
                                content_type=upstream.content_type)  # fmt: skip


@pytest.fixture
async def proxy(live_sim: SimHandle) -> AsyncIterator[ForwardProxy]:
    fwd = ForwardProxy(live_sim.url.rstrip("/"))
    app = web.Application()
    app.router.add_route("GET", "/{tail:.*}", fwd.handle)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", fwd.port).start()
    yield fwd
    await runner.cleanup()


def test_no_proxy_variables_mean_a_direct_connection(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("HTTP_PROXY", "HTTPS_PROXY", "http_proxy", "https_proxy", "ALL_PROXY",
                 "all_proxy"):  # fmt: skip
        monkeypatch.delenv(name, raising=False)
    assert env_proxy("https://servicestage.example.com") == DIRECT


async def test_polls_go_through_the_proxy_the_environment_names(
    redis_server: LocalRedis,
    prefix: str,
    store: Store,
    live_sim: SimHandle,
    proxy: ForwardProxy,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("HTTP_PROXY", proxy.url)
    monkeypatch.delenv("NO_PROXY", raising=False)
    monkeypatch.delenv("no_proxy", raising=False)
    job_id = await live_sim.create_job(quick_job(0.1))
    await store.enqueue(job_id)
    async with running_worker(fast_settings(redis_server.url, prefix, live_sim.url)):
        await events_until(store, all_final([job_id]))
    assert any(f"/cas/jobs/{job_id}" in url for url in proxy.forwarded)


async def test_no_proxy_bypasses_the_proxy(
    redis_server: LocalRedis,
    prefix: str,
    store: Store,
    live_sim: SimHandle,
    proxy: ForwardProxy,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("HTTP_PROXY", proxy.url)
    monkeypatch.setenv("NO_PROXY", "127.0.0.1,localhost")
    job_id = await live_sim.create_job(quick_job(0.1))
    await store.enqueue(job_id)
    async with running_worker(fast_settings(redis_server.url, prefix, live_sim.url)):
        await events_until(store, all_final([job_id]))
    assert proxy.forwarded == []
