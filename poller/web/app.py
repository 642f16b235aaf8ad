"""The aiohttp application of ``poller web``: the status page, job state, SSE, enqueue."""

from __future__ import annotations

import asyncio
import json
import re
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, Final

from aiohttp import web
from redis.exceptions import RedisError

from poller.commands import status_document
from poller.config import Settings
from poller.consumer import JobEvent, StreamCursor
from poller.ids import is_valid_id
from poller.intake import Invalid, parse_message
from poller.store import Store
from poller.store.store import CorruptJobState
from poller.telemetry import get_logger
from poller.web import reads
from poller.web.auth import TokenFile, bearer
from poller.web.page import PAGE

log = get_logger(component="web")

MAX_BODY: Final = 16 * 1024
_STREAM_ID: Final = re.compile(r"^\d{1,20}-\d{1,20}$")
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


@dataclass(frozen=True, slots=True)
class WebLimits:
    """Bounds on what clients can make the server hold."""

    max_sse: int = 100  # concurrent SSE connections; 503 beyond
    keepalive: float = 15.0  # seconds between comments on an idle SSE connection
    write_timeout: float = 10.0  # a client that takes longer to accept one write is dropped
    block_ms: int = 2000  # one blocking XREAD (below the Redis client's socket timeout)
    batch: int = 200  # entries per read


class WebState:
    """What the handlers share (kept in the app under one key)."""

    def __init__(self, settings: Settings, store: Store, limits: WebLimits) -> None:
        self.settings = settings
        self.store = store
        self.limits = limits
        self.tokens = TokenFile(settings.web_tokens_file)
        self.sse_open = 0
        self.closing = False  # set on shutdown: event streams end at their next turn


STATE: Final = web.AppKey("poller_web_state", WebState)


def _json(doc: Any, status: int = 200, **kw: Any) -> web.Response:
    return web.json_response(doc, status=status, dumps=lambda d: json.dumps(d), **kw)


def _error(status: int, message: str, **headers: str) -> web.Response:
    return _json({"error": message}, status=status, headers=headers or None)


def _unauthorized() -> web.Response:
    return _error(
        401, "a bearer token is required", **{"WWW-Authenticate": 'Bearer realm="poller"'}
    )


def _allowed(request: web.Request, *, write: bool) -> bool:
    state = request.app[STATE]
    if not write and state.settings.web_public_read:
        return True
    return state.tokens.accepts(bearer(request.headers.get("Authorization")))


