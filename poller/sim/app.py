"""The emulated ``GET /v3/{project_id}/cas/jobs/{job_id}`` and the application factory.

The hot path is: count, maybe inject a fault, authenticate, check the IDs and query, look the job
up and return the body cached for its current state version and page.
"""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import Callable, Mapping
from typing import Final

from aiohttp import web

from poller.ids import ID_PATTERN
from poller.sim.admin import add_admin_routes
from poller.sim.aksk import read_body
from poller.sim.auth import authenticate
from poller.sim.config import SimConfig
from poller.sim.faults import (
    DEEP_JSON_DEPTH,
    FaultConfig,
    FaultKind,
    choose_fault,
    choose_latency,
)
from poller.sim.iam import add_iam_routes
from poller.sim.metadata import add_metadata
from poller.sim.model import Visibility, visibility
from poller.sim.render import error_body
from poller.sim.state import STATE, PageKey, SimState

JOB_DETAILS_PATH: Final = "/v3/{project_id}/cas/jobs/{job_id}"
BAD_REQUEST: Final = "SVCSTG.00100400"
FORBIDDEN: Final = "SVCSTG.00100403"
NOT_FOUND: Final = "SVCSTG.00100404"
THROTTLED: Final = "APIG.0308"
UNAVAILABLE: Final = "APIG.0202"
THROTTLED_MESSAGE: Final = (
    "The throttling threshold has been reached: "
    "policy user over ratelimit, limit:100, time:1 second"
)
HTML_500: Final = (
    "<html>\r\n<head><title>500 Internal Server Error</title></head>\r\n<body>\r\n"
    "<center><h1>500 Internal Server Error</h1></center>\r\n<hr><center>nginx</center>\r\n"
    "</body>\r\n</html>\r\n"
)
DEEP_JSON_BODY: Final = b"[" * DEEP_JSON_DEPTH + b"]" * DEEP_JSON_DEPTH
REQUEST_ID_HEADER: Final = "X-Request-Id"
_TRUE_FALSE: Final = {"true": True, "false": False}
_WAS_RESET: Final = web.RequestKey("poller_sim_reset", bool)


def create_app(
    config: SimConfig,
    *,
    clock: Callable[[], float] | None = None,
    wall_clock: Callable[[], float] | None = None,
) -> web.Application:
    """An aiohttp application emulating ServiceStage's job-details API plus the ``/_sim`` admin API
    (and IAM's ``POST /v3/auth/tokens`` when ``config`` has IAM users, the metadata service's
    ``GET /openstack/latest/securitykey`` when it sets ``temporary_credentials_ttl``).

    ``clock`` returns epoch seconds for job timelines (default :func:`time.time`); the configured
    jobs are created at the moment this function runs.  ``wall_clock`` (default
    :func:`time.time`) is the time credentials are judged by: ``X-Sdk-Date``, AK locks, IAM
    token expiry.
    """
    app = web.Application()
    app[STATE] = SimState(config, clock or time.time, wall_clock=wall_clock or time.time)
    app.router.add_get(JOB_DETAILS_PATH, get_job_details)
    if config.iam_users:
        add_iam_routes(app.router)
    if config.temporary_credentials_ttl is not None:
        add_metadata(app)
    add_admin_routes(app.router)
    app.on_response_prepare.append(_ensure_request_id)
    return app


def new_request_id() -> str:
    """A fresh 32-hex-digit request ID, like the gateway's."""
    return os.urandom(16).hex()


async def get_job_details(request: web.Request) -> web.StreamResponse:
    """Answer one job-details request, or the fault drawn for it."""
    state = request.app[STATE]
    arrived = state.wall_clock()
    try:
        response = await _details_or_fault(request, state, arrived)
    except BaseException:
        state.requests.record(arrived, 0)
        raise
    state.requests.record(arrived, 0 if request.get(_WAS_RESET) else response.status)
    return response


