"""`poller web`: the HTTP API over real HTTP against a real Redis, and the page in Chromium."""

from __future__ import annotations

import base64
import json
import os
import shutil
import subprocess
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import anyio
import pytest
from aiohttp.test_utils import TestClient, TestServer

from poller.commands import status_document
from poller.config import Settings
from poller.intake import Admission
from poller.localredis import LocalRedis
from poller.sim import SimHandle
from poller.store import Keys, Store, connect
from poller.telemetry import REDACTOR
from poller.web import WebLimits, build_app
from poller.web.app import STATE
from tests.integration.harness import (
    PROJECT,
    all_final,
    events_until,
    eventually,
    fast_settings,
    jobs_in_shards,
    quick_job,
    running_worker,
)

TOKEN_A = "tok-A-0123456789abcdef"
TOKEN_B = "tok-B-fedcba9876543210"
AUTH = {"Authorization": f"Bearer {TOKEN_A}"}

Frame = tuple[str, str, dict[str, str]]


def web_settings(redis_url: str, prefix: str, tokens: Path, **kw: Any) -> Settings:
    values: dict[str, Any] = {
        "redis_url": redis_url,
        "key_prefix": prefix,
        "project_id": PROJECT,
        "web_tokens_file": str(tokens),
    }
    values.update(kw)
    return Settings(**values)


@pytest.fixture
def tokens_file(tmp_path: Path) -> Path:
    path = tmp_path / "tokens"
    path.write_text(f"# readers and writers\n\n{TOKEN_A}\n")
    return path


async def start_client(
    settings: Settings, store: Store, limits: WebLimits | None = None
) -> TestClient[Any, Any]:
    client: TestClient[Any, Any] = TestClient(TestServer(build_app(settings, store, limits)))
    await client.start_server()
    return client


@pytest.fixture
async def client(
    redis_server: LocalRedis, prefix: str, store: Store, tokens_file: Path
) -> AsyncIterator[TestClient[Any, Any]]:
    c = await start_client(web_settings(redis_server.url, prefix, tokens_file), store)
    yield c
    await c.close()


async def read_frames(
    resp: aiohttp.ClientResponse, limit: int | None = None, comments: list[str] | None = None
) -> list[Frame]:
    """SSE frames (id, event, data) until the response ends or ``limit`` frames arrived."""
    frames: list[Frame] = []
    entry_id = kind = data = ""
    async for raw in resp.content:
        line = raw.decode().rstrip("\r\n")
        if line.startswith(":"):
            if comments is not None:
                comments.append(line)
            continue
        if line == "":
            if data:
                frames.append((entry_id, kind, json.loads(data)))
                if limit is not None and len(frames) >= limit:
                    break
            entry_id = kind = data = ""
            continue
        field, _, value = line.partition(":")
        value = value.removeprefix(" ")
        if field == "id":
            entry_id = value
        elif field == "event":
            kind = value
        elif field == "data":
            data += value
    return frames


async def finished_job(sim: SimHandle, store: Store, redis_url: str, prefix: str) -> str:
    """A job tracked from start to end by a real worker against the emulator."""
    job_id = await sim.create_job(quick_job())
    async with running_worker(fast_settings(redis_url, prefix, sim.url)):
        await store.enqueue(job_id)
        await events_until(store, lambda ev: len(ev) >= 2, job_id=job_id)
        await sim.advance(1)
        await events_until(store, all_final([job_id]), job_id=job_id)
    return job_id


# --- SSE ------------------------------------------------------------------------------------