@web.middleware
async def _guard(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Access control for ``/api``; Redis trouble as 503; no request gets a traceback."""
    if request.path.startswith("/api/"):
        write = request.method not in ("GET", "HEAD", "OPTIONS")
        if not _allowed(request, write=write):
            return _unauthorized()
    try:
        return await handler(request)
    except RedisError as exc:
        log.warning("web_redis_error", path=request.path, error=str(exc)[:200])
        return _error(503, "Redis is unavailable", **{"Retry-After": "2"})


async def page(request: web.Request) -> web.Response:
    return web.Response(
        text=PAGE,
        content_type="text/html",
        charset="utf-8",
        headers={
            "Content-Security-Policy": "default-src 'none'; script-src 'unsafe-inline'; "
            "style-src 'unsafe-inline'; connect-src 'self'; img-src 'self' data:; "
            "base-uri 'none'; form-action 'none'; frame-ancestors 'none'",
            "Cache-Control": "no-store",
            "Referrer-Policy": "no-referrer",
        },
    )


def _ids(request: web.Request) -> tuple[str, str]:
    state = request.app[STATE]
    job_id = request.match_info["job_id"]
    project = request.query.get("project_id") or state.settings.project_id
    if not is_valid_id(job_id):
        raise web.HTTPBadRequest(text=json.dumps({"error": "invalid job_id"}),
                                 content_type="application/json")  # fmt: skip
    if not (project and is_valid_id(project)):
        raise web.HTTPBadRequest(
            text=json.dumps({"error": "invalid or missing project_id (no POLLER_PROJECT_ID)"}),
            content_type="application/json",
        )
    return project, job_id


async def job_status(request: web.Request) -> web.Response:
    project, job_id = _ids(request)
    try:
        view = await request.app[STATE].store.get_job(project, job_id)
    except CorruptJobState as exc:
        return _error(500, f"stored state unreadable: {exc}"[:300])
    if view is None:
        return _error(404, f"job {job_id} (project {project}) is not tracked nor recently finished")
    return _json(status_document(view))


async def overview(request: web.Request) -> web.Response:
    return _json(await reads.overview(request.app[STATE].store))


async def enqueue(request: web.Request) -> web.Response:
    state = request.app[STATE]
    if (request.content_length or 0) > MAX_BODY:
        return _error(413, f"body larger than {MAX_BODY} bytes")
    raw = await request.read()  # the app's client_max_size answers 413 beyond MAX_BODY too
    parsed = parse_message(raw, state.settings.project_id)
    if isinstance(parsed, Invalid):
        return _error(400, parsed.reason)
    await state.store.enqueue(raw)
    url = f"/api/jobs/{parsed.job_id}"
    if parsed.project_id != state.settings.project_id:
        url += f"?project_id={parsed.project_id}"
    log.info("web_enqueued", job_id=parsed.job_id, project_id=parsed.project_id)
    body = {"job_id": parsed.job_id, "project_id": parsed.project_id, "url": url}
    return _json(body, status=202, headers={"Location": url})


# --- Server-Sent Events -------------------------------------------------------------------


def _sse_frame(entry_id: str, kind: str, fields: dict[str, str]) -> bytes:
    kind = "".join(c for c in kind if c not in "\r\n") or "message"
    data = json.dumps(fields, ensure_ascii=False, separators=(",", ":"))
    return f"id: {entry_id}\nevent: {kind}\ndata: {data}\n\n".encode()


def _text(value: Any) -> str:
    return value.decode("utf-8", "replace") if isinstance(value, bytes) else str(value)


_SHARD_POSITION: Final = r"\d{1,4}=\d{1,20}-\d{1,20}"
_POSITIONS: Final = re.compile(rf"^{_SHARD_POSITION}(?:,{_SHARD_POSITION})*$")


def resume_positions(value: str, streams: tuple[str, ...]) -> dict[str, str] | None:
    """The positions a ``Last-Event-ID`` names in ``streams`` (shard ``k``'s global stream is
    ``streams[k]``), or ``None`` when it names none.

    Either a plain entry ID (what one shard sends): after it in every stream; or what several
    shards send, ``k=ID`` per shard joined by ``,`` (see :func:`resume_id`): after each ID in
    shard ``k``'s stream, from the beginning in a shard it leaves out.
    """
    if _STREAM_ID.match(value):
        return dict.fromkeys(streams, value)
    if len(value) > 48 * len(streams) or not _POSITIONS.match(value):
        return None
    positions = dict.fromkeys(streams, "0-0")
    named: set[int] = set()
    for part in value.split(","):
        shard, _, entry_id = part.partition("=")
        k = int(shard)
        if k >= len(streams) or k in named:
            return None
        named.add(k)
        positions[streams[k]] = entry_id
    return positions


def resume_id(positions: dict[str, str], streams: tuple[str, ...]) -> str:
    """The SSE ``id`` of a position in ``streams``: with one stream its entry ID, as ever;
    with several, ``k=ID`` per shard in shard order, joined by ``,`` (e.g.
    ``0=1764201600123-0,1=1764201600007-1,2=0-0``)."""
    if len(streams) == 1:
        return positions[streams[0]]
    return ",".join(f"{k}={positions[s]}" for k, s in enumerate(streams))


def _sse_start(
    request: web.Request, streams: tuple[str, ...], *, per_job: bool
) -> str | dict[str, str] | web.Response:
    """Where an event stream starts: after ``Last-Event-ID`` when the client sends one, else
    at the job's first event (per job) or now; a 400 response when that header is unusable."""
    resume = request.headers.get("Last-Event-ID", "").strip()
    positions = resume_positions(resume, streams) if resume else None
    if resume and (positions is None or (per_job and not _STREAM_ID.match(resume))):
        what = "a stream entry ID such as 1700000000000-0"
        if len(streams) > 1:
            what += ", or k=ID per shard joined by commas, as sent"
        return _error(400, f"Last-Event-ID: expected {what}")
    return positions if positions is not None else ("0-0" if per_job else "$")


async def _send_events(
    response: web.StreamResponse,
    state: WebState,
    cursor: StreamCursor,
    streams: tuple[str, ...],
    *,
    per_job: bool,
) -> None:
    """One SSE frame per entry ``cursor`` reads, keep-alive comments while it is quiet, until
    the server shuts down or (per job) the job's final event has been sent."""
    limits = state.limits
    redis = state.store.redis

    async def send(chunk: bytes) -> None:
        # a client that cannot take one chunk within the timeout is dropped (it resumes
        # with Last-Event-ID); aiohttp's own buffer is bounded, so memory is too
        await asyncio.wait_for(response.write(chunk), limits.write_timeout)

    async def ended() -> bool:
        return per_job and await _ended_at(redis, streams[0], cursor.positions[streams[0]])

    await send(b"retry: 2000\n: connected\n\n")
    loop = asyncio.get_running_loop()
    quiet_since = loop.time()
    while not (state.closing or await ended()):
        entries = await cursor.fetch()
        if not entries:
            entries = await cursor.wait(limits.block_ms)
        for entry in entries:
            fields = {_text(k): _text(v) for k, v in entry.raw.items()}
            cursor.advance(entry)
            frame_id = resume_id(cursor.positions, streams)
            await send(_sse_frame(frame_id, fields.get("event", "message"), fields))
            quiet_since = loop.time()
        if loop.time() - quiet_since >= limits.keepalive:
            await send(b": keep-alive\n\n")
            quiet_since = loop.time()


async def _stream(
    request: web.Request, streams: tuple[str, ...], *, per_job: bool
) -> web.StreamResponse:
    state = request.app[STATE]
    limits = state.limits
    start = _sse_start(request, streams, per_job=per_job)
    if isinstance(start, web.Response):
        return start
    if state.sse_open >= limits.max_sse:
        return _error(503, "too many event streams open; retry later", **{"Retry-After": "5"})
    cursor = await StreamCursor.start_at(state.store.redis, streams, start, count=limits.batch)
    state.sse_open += 1
    try:
        response = web.StreamResponse(
            headers={
                "Content-Type": "text/event-stream; charset=utf-8",
                "Cache-Control": "no-store",
                "X-Accel-Buffering": "no",
            }
        )
        await response.prepare(request)
        await _send_events(response, state, cursor, streams, per_job=per_job)
        await response.write_eof()
    except (ConnectionResetError, TimeoutError, RedisError) as exc:
        # a client too slow or gone, or Redis away mid-stream: end this response; the
        # client reconnects with Last-Event-ID and loses nothing
        log.info("web_sse_dropped", path=request.path, reason=type(exc).__name__)
        if request.transport is not None:
            request.transport.close()
    finally:
        state.sse_open -= 1
    return response


async def _ended_at(redis: Any, stream: str, last: str) -> bool:
    """Whether ``last`` is the newest entry of a job's stream and that job's final event (a
    final event with entries after it was followed by a forced re-tracking: go on)."""
    if last == "0-0":
        return False
    newest = await redis.xrevrange(stream, count=1)
    if not newest or _text(newest[0][0]) != last:
        return False
    try:
        return JobEvent.from_entry(newest[0][0], newest[0][1]).is_final
    except (KeyError, ValueError):
        return False


async def job_events(request: web.Request) -> web.StreamResponse:
    _, job_id = _ids(request)
    stream = request.app[STATE].store.keys.job_events(job_id)
    return await _stream(request, (stream,), per_job=True)


async def all_events(request: web.Request) -> web.StreamResponse:
    """Every job's events from now on (or after ``Last-Event-ID``), over every shard.

    With one shard each frame's ``id`` is the entry ID.  With several it is the position in
    every shard's stream, ``k=ID`` per shard ``k`` joined by ``,``: resuming with it loses and
    repeats nothing in any shard.  A plain entry ID is accepted too: after it in every shard.
    """
    return await _stream(request, request.app[STATE].store.keys.event_streams, per_job=False)


def build_app(settings: Settings, store: Store, limits: WebLimits | None = None) -> web.Application:
    """The application; the caller owns ``store`` (and closes its Redis client)."""
    app = web.Application(middlewares=[_guard], client_max_size=MAX_BODY)
    app[STATE] = WebState(settings, store, limits or WebLimits())

    async def closing(app: web.Application) -> None:
        app[STATE].closing = True

    app.on_shutdown.append(closing)
    app.router.add_get("/", page)
    app.router.add_get("/api/overview", overview)
    app.router.add_post("/api/jobs", enqueue)
    app.router.add_get("/api/jobs/{job_id}", job_status)
    app.router.add_get("/api/jobs/{job_id}/events", job_events)
    app.router.add_get("/api/events", all_events)
    return app