async def _details_or_fault(
    request: web.Request, state: SimState, arrived: float
) -> web.StreamResponse:
    request_id = new_request_id()
    stats = state.stats
    stats.requests += 1
    retry_after = state.throttled(arrived)
    if retry_after is not None:
        stats.by_fault[FaultKind.THROTTLED_429.value] += 1
        stats.by_status[429] += 1
        return _throttled(request_id, retry_after)
    faults = state.faults
    if faults.latency > 0 or faults.latency_jitter > 0:
        stats.by_fault["latency"] += 1
        await asyncio.sleep(choose_latency(faults, state.rng))
    fault = choose_fault(state.fault_table, state.rng)
    if fault is not None:
        stats.by_fault[fault.value] += 1
        if fault is FaultKind.RESET:
            return _reset(request)
        if fault is not FaultKind.TRUNCATED:
            response = _fault_response(fault, faults, request_id)
            stats.by_status[response.status] += 1
            return response
    await read_body(request)
    status, body = _answer(request, state, request_id)
    if fault is FaultKind.TRUNCATED:
        body = body[: len(body) // 2]
    stats.by_status[status] += 1
    return web.Response(
        status=status,
        body=body,
        content_type="application/json",
        charset="utf-8",
        headers={REQUEST_ID_HEADER: request_id},
    )


def _answer(request: web.Request, state: SimState, request_id: str) -> tuple[int, bytes]:
    """The true answer: status and JSON body."""
    config = state.config
    verdict = authenticate(state.authenticators, request)
    if not verdict.accepted:
        message = f"Incorrect IAM authentication information: {verdict.detail}"
        return 401, error_body(verdict.error_code, message, request_id)
    project_id = request.match_info["project_id"]
    job_id = request.match_info["job_id"]
    for name, value in (("project_id", project_id), ("job_id", job_id)):
        if ID_PATTERN.fullmatch(value) is None:
            return 400, error_body(BAD_REQUEST, f"Invalid parameter {name}: {value!r}")
    page = _page(request.rel_url.query, config)
    if isinstance(page, str):
        return 400, error_body(BAD_REQUEST, page)
    job = state.jobs.get(job_id)
    if job is None or job.project_id != project_id:
        return 404, error_body(NOT_FOUND, f"Job {job_id} does not exist")
    state.stats.by_job[job_id] += 1
    elapsed = state.elapsed(job)
    seen = visibility(job.spec, elapsed)
    if seen is Visibility.FORBIDDEN:
        return 403, error_body(FORBIDDEN, f"No permission to access job {job_id}")
    if seen is not Visibility.VISIBLE:
        return 404, error_body(NOT_FOUND, f"Job {job_id} does not exist")
    return 200, job.details(elapsed, page)


def _page(query: Mapping[str, str], config: SimConfig) -> PageKey | str:
    """The page asked for, with ``limit`` capped; a message when a parameter is invalid."""
    limit = _count(query.get("limit"))
    offset = _count(query.get("offset"))
    descending = _TRUE_FALSE.get(query.get("desc", "false").lower())
    if limit is None:
        return f"Invalid parameter limit: {query.get('limit')!r} is not a non-negative integer"
    if offset is None:
        return f"Invalid parameter offset: {query.get('offset')!r} is not a non-negative integer"
    if descending is None:
        return f"Invalid parameter desc: {query.get('desc')!r} is not true or false"
    cap = config.page_cap
    return offset, (min(limit, cap) if limit else cap), descending, config.upper_case_keys


def _count(raw: str | None) -> int | None:
    """A non-negative decimal integer (absent: 0), ``None`` when malformed."""
    if raw is None:
        return 0
    if not (raw.isascii() and raw.isdigit()) or len(raw) > 18:
        return None
    return int(raw)


def _fault_response(kind: FaultKind, faults: FaultConfig, request_id: str) -> web.Response:
    headers = {REQUEST_ID_HEADER: request_id}
    if kind is FaultKind.HTML_500:
        return web.Response(status=500, text=HTML_500, content_type="text/html", headers=headers)
    if kind is FaultKind.EMPTY_502:
        return web.Response(status=502, headers=headers)
    if kind is FaultKind.DEEP_JSON:
        return web.Response(
            status=200, body=DEEP_JSON_BODY, content_type="application/json", headers=headers
        )
    if kind is FaultKind.THROTTLED_429:
        return _throttled(request_id, faults.retry_after)
    headers["Retry-After"] = str(faults.retry_after)
    body = error_body(UNAVAILABLE, "Backend unavailable", request_id)
    return web.Response(status=503, body=body, content_type="application/json", headers=headers)


def _throttled(request_id: str, retry_after: int) -> web.Response:
    """The gateway's 429 ``APIG.0308``."""
    return web.Response(
        status=429,
        body=error_body(THROTTLED, THROTTLED_MESSAGE, request_id),
        content_type="application/json",
        headers={REQUEST_ID_HEADER: request_id, "Retry-After": str(retry_after)},
    )


def _reset(request: web.Request) -> web.Response:
    """Abort the connection; aiohttp then fails quietly to send the returned response."""
    request[_WAS_RESET] = True
    transport = request.transport
    if transport is not None:
        transport.abort()
    return web.Response(status=500)


async def _ensure_request_id(request: web.Request, response: web.StreamResponse) -> None:
    if REQUEST_ID_HEADER not in response.headers:
        response.headers[REQUEST_ID_HEADER] = new_request_id()