async def test_job_sse_is_the_job_stream_event_by_event_and_ends_after_the_final_event(
    sim: SimHandle, store: Store, redis_server: LocalRedis, client: TestClient[Any, Any]
) -> None:
    job_id = await sim.create_job(quick_job())
    frames: list[Frame] = []

    async def follow() -> None:
        async with client.get(f"/api/jobs/{job_id}/events", headers=AUTH) as resp:
            assert resp.status == 200
            assert resp.headers["Content-Type"].startswith("text/event-stream")
            frames.extend(await read_frames(resp))  # returns only when the server ends it

    with anyio.fail_after(30):
        async with anyio.create_task_group() as tg:
            tg.start_soon(follow)  # connected before the job has any event: it waits
            async with running_worker(fast_settings(redis_server.url, store.keys.prefix, sim.url)):
                await store.enqueue(job_id)
                await events_until(store, lambda ev: len(ev) >= 2, job_id=job_id)
                await sim.advance(1)
                await events_until(store, all_final([job_id]), job_id=job_id)
    stored = await store.read_events(job_id)
    assert len(stored) >= 4
    assert frames == [(entry_id, f["event"], f) for entry_id, f in stored]
    assert frames[-1][2]["to_status"] == "SUCCEEDED"

    # after the end: the whole history, then the response ends at once
    with anyio.fail_after(10):
        async with client.get(f"/api/jobs/{job_id}/events", headers=AUTH) as resp:
            assert await read_frames(resp) == frames


async def test_resuming_with_last_event_id_loses_and_repeats_nothing(
    sim: SimHandle, store: Store, redis_server: LocalRedis, client: TestClient[Any, Any]
) -> None:
    job_id = await finished_job(sim, store, redis_server.url, store.keys.prefix)
    stored = [(i, f["event"], f) for i, f in await store.read_events(job_id)]
    for cut in range(len(stored)):
        with anyio.fail_after(10):
            async with client.get(f"/api/jobs/{job_id}/events", headers=AUTH) as resp:
                first = await read_frames(resp, limit=cut + 1)
            resume = {**AUTH, "Last-Event-ID": first[-1][0]}
            async with client.get(f"/api/jobs/{job_id}/events", headers=resume) as resp:
                rest = await read_frames(resp)
        assert first + rest == stored

    # the global stream: from now by default; from Last-Event-ID on request
    everything = [(i, f["event"], f) for i, f in await store.read_events()]
    with anyio.fail_after(10):
        resume = {**AUTH, "Last-Event-ID": everything[1][0]}
        async with client.get("/api/events", headers=resume) as resp:
            assert await read_frames(resp, limit=len(everything) - 2) == everything[2:]
        async with client.get("/api/events", headers=AUTH) as resp:
            await store.redis.xadd(store.keys.events, {"event": "job.status_changed", "x": "1"})
            (frame,) = await read_frames(resp, limit=1)
    assert frame[2] == {"event": "job.status_changed", "x": "1"}

    async with client.get("/api/events", headers={**AUTH, "Last-Event-ID": "nope"}) as resp:
        assert resp.status == 400


async def test_idle_streams_get_keepalive_comments(
    redis_server: LocalRedis, prefix: str, store: Store, tokens_file: Path
) -> None:
    limits = WebLimits(keepalive=0.2, block_ms=100)
    client = await start_client(web_settings(redis_server.url, prefix, tokens_file), store, limits)
    try:
        comments: list[str] = []
        with anyio.fail_after(10):
            async with client.get("/api/events", headers=AUTH) as resp:
                await store.redis.xadd(store.keys.events, {"event": "x"})  # after 1+ keep-alive?
                async for raw in resp.content:
                    if raw.startswith(b": keep-alive"):
                        comments.append(raw.decode())
                        break
        assert comments
    finally:
        await client.close()


async def test_sse_connections_are_capped(
    redis_server: LocalRedis, prefix: str, store: Store, tokens_file: Path
) -> None:
    limits = WebLimits(max_sse=2, block_ms=100)
    client = await start_client(web_settings(redis_server.url, prefix, tokens_file), store, limits)
    try:
        with anyio.fail_after(15):
            first = await client.get("/api/events", headers=AUTH)
            second = await client.get("/api/jobs/JOB-1/events", headers=AUTH)
            assert (first.status, second.status) == (200, 200)
            third = await client.get("/api/events", headers=AUTH)
            assert third.status == 503
            assert "Retry-After" in third.headers
            first.close()  # a client leaves: its place is free again
            assert client.app is not None
            state = client.app[STATE]
            await eventually(lambda: state.sse_open < 2)
            again = await client.get("/api/events", headers=AUTH)
            assert again.status == 200
            again.close()
            second.close()
    finally:
        await client.close()


# --- job state and enqueueing ---------------------------------------------------------------


async def test_job_state_is_the_status_document(
    sim: SimHandle, store: Store, redis_server: LocalRedis, client: TestClient[Any, Any]
) -> None:
    job_id = await finished_job(sim, store, redis_server.url, store.keys.prefix)
    view = await store.get_job(PROJECT, job_id)
    assert view is not None
    async with client.get(f"/api/jobs/{job_id}", headers=AUTH) as resp:
        assert resp.status == 200
        assert await resp.json() == json.loads(json.dumps(status_document(view)))
    async with client.get(f"/api/jobs/{job_id}?project_id={PROJECT}", headers=AUTH) as resp:
        assert resp.status == 200
    async with client.get("/api/jobs/JOB-unknown", headers=AUTH) as resp:
        assert resp.status == 404
    async with client.get("/api/jobs/JOB-1?project_id=a%2Fb", headers=AUTH) as resp:
        assert resp.status == 400
    async with client.get("/api/overview", headers=AUTH) as resp:
        doc = await resp.json()
    assert [j["job_id"] for j in doc["finished"]] == [job_id]
    assert doc["finished"][0]["status"] == "SUCCEEDED"


async def test_enqueue_validates_and_queues(store: Store, client: TestClient[Any, Any]) -> None:
    for body, reason in [
        (b'{"job_id": "../x"}', "invalid job_id"),
        (b'{"job_id": "J1", "meta": 3}', "meta is not a JSON object"),
        (b'{"job_id": NaN}', "bad JSON"),
        (b"", "empty message"),
    ]:
        async with client.post("/api/jobs", data=body, headers=AUTH) as resp:
            assert resp.status == 400
            assert reason in (await resp.json())["error"]
    assert await store.redis.llen(store.keys.intake) == 0
    assert await store.redis.llen(store.keys.dead) == 0  # refused at the door, not dead-lettered

    message = '{"job_id":"JOB-web-1","meta":{"change":"CHG-1"}}'
    async with client.post("/api/jobs", data=message, headers=AUTH) as resp:
        assert resp.status == 202
        assert resp.headers["Location"] == "/api/jobs/JOB-web-1"
        assert (await resp.json())["url"] == "/api/jobs/JOB-web-1"
    other = '{"job_id":"JOB-web-2","project_id":"other-proj"}'
    async with client.post("/api/jobs", data=other, headers=AUTH) as resp:
        assert resp.headers["Location"] == "/api/jobs/JOB-web-2?project_id=other-proj"
    assert await store.redis.lrange(store.keys.intake, 0, -1) == [other.encode(), message.encode()]


async def test_body_too_large_is_413(client: TestClient[Any, Any], store: Store) -> None:
    big = json.dumps({"job_id": "J1", "meta": {"x": "y" * 20_000}})
    async with client.post("/api/jobs", data=big, headers=AUTH) as resp:
        assert resp.status == 413
    assert await store.redis.llen(store.keys.intake) == 0


# --- access ---------------------------------------------------------------------------------


async def test_tokens_are_required(client: TestClient[Any, Any], store: Store) -> None:
    for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": f"Basic {TOKEN_A}"}):
        for method, path in [("GET", "/api/jobs/J1"), ("GET", "/api/events"),
                             ("GET", "/api/jobs/J1/events"), ("GET", "/api/overview"),
                             ("POST", "/api/jobs")]:  # fmt: skip
            async with client.request(method, path, headers=headers, data=b"J1") as resp:
                assert resp.status == 401, (method, path, headers)
                assert resp.headers["WWW-Authenticate"].startswith("Bearer")
    assert await store.redis.llen(store.keys.intake) == 0
    async with client.get("/") as resp:  # the page itself holds no data
        assert resp.status == 200
        page = await resp.text()
    assert '<meta name="viewport"' in page
    assert TOKEN_A not in page


async def test_public_read_mode_still_guards_enqueueing(
    redis_server: LocalRedis, prefix: str, store: Store, tokens_file: Path
) -> None:
    settings = web_settings(redis_server.url, prefix, tokens_file, web_public_read=True)
    client = await start_client(settings, store)
    try:
        async with client.get("/api/jobs/J1") as resp:
            assert resp.status == 404
        async with client.get("/api/overview") as resp:
            assert resp.status == 200
        async with client.get("/api/events") as resp:
            assert resp.status == 200
        async with client.post("/api/jobs", data=b"J1") as resp:
            assert resp.status == 401
        async with client.post("/api/jobs", data=b"J1", headers=AUTH) as resp:
            assert resp.status == 202
    finally:
        await client.close()


async def test_token_file_is_reread_when_it_changes(
    client: TestClient[Any, Any], tokens_file: Path
) -> None:
    async with client.get("/api/jobs/J1", headers=AUTH) as resp:
        assert resp.status == 404
    await anyio.Path(tokens_file).write_text(f"{TOKEN_B}  \n# {TOKEN_A} revoked\n")
    async with client.get("/api/jobs/J1", headers=AUTH) as resp:
        assert resp.status == 401
    async with client.get("/api/jobs/J1", headers={"Authorization": f"Bearer {TOKEN_B}"}) as r:
        assert r.status == 404
    await anyio.Path(tokens_file).unlink()
    async with client.get("/api/jobs/J1", headers={"Authorization": f"Bearer {TOKEN_B}"}) as r:
        assert r.status == 401
    # every token loaded is redacted from log lines
    line = REDACTOR(None, "info", {"event": f"saw {TOKEN_A} and {TOKEN_B}"})["event"]
    assert TOKEN_A not in line
    assert TOKEN_B not in line


# --- the page in a real browser -------------------------------------------------------------


class DevTools:
    """A minimal Chrome DevTools Protocol client over one page's WebSocket."""

    def __init__(self, ws: aiohttp.ClientWebSocketResponse) -> None:
        self.ws = ws
        self.next_id = 0

    async def call(self, method: str, **params: Any) -> dict[str, Any]:
        self.next_id += 1
        await self.ws.send_json({"id": self.next_id, "method": method, "params": params})
        while True:
            reply = await self.ws.receive_json()
            if reply.get("id") == self.next_id:
                if "error" in reply:
                    raise AssertionError(f"{method}: {reply['error']}")
                return dict(reply["result"])

    async def navigate(self, url: str) -> None:
        """Open ``url`` and return once its load event fired (its scripts have run)."""
        self.next_id += 1
        await self.ws.send_json(
            {"id": self.next_id, "method": "Page.navigate", "params": {"url": url}}
        )
        replied = loaded = False
        while not (replied and loaded):
            message = await self.ws.receive_json()
            if message.get("id") == self.next_id:
                assert "error" not in message, message
                assert "errorText" not in message["result"], message
                replied = True
            loaded = loaded or (replied and message.get("method") == "Page.loadEventFired")

    async def evaluate(self, expression: str) -> Any:
        result = await self.call(
            "Runtime.evaluate", expression=expression, awaitPromise=True, returnByValue=True
        )
        if "exceptionDetails" in result:
            raise AssertionError(result["exceptionDetails"])
        return result["result"].get("value")

    async def until(self, selector: str, within: float = 30.0) -> None:
        """Resolve when ``selector`` matches: a MutationObserver in the page, no polling."""
        script = """new Promise((resolve) => {
          const sel = SELECTOR;
          if (document.querySelector(sel)) return resolve(true);
          const mo = new MutationObserver(() => {
            if (document.querySelector(sel)) { mo.disconnect(); resolve(true); }
          });
          mo.observe(document.documentElement,
                     {subtree: true, childList: true, attributes: true, characterData: true});
        })""".replace("SELECTOR", json.dumps(selector))
        try:
            with anyio.fail_after(within):
                assert await self.evaluate(script) is True
        except TimeoutError:
            main = await self.evaluate("document.querySelector('main').outerHTML")
            raise AssertionError(f"{selector!r} never matched; the page:\n{main}") from None

    async def screenshot(self, path: Path) -> None:
        shot = await self.call("Page.captureScreenshot", format="png", captureBeyondViewport=True)
        await anyio.Path(path).write_bytes(base64.b64decode(shot["data"]))


def _chromium() -> str | None:
    return shutil.which("chromium") or shutil.which("chromium-browser")


@pytest.fixture
async def browser(tmp_path: Path) -> AsyncIterator[DevTools]:
    exe = _chromium()
    if exe is None:
        pytest.skip("chromium is not installed (apt-get install chromium)")
    profile = tmp_path / "chromium-profile"
    proc = subprocess.Popen(  # noqa: ASYNC220 - killed by PID below
        [exe, "--headless=new", "--no-sandbox", "--disable-gpu", "--no-first-run",
         "--disable-dev-shm-usage", "--remote-debugging-port=0", "--window-size=1280,900",
         f"--user-data-dir={profile}", "about:blank"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    try:
        port_file = profile / "DevToolsActivePort"
        await eventually(lambda: port_file.exists() and len(port_file.read_text().split()) >= 2)
        port = int(port_file.read_text().split()[0])
        async with aiohttp.ClientSession() as http:
            async with http.get(f"http://127.0.0.1:{port}/json/list") as resp:
                targets = await resp.json()
            page = next(t for t in targets if t["type"] == "page")
            async with http.ws_connect(page["webSocketDebuggerUrl"], max_msg_size=0) as ws:
                tools = DevTools(ws)
                await tools.call("Page.enable")
                await tools.call("Runtime.enable")
                yield tools
    finally:
        proc.kill()
        proc.wait()


@pytest.mark.slow
async def test_page_follows_a_job_to_its_end_in_chromium(
    sim: SimHandle,
    store: Store,
    redis_server: LocalRedis,
    prefix: str,
    tokens_file: Path,
    browser: DevTools,
    tmp_path: Path,
) -> None:
    app = build_app(web_settings(redis_server.url, prefix, tokens_file), store)
    server = TestServer(app, shutdown_timeout=2.0)
    await server.start_server()
    try:
        job_id = await sim.create_job(quick_job())
        async with running_worker(fast_settings(redis_server.url, prefix, sim.url)):
            # the page is open first; the job is queued through the API afterwards
            await browser.navigate(str(server.make_url("/")) + f"#token={TOKEN_A}")
            await browser.until("#live.live-on")
            assert TOKEN_A not in await browser.evaluate("location.href")
            async with (
                aiohttp.ClientSession() as http,
                http.post(server.make_url("/api/jobs"), data=job_id, headers=AUTH) as resp,
            ):
                assert resp.status == 202
            row = f'#tracked tr[data-job-id="{job_id}"]'
            await browser.until(f'{row}[data-status="RUNNING"] td[data-total="1"]')
            await browser.screenshot(tmp_path / "web-running.png")
            await sim.advance(1)  # the emulator's job ends; the page must follow on its own
            done = f'#finished tr[data-job-id="{job_id}"][data-status="SUCCEEDED"]'
            await browser.until(f'{done} td[data-done="1"][data-total="1"]')
            assert await browser.evaluate(f"document.querySelector('{row}') === null")
            # keyboard: focus the job's button and press Enter: its timeline opens
            await browser.evaluate(f"document.querySelector('{done} button').focus()")
            enter = {"key": "Enter", "code": "Enter", "windowsVirtualKeyCode": 13}
            await browser.call("Input.dispatchKeyEvent", type="keyDown", text="\r", **enter)
            await browser.call("Input.dispatchKeyEvent", type="keyUp", **enter)
            n = len(await store.read_events(job_id))
            await browser.until(f"#detail:not([hidden]) #timeline li:nth-child({n})")
            assert await browser.evaluate("document.activeElement.id") == "detail-title"
            text = await browser.evaluate("document.body.innerText")
            assert job_id in text
            assert TOKEN_A not in text
            await browser.screenshot(tmp_path / "web-finished.png")
            # a phone: no sideways scrolling of the page itself
            await browser.call("Emulation.setDeviceMetricsOverride", width=390, height=844,
                               deviceScaleFactor=2, mobile=True)  # fmt: skip
            await browser.evaluate("new Promise((r) => requestAnimationFrame(() => r(1)))")
            width = await browser.evaluate("document.documentElement.scrollWidth")
            assert width <= 390
            await browser.screenshot(tmp_path / "web-phone.png")
    finally:
        await server.close()
    _keep_artifacts(tmp_path)


def _keep_artifacts(tmp_path: Path) -> None:
    """The screenshots stay in the test's tmp_path; POLLER_TEST_ARTIFACTS=DIR copies them."""
    assert (tmp_path / "web-finished.png").stat().st_size > 1000
    artifacts = os.environ.get("POLLER_TEST_ARTIFACTS")
    if artifacts:
        Path(artifacts).mkdir(parents=True, exist_ok=True)
        for png in tmp_path.glob("web-*.png"):
            shutil.copy(png, Path(artifacts) / png.name)


def test_poller_web_refuses_to_start_with_no_way_in(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from poller.cli import main

    for name in [n for n in os.environ if n.startswith("POLLER_")]:
        monkeypatch.delenv(name)
    assert main(["web"]) == 2
    assert "POLLER_WEB_TOKENS_FILE" in capsys.readouterr().err


async def test_serve_listens_on_a_real_port(
    redis_server: LocalRedis, prefix: str, tokens_file: Path
) -> None:
    import asyncio
    import socket

    from poller.web import serve

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    settings = web_settings(redis_server.url, prefix, tokens_file, web_port=port)
    stop = asyncio.Event()
    async with anyio.create_task_group() as tg:
        tg.start_soon(lambda: serve(settings, stop=stop))
        async with aiohttp.ClientSession() as http:

            async def up() -> bool:
                try:
                    async with http.get(f"http://127.0.0.1:{port}/api/jobs/J1", headers=AUTH) as r:
                        return r.status == 404
                except aiohttp.ClientConnectionError:
                    return False

            await eventually(up)
        stop.set()


async def test_a_client_that_cannot_keep_up_is_dropped(
    redis_server: LocalRedis, prefix: str, store: Store, tokens_file: Path
) -> None:
    import socket

    limits = WebLimits(write_timeout=0.5, block_ms=100)
    client = await start_client(web_settings(redis_server.url, prefix, tokens_file), store, limits)
    try:
        pipe = store.redis.pipeline(transaction=False)
        for n in range(4000):  # ~8 MB: more than the socket buffers on both sides hold
            pipe.xadd(store.keys.events, {"event": "x", "n": str(n), "pad": "p" * 2000})
        await pipe.execute()
        assert client.app is not None
        state = client.app[STATE]
        with socket.socket() as sock:  # connects, asks for everything, never reads
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
            sock.connect(("127.0.0.1", client.port or 0))
            sock.sendall(
                f"GET /api/events HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {TOKEN_A}\r\n"
                "Last-Event-ID: 0-0\r\n\r\n".encode()
            )
            await eventually(lambda: state.sse_open == 1)
            await eventually(lambda: state.sse_open == 0)  # dropped, though still connected
    finally:
        await client.close()


# --- several shards ---------------------------------------------------------------------------

SHARDS = 3


@pytest.fixture
async def sharded(redis_server: LocalRedis, prefix: str) -> AsyncIterator[Store]:
    s = Store(connect(redis_server.url), Keys(prefix, SHARDS), retention=3600, maxlen=10_000)
    yield s
    await s.redis.aclose()


@pytest.fixture
async def sharded_client(
    redis_server: LocalRedis, prefix: str, sharded: Store, tokens_file: Path
) -> AsyncIterator[TestClient[Any, Any]]:
    settings = web_settings(redis_server.url, prefix, tokens_file, shards=SHARDS)
    c = await start_client(settings, sharded, WebLimits(batch=2))  # pages of two: merged
    yield c
    await c.close()


async def _shard_event(
    store: Store, job_id: str, seq: int, entry_id: str = "*", *, final: bool = False
) -> str:
    """A job event where the daemon puts it: its shard's global stream and its own."""
    status = "SUCCEEDED" if final else "RUNNING"
    fields = {"event": "job.status_changed", "job_id": job_id, "project_id": PROJECT,
              "seq": str(seq), "observed_at": "2026-11-27T00:00:00.000Z", "from_status": "",
              "to_status": status, "job_status": status, "job_type": "X",
              "terminal": "true" if final else "false"}  # fmt: skip
    entry = await store.redis.xadd(store.keys.for_job(job_id).events, fields, id=entry_id)  # type: ignore[arg-type]
    await store.redis.xadd(store.keys.job_events(job_id), fields)  # type: ignore[arg-type]
    return entry.decode() if isinstance(entry, bytes) else str(entry)


def _events(frames: list[Frame]) -> list[tuple[str, str]]:
    return [(f["job_id"], f["seq"]) for _, _, f in frames]


async def test_all_events_over_shards_merge_and_resume_with_the_id_they_sent(
    sharded: Store, sharded_client: TestClient[Any, Any]
) -> None:
    client = sharded_client
    a, b, c = jobs_in_shards(SHARDS)  # shards 0, 1, 2
    for job, seq, ms in [(a, 1, 1), (b, 1, 2), (c, 1, 3), (a, 2, 4), (b, 2, 5), (c, 2, 6),
                         (a, 3, 7)]:  # fmt: skip
        await _shard_event(sharded, job, seq, f"{ms}-0")
    merged = [(a, "1"), (b, "1"), (c, "1"), (a, "2"), (b, "2"), (c, "2"), (a, "3")]
    with anyio.fail_after(20):
        # a plain entry ID (all one shard would send) still works: after it in every shard
        async with client.get("/api/events", headers={**AUTH, "Last-Event-ID": "0-0"}) as resp:
            frames = await read_frames(resp, limit=len(merged))
        assert _events(frames) == merged
        # each frame's id is every shard's position after it
        assert [i for i, _, _ in frames][:3] == ["0=1-0,1=0-0,2=0-0", "0=1-0,1=2-0,2=0-0",
                                                 "0=1-0,1=2-0,2=3-0"]  # fmt: skip
        assert frames[-1][0] == "0=7-0,1=5-0,2=6-0"
        for cut in range(len(frames) - 1):
            resume = {**AUTH, "Last-Event-ID": frames[cut][0]}
            async with client.get("/api/events", headers=resume) as resp:
                rest = await read_frames(resp, limit=len(frames) - cut - 1)
            assert frames[: cut + 1] + rest == frames
        # from now by default; a new event on any shard arrives
        async with client.get("/api/events", headers=AUTH) as resp:
            new_c = await _shard_event(sharded, c, 3)
            (live,) = await read_frames(resp, limit=1)
        assert (_events([live]), live[0]) == ([(c, "3")], f"0=7-0,1=5-0,2={new_c}")
        # resuming from there: what came since on the other shards, nothing twice
        await _shard_event(sharded, b, 3)
        await _shard_event(sharded, a, 4)
        async with client.get("/api/events", headers={**AUTH, "Last-Event-ID": live[0]}) as r:
            after = await read_frames(r, limit=2)
        assert sorted(_events(after)) == sorted([(a, "4"), (b, "3")])
        for bad in ("3=1-0", "0=1-0,0=2-0", "0=1-0;1=2-0", "0=1", "=1-0", "nope"):
            async with client.get("/api/events", headers={**AUTH, "Last-Event-ID": bad}) as r:
                assert r.status == 400, bad
        # one job's own stream still takes a plain entry ID only
        multi = {**AUTH, "Last-Event-ID": "0=1-0"}
        async with client.get(f"/api/jobs/{a}/events", headers=multi) as r:
            assert r.status == 400


async def test_overview_lists_the_jobs_of_every_shard(
    sharded: Store, sharded_client: TestClient[Any, Any]
) -> None:
    tracked = jobs_in_shards(SHARDS)
    now = await sharded.server_time()
    await sharded.enqueue(*tracked)
    for delivery in await sharded.take_messages("r1", 10, 0):
        admission = Admission(delivery.raw.decode(), PROJECT)
        assert await sharded.admit("r1", delivery, admission, now) == "admitted"
    finished = jobs_in_shards(SHARDS, tag="JOB-f")
    for ms, job in enumerate(finished, start=1):
        await _shard_event(sharded, job, 1, f"{ms}-0", final=True)
    async with sharded_client.get("/api/overview", headers=AUTH) as resp:
        assert resp.status == 200
        doc = await resp.json()
    assert sorted(j["job_id"] for j in doc["tracked"]) == sorted(tracked)
    assert [j["job_id"] for j in doc["finished"]] == finished[::-1]  # newest first
    assert doc["counts"]["tracked"] == len(tracked)
